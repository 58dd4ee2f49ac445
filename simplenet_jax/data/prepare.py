"""Command line: build a deblurring data set from its published layout with its TFDS builder (`builders`).

    python -m simplenet_jax.data.prepare --dataset gopro --source data/GOPRO_Large --out data/GOPRO_Large_tfds

It is what `tfds build gopro/blur --imports simplenet_jax.data.builders --manual_dir … --data_dir …` does,
plus a check that a finished build came from the same files. A finished build is reused; an interrupted
one leaves only TFDS's `incomplete.*` folder and is redone from the start.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import tensorflow_datasets as tfds

from simplenet_jax.data import builders
from simplenet_jax.data import layouts
from simplenet_jax.data import pipeline
from simplenet_jax.data.images import DatasetError


def build(dataset: str, source: str | os.PathLike, out: str | os.PathLike | None = None, *, blur_kind: str = "blur",
          storage: str = "tiles", overwrite: bool = False) -> tuple[tfds.core.DatasetBuilder, bool]:
  """Builds (or finds built) the data set in `out` (default `<source>_tfds`); returns its builder and whether
  it was already built. Every pair is checked before anything is written (one `DatasetError` sentence)."""
  source = os.path.abspath(os.fspath(source))
  out = os.fspath(out) if out else pipeline.default_tfds_dir(source)
  name = pipeline.tfds_name(dataset, blur_kind, storage)
  splits = builders.list_splits(dataset, source, blur_kind)  # a missing folder or file: its sentence, now
  builder = tfds.builder(name, data_dir=out)
  if builder.is_prepared() and not overwrite:
    built = builder.info.metadata["splits"]
    for split, pairs in splits.items():
      if split not in built or builders.fingerprint(pairs) != built[split]["fingerprint"]:
        raise DatasetError(f"{out} already holds {name} built from other files than those in {source}; pass "
                           "--overwrite to build it again, or choose another --out.")
    return builder, True
  modes = tfds.download.GenerateMode
  mode = modes.FORCE_REDOWNLOAD if overwrite else modes.REUSE_DATASET_IF_EXISTS
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=source, download_mode=mode))
  return builder, False


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
    builder, done = build(args.dataset, args.source, args.out, blur_kind=args.blur_kind, storage=args.storage,
                          overwrite=args.overwrite)
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
