"""Command line: synthesize a GoPro-layout deblurring data set from sharp photos (SPEC §4, "Demo data").

    python -m simplenet_jax.data.synthesize --out data/demo

writes `DIR/{train,test}/<scene>/{blur,sharp}/NNNNNN.png` and `DIR/meta.json` (`synthesis.dataset`); the same
command gives byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import pathlib
import sys
import time
from collections.abc import Sequence

from simplenet_jax import extras

extras.require("train", "python -m simplenet_jax.data.synthesize", "skimage")  # the camera-shake homographies
from simplenet_jax.data import images  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data.synthesis import dataset  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data.synthesis import sources  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.data.synthesis.camera_shake import BlurSettings  # pylint: disable=wrong-import-position

MIN_SIDE, MAX_SIDE = 16, 4096  # pixels of a pair's side; 4096² pairs already need GBs per worker
MAX_BLUR = 200.0  # pixels of camera path; GoPro's longest are well under 100


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m simplenet_jax.data.synthesize",
      description="Synthesize a GoPro-layout deblurring data set from sharp photos (SPEC §4, Demo data).")
  parser.add_argument("--out", required=True, help="folder to create, e.g. data/demo")
  parser.add_argument("--photos", default=None,
                      help="folder of your own sharp jpg/png photos (default: the RGB photos in skimage.data)")
  parser.add_argument("--train-pairs", type=int, default=dataset.DEFAULT_TRAIN_PAIRS, help="pairs in the train split")
  parser.add_argument("--test-pairs", type=int, default=dataset.DEFAULT_TEST_PAIRS, help="pairs in the test split")
  parser.add_argument("--size", type=int, nargs=2, default=list(dataset.DEFAULT_SIZE), metavar=("H", "W"),
                      help="height and width of every train pair")
  parser.add_argument("--test-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                      help="height and width of every test pair (default: whole photos, scaled down to "
                           f"{sources.MAX_TEST_SIDE} px at most)")
  parser.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
  parser.add_argument("--max-blur", type=float, default=None,
                      help=f"longest camera path in pixels (default: {dataset.TRAIN_BLUR.max_length:g} for train "
                      f"pairs, {BlurSettings.max_length:g} for test pairs)")
  parser.add_argument("--noise", type=float, default=None,
                      help=f"largest sensor-noise std at white, in linear light, 0 for none (default "
                      f"{BlurSettings.noise:g})")
  parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
  parser.add_argument("--independent", action="store_true",
                      help="write the independent test set instead (synthesis.independent: 8 photos from other "
                      "wheels, blurred by motion kernels in three bands; only --out applies); never train on it")
  args = parser.parse_args(argv)
  if args.independent:
    given = [f for f in ("--photos", "--train-pairs", "--test-pairs", "--size", "--test-size", "--seed",
                         "--max-blur", "--noise", "--workers") if any(a.split("=")[0] == f for a in (argv or sys.argv[1:]))]
    if given:
      parser.error(f"--independent takes only --out; it has its own fixed photos, blur and seed, not {', '.join(given)}.")
  # Checked here, in one sentence each: out of range, they would fail deep in a worker or exhaust memory.
  sizes = [("--size", args.size)] + ([("--test-size", args.test_size)] if args.test_size else [])
  for flag, (height, width) in sizes:
    if not (MIN_SIDE <= min(height, width) and max(height, width) <= MAX_SIDE):
      parser.error(f"{flag} takes a height and a width from {MIN_SIDE} to {MAX_SIDE} pixels, got {height} {width}.")
  checks = [("--train-pairs", args.train_pairs, 1, None), ("--test-pairs", args.test_pairs, 1, None),
            ("--max-blur", args.max_blur, BlurSettings.min_length, MAX_BLUR), ("--noise", args.noise, 0.0, 0.5),
            ("--workers", args.workers, 1, None)]
  for flag, value, low, high in checks:
    if value is not None and (value < low or (high is not None and value > high)):
      bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
      parser.error(f"{flag} must be {bound}, got {value:g}.")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = _parse_args(argv)
  if args.independent:
    return _independent(args.out)
  if args.photos is None:
    extras.require("demo", "python -m simplenet_jax.data.synthesize without --photos (the built-in photos)",
                   "skimage", "sklearn", "matplotlib")
  start = time.perf_counter()
  already_built = (pathlib.Path(args.out) / dataset.META_FILE).is_file()
  try:
    meta = dataset.synthesize_dataset(
        args.out, photos_dir=args.photos, train_pairs=args.train_pairs, test_pairs=args.test_pairs,
        size=tuple(args.size), test_size=tuple(args.test_size) if args.test_size else None, seed=args.seed,
        workers=args.workers, settings=_given(dataset.TRAIN_BLUR, args), test_settings=_given(BlurSettings(), args))
  except images.DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  except OSError as err:  # an --out that cannot be made or written, or a disk that filled up
    print(f"error: cannot write the data set to {args.out} ({err.strerror or err}); pass --out a writable "
          "folder with room for it.", file=sys.stderr)
    return 1
  seconds = time.perf_counter() - start
  if meta["recipe"]["photos_too_small"]:
    print(f"Skipped {meta['recipe']['photos_too_small']} photos smaller than {args.size[1]}×{args.size[0]}.")
  for split, stats in meta["summary"].items():
    print(f"{split}: {stats['count']} pairs, input PSNR min {stats['min']:.2f} / mean {stats['mean']:.2f} / "
          f"median {stats['median']:.2f} / max {stats['max']:.2f} dB")
  if already_built:
    print(f"{args.out} already holds this data set; nothing to do.")
  else:
    print(f"Wrote the data set to {args.out} in {seconds:.1f} s.")
  return 0


def _given(settings: BlurSettings, args: argparse.Namespace) -> BlurSettings:
  """`settings` with what --max-blur and --noise give."""
  given = {"max_length": args.max_blur, "noise": args.noise}
  return dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})


def _independent(out: str) -> int:
  from simplenet_jax.data.synthesis import independent  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  already_built = (pathlib.Path(out) / independent.META_FILE).is_file()
  try:
    meta = independent.write_dataset(out)
  except images.DatasetError as err:
    print(f"error: {err}", file=sys.stderr)
    return 1
  except OSError as err:
    print(f"error: cannot write the data set to {out} ({err.strerror or err}); pass --out a writable folder with "
          "room for it.", file=sys.stderr)
    return 1
  for band, stats in meta["summary"].items():
    print(f"test, {band}: {stats['count']} pairs, mean input PSNR {stats['mean_input_psnr_db']:.2f} dB")
  print(f"{out} already holds this data set; nothing to do." if already_built else
        f"Wrote the independent test set to {out} in {time.perf_counter() - start:.1f} s.")
  return 0


if __name__ == "__main__":
  logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING, force=True)
  sys.exit(main())
