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
import dataclasses
import glob
import logging
import pathlib
import sys

import numpy as np
import png
import tqdm
from etils import epath
from PIL import Image
from PIL import ImageOps

from simplenet_jax import inference
from simplenet_jax import paths

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
DEFAULT_MAX_PIXELS = 1_500_000  # above this, tile (whole-image inference of 12 MP needs ~tens of GB)
DEFAULT_TILE = 512


@dataclasses.dataclass
class Photo:
  rgb: np.ndarray  # float32 [H, W, 3] in [0, 1]
  alpha: np.ndarray | None  # the original alpha channel, untouched
  bits: int  # 8 or 16


def auto_tile(pixels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
  """The tile size a photo of `pixels` gets when none is asked for: DEFAULT_TILE above `max_pixels`, else 0."""
  return DEFAULT_TILE if pixels > max_pixels else 0


def collect_inputs(patterns: list[str]) -> tuple[list[pathlib.Path], list[str]]:
  """(image files, patterns that matched nothing), in a stable order."""
  files, unmatched = [], []
  for pattern in patterns:
    path = pathlib.Path(pattern)
    if path.is_dir():
      found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
    elif path.is_file():
      found = [path]
    else:
      found = sorted(pathlib.Path(p) for p in glob.glob(pattern) if pathlib.Path(p).suffix.lower() in SUFFIXES)
    if not found:
      unmatched.append(pattern)
    files += [f for f in found if f not in files]
  return files, unmatched


def read_photo(path: pathlib.Path) -> Photo:
  """Reads a photo as float RGB (+ alpha), EXIF-rotated; 16-bit PNGs through pypng (Pillow truncates them)."""
  if path.suffix.lower() == ".png":
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    if info["bitdepth"] == 16:
      pixels = np.vstack([np.asarray(row, np.uint16) for row in rows]).reshape(height, width, info["planes"])
      return _split_channels(pixels.astype(np.float32) / 65535, 16)
  with Image.open(path) as image:
    image = ImageOps.exif_transpose(image)
    if image.mode not in ("RGB", "RGBA"):
      image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    pixels = np.asarray(image, np.float32) / 255
  return _split_channels(pixels, 8)


def _split_channels(pixels: np.ndarray, bits: int) -> Photo:
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.shape[-1] in (2, 4):  # gray + alpha, RGB + alpha
    color, alpha = pixels[..., :-1], pixels[..., -1]
  else:
    color, alpha = pixels, None
  if color.shape[-1] == 1:
    color = np.repeat(color, 3, axis=-1)
  return Photo(color, alpha, bits)


def write_photo(path: epath.Path, rgb: np.ndarray, alpha: np.ndarray | None, bits: int) -> None:
  """Lossless PNG at the input's bit depth; the alpha channel as it was read. `path` may be in a bucket."""
  scale = 65535 if bits == 16 else 255
  channels = [rgb] if alpha is None else [rgb, alpha[..., None]]
  pixels = np.round(np.clip(np.concatenate(channels, axis=-1), 0, 1) * scale)
  with path.open("wb") as f:
    if bits == 16:
      mode = "RGBA;16" if alpha is not None else "RGB;16"
      png.from_array(pixels.astype(np.uint16).reshape(pixels.shape[0], -1), mode).write(f)
    else:
      Image.fromarray(pixels.astype(np.uint8)).save(f, format="PNG")


def output_path(out: epath.Path, source: pathlib.Path) -> epath.Path:
  return out / f"{source.stem}.png"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="simplenet-deblur", description=__doc__.split("\n")[0])
  parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--out", required=True, help="folder for the deblurred PNGs")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  parser.add_argument("--tile", type=int, default=None,
                      help=f"tile size in pixels; default: {DEFAULT_TILE} for photos over --max-pixels, else "
                      "the whole photo; 0 never tiles")
  parser.add_argument("--overlap", type=int, default=32, help="overlap of neighbouring tiles (blended)")
  parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                      help="photos with more pixels are tiled when --tile is not given")
  parser.add_argument("--ensemble", action="store_true", help="average over 8 flips/rotations (8× slower)")
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)

  out = paths.user_path(args.out)  # a local folder or a bucket URL
  try:
    paths.check_writable(out, "output folder", "--out")
  except ValueError as error:
    return _fail(str(error))
  files, unmatched = collect_inputs(args.inputs)
  if not files:
    return _fail(f"no jpg/png/webp images in {', '.join(args.inputs)}.")
  clashes = _duplicates([output_path(out, f) for f in files])
  if clashes:
    return _fail(f"several inputs would be written to the same file {clashes[0]}; deblur them into "
                 "separate --out folders.")
  try:
    inference.check_tiling(DEFAULT_TILE if args.tile is None else args.tile, args.overlap)
    _, network, step = inference.load_model(args.workdir, args.checkpoint)
  except ValueError as error:
    return _fail(str(error))
  deblur_fns = {}  # by tile size: the whole photo (0) and/or tiles

  failures = [(pattern, "matched no jpg/png/webp file") for pattern in unmatched]
  skipped = 0
  for source in tqdm.tqdm(files, desc="deblurring", unit="photo"):
    target = output_path(out, source)
    if target.exists() and not args.overwrite:
      skipped += 1
      continue
    try:
      photo = read_photo(source)
    except (OSError, ValueError, png.Error) as error:
      failures.append((str(source), f"unreadable image ({error})"))
      continue
    pixels = photo.rgb.shape[0] * photo.rgb.shape[1]
    tile = args.tile if args.tile is not None else auto_tile(pixels, args.max_pixels)
    if tile not in deblur_fns:
      deblur_fns[tile] = inference.make_deblur_fn(network, ensemble=args.ensemble, tile=tile, overlap=args.overlap)
    try:
      result = np.asarray(deblur_fns[tile](photo.rgb[None]))[0]
    except ValueError as error:  # a photo too small for the network
      failures.append((str(source), str(error)))
      continue
    write_photo(target, result, photo.alpha, photo.bits)
  done = len(files) - skipped - sum(1 for f, _ in failures if f not in unmatched)
  print(f"deblurred {done} photo(s) into {out} with the checkpoint of step {step}"
        + (f"; kept {skipped} existing output(s) (--overwrite replaces them)" if skipped else ""))
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
