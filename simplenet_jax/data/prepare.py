"""Command line: build a deblurring data set from its published layout with its TFDS builder (`catalogue.build`).

    python -m simplenet_jax.data.prepare --dataset gopro --source data/GOPRO_Large --out data/GOPRO_Large_tfds

It is what `tfds build gopro/blur --imports simplenet_jax.data.builders --manual_dir … --data_dir …` does,
plus a check that a finished build came from the same files. A finished build is reused; an interrupted
one leaves only TFDS's `incomplete.*` folder and is redone from the start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from simplenet_jax import extras

extras.require("train", "python -m simplenet_jax.data.prepare", "tensorflow_datasets", "array_record")
from simplenet_jax.data import builders  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data import catalogue  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data import layouts  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data.images import DatasetError  # pylint: disable=g-import-not-at-top,wrong-import-position


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m simplenet_jax.data.prepare",
      description="Build a deblurring data set (SPEC §4) as TFDS ArrayRecord files; a finished build is reused.")
  parser.add_argument("--dataset", required=True, choices=layouts.DATASETS,
                      help="layout of --source: GoPro, RealBlur-J, or any folder in the GoPro layout")
  parser.add_argument("--source", required=True, help="the data set root (GOPRO_Large, the RealBlur folder, …)")
  parser.add_argument("--out", help="TFDS data folder to write (config.data.tfds_dir); default: <source>_tfds")
  parser.add_argument("--blur-kind", default="blur", choices=layouts.BLUR_KINDS,
                      help="GoPro's linear-light `blur` (default) or `blur_gamma`")
  parser.add_argument("--storage", default="tiles", choices=builders.STORAGES,
                      help="records: 256² tiles (default), 512² training sub-images, or whole frames")
  parser.add_argument("--overwrite", action="store_true", help="build again over a finished build")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  try:
    builder, done = catalogue.build(args.dataset, args.source, args.out, blur_kind=args.blur_kind,
                                    storage=args.storage, overwrite=args.overwrite)
  except DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  if done:
    print(f"{builder.data_dir} already holds this build; nothing to do.")
  for split, info in builder.info.splits.items():
    frames = len(builder.info.metadata["splits"][split]["frames"])
    print(f"{split}: {frames} pairs in {info.num_examples} records in {builder.data_dir}")
  return 0


if __name__ == "__main__":
  logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, force=True)
  sys.exit(main())
