"""Command line: turn a data set in its published layout into ArrayRecord shards (see `shards`).

    python -m simplenet_jax.data.prepare --dataset gopro --source data/GOPRO_Large --out data/gopro_shards
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from simplenet_jax.data import layouts
from simplenet_jax.data import shards
from simplenet_jax.data.images import DatasetError


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m simplenet_jax.data.prepare",
      description="Write ArrayRecord shards of a deblurring data set (SPEC §4); rerunning finishes an "
                  "interrupted run and does nothing on finished shards.")
  parser.add_argument("--dataset", required=True, choices=layouts.DATASETS,
                      help="layout of --source: GoPro, RealBlur-J, or any folder in the GoPro layout")
  parser.add_argument("--source", required=True, help="the data set root (GOPRO_Large, the RealBlur folder, …)")
  parser.add_argument("--out", required=True, help="folder for the shards and manifest.json")
  parser.add_argument("--splits", nargs="+", default=list(layouts.SPLITS), choices=layouts.SPLITS,
                      help="splits to write")
  parser.add_argument("--blur-kind", default="blur", choices=layouts.BLUR_KINDS,
                      help="GoPro's linear-light `blur` (default) or `blur_gamma`")
  parser.add_argument("--crop-size", type=int, default=256,
                      help="training crop; images smaller than this on either side are rejected")
  parser.add_argument("--shard-size-mb", type=float, default=shards.DEFAULT_SHARD_MB,
                      help="approximate size of each shard file")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    result = shards.prepare_shards(args.dataset, args.source, args.out, splits=args.splits,
                                   blur_kind=args.blur_kind, crop_size=args.crop_size,
                                   shard_mb=args.shard_size_mb)
  except DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  if result.already_done:
    print(f"{args.out} already holds these shards; nothing to do.")
  for split, plan in result.manifest["splits"].items():
    print(f"{split}: {plan['num_pairs']} pairs in {len(plan['shards'])} shards in {args.out}")
  return 0


if __name__ == "__main__":
  logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, force=True)
  sys.exit(main())
