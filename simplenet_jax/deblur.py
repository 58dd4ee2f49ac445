"""Deblur your own photos with a trained workdir.

    python -m simplenet_jax.deblur --workdir DIR INPUT... --out DIR [--tile SIZE --overlap PX] [--ensemble]
    simplenet-deblur --workdir DIR INPUT... --out DIR            (the same, as a console script)

INPUT: files, folders (their jpg/png/webp files) or glob patterns. Each result is written losslessly as
OUT/<name>.png: EXIF orientation is applied first, 16-bit PNGs stay 16-bit, an alpha channel is carried over
untouched. Large photos are processed in overlapping tiles (automatically above --max-pixels), so memory
stays bounded at any size. Existing outputs are kept unless --overwrite. A photo that cannot be read is
reported at the end; the others are still processed.
"""

from __future__ import annotations

import argparse
import logging
import sys

from etils import epath

from simplenet_jax import tiling


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="simplenet-deblur", description=__doc__.split("\n")[0])
  parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--out", required=True, help="folder for the deblurred PNGs")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  parser.add_argument("--tile", type=int, default=None,
                      help=f"tile size in pixels; default: {tiling.DEFAULT_TILE} for photos over --max-pixels, else "
                      "the whole photo; 0 never tiles")
  parser.add_argument("--overlap", type=int, default=tiling.DEFAULT_OVERLAP,
                      help="overlap of neighbouring tiles (blended)")
  parser.add_argument("--max-pixels", type=int, default=tiling.DEFAULT_MAX_PIXELS,
                      help="photos with more pixels are tiled when --tile is not given")
  parser.add_argument("--ensemble", action="store_true", help="average over 8 flips/rotations (8× slower)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  args = parser.parse_args(argv)
  # JAX (and with it the network) is imported only now: --help and argument mistakes answer at once.
  from simplenet_jax import inference  # pylint: disable=g-import-not-at-top
  from simplenet_jax import paths  # pylint: disable=g-import-not-at-top
  from simplenet_jax import photos  # pylint: disable=g-import-not-at-top
  logging.getLogger("absl").setLevel(logging.ERROR)

  out = paths.user_path(args.out)  # a local folder or a bucket URL
  try:
    paths.check_writable(out, "output folder", "--out")
  except ValueError as error:
    return _fail(str(error))
  files, unmatched = photos.find_photos(args.inputs)
  if not files:
    return _fail(f"no jpg/png/webp images in {', '.join(args.inputs)}.")
  clashes = _duplicates([photos.output_path(out, f) for f in files])
  if clashes:
    return _fail(f"several inputs would be written to the same file {clashes[0]}; deblur them into "
                 "separate --out folders.")
  try:
    tiling.check_tiling(tiling.DEFAULT_TILE if args.tile is None else args.tile, args.overlap)
    _, network, step = inference.load_model(args.workdir, args.checkpoint)
  except ValueError as error:
    return _fail(str(error))
  run = inference.deblur_photos(network, files, out, tile=args.tile, overlap=args.overlap,
                                max_pixels=args.max_pixels, ensemble=args.ensemble, overwrite=args.overwrite)
  failures = [(pattern, "matched no jpg/png/webp file") for pattern in unmatched] + run.failures
  print(f"deblurred {run.done} photo(s) into {out} with the checkpoint of step {step}"
        + (f"; kept {run.skipped} existing output(s) (--overwrite replaces them)" if run.skipped else ""))
  if failures:
    print(f"{len(failures)} input(s) failed:", file=sys.stderr)
    for name, reason in failures:
      print(f"  {name}: {reason}", file=sys.stderr)
    return 1
  return 0


def _duplicates(targets: list[epath.Path]) -> list[epath.Path]:
  seen, clashes = set(), []
  for path in targets:
    if path in seen:
      clashes.append(path)
    seen.add(path)
  return clashes


def _fail(message: str) -> int:
  print(f"error: {message}", file=sys.stderr)
  return 1


def run() -> None:
  """Console-script entry point (`simplenet-deblur`)."""
  sys.exit(main())


if __name__ == "__main__":
  run()
