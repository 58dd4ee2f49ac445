"""Pixels and photos: the uint8 ↔ float conventions and reading/writing the photos users bring.

The network works on float32 RGB in [0, 1]; files and metrics hold 8-bit (or 16-bit) integers. Every
conversion between the two is here, so that inference, training, evaluation, the CLIs and the web demo
round and clip the same way. Photos are read with their EXIF orientation applied, 16-bit PNGs at 16 bits
(through pypng: Pillow truncates them) and any alpha channel kept aside untouched.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pathlib
import stat
import struct
import warnings
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import png
from etils import epath
from PIL import Image
from PIL import ImageOps

from simplenet_jax import paths

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")  # simplenet_jax.video reads them (with PyAV)
# The most pixels a photo may have: Pillow's own decompression-bomb limit (89.5 MP), enforced before any
# decoding at every bit depth (pypng's 16-bit path has none), so that a tiny file that inflates to gigabytes
# is refused before a byte of it is allocated.
MAX_PHOTO_PIXELS = Image.MAX_IMAGE_PIXELS
# Memory that deblurring a photo takes per pixel, beyond the process itself: decoding, float32 copies, the
# tiles' blend and the PNG's encoding. Measured: a 16-bit 8000 × 8000 PNG peaked at 4.7 GB of RSS with
# simplenet-deblur on a CPU, against 0.45 GB for a 64 × 96 one, so 66 bytes a pixel; 70 leaves a margin.
BYTES_PER_PIXEL = 70


def available_memory() -> int | None:
  """Bytes the kernel says a new allocation can take without swapping (MemAvailable); None where unknown."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


class PhotoError(ValueError):
  """A file that is not a photo this package reads, in one sentence."""


# What reading a damaged, truncated or foreign file raises (Pillow: OSError, EOFError, SyntaxError and its
# bomb error; pypng, whose corrupt data is a zlib.error; struct.error for cut-off headers).
READ_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, png.Error, zlib.error,
               Image.DecompressionBombError, MemoryError)


def find_photos(patterns: list[str], suffixes: tuple[str, ...] = PHOTO_SUFFIXES
                ) -> tuple[list[pathlib.Path], list[str]]:
  """(the files with one of `suffixes` that files, folders or glob `patterns` name; the patterns that matched
  none), in a stable order."""
  files, unmatched = [], []
  for pattern in patterns:
    path = pathlib.Path(pattern)
    if path.is_dir():
      found = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and not p.name.startswith("."))
    elif path.is_file():
      found = [path]
    else:
      found = sorted(pathlib.Path(p) for p in glob.glob(pattern) if pathlib.Path(p).suffix.lower() in suffixes)
    if not found:
      unmatched.append(pattern)
    files += [f for f in found if f not in files]
  return files, unmatched


def output_path(out: epath.Path, source: pathlib.Path) -> epath.Path:
  """Where the deblurred `source` goes in `out`: a lossless PNG of the same stem."""
  return out / f"{source.stem}.png"


def to_uint8(image: jax.Array) -> jax.Array:
  """A [0, 1] float image as a saved 8-bit PNG would hold it: clipped, scaled by 255, rounded."""
  return jnp.round(jnp.clip(image, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def as_uint8(image) -> np.ndarray:
  """Host uint8 pixels of a NumPy or JAX image: uint8 as it is, [0, 1] floats through `to_uint8`."""
  return np.asarray(image if image.dtype == np.uint8 else to_uint8(jnp.asarray(image)))


def to_float(image: jax.Array) -> jax.Array:
  """uint8 pixels (as the input pipeline delivers them) → float32 in [0, 1], the model's range; floats pass."""
  image = jnp.asarray(image)
  return image.astype(jnp.float32) / 255.0 if image.dtype == jnp.uint8 else image


@dataclasses.dataclass
class Photo:
  rgb: np.ndarray  # float32 [H, W, 3] in [0, 1]
  alpha: np.ndarray | None  # the original alpha channel, untouched
  bits: int  # 8 or 16


def check_photo(path: pathlib.Path, max_pixels: int = MAX_PHOTO_PIXELS) -> tuple[int, int]:
  """(width, height) from the header of a regular, non-empty image file of at most `max_pixels`; PhotoError
  (or one of READ_ERRORS) otherwise. Nothing is decoded, and a FIFO or device is never opened."""
  info = os.stat(path)
  if not stat.S_ISREG(info.st_mode):
    raise PhotoError("not a regular file")
  if info.st_size == 0:
    raise PhotoError("an empty file")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the budget below decides
    with Image.open(path) as image:
      width, height = image.size
  if width * height > max_pixels:
    raise PhotoError(f"{width}×{height} pixels ({width * height / 1e6:.0f} MP) is more than the "
                     f"{max_pixels / 1e6:.0f} MP this command decodes; scale it down first")
  need, free = width * height * BYTES_PER_PIXEL, available_memory()
  if free is not None and need > free:
    raise PhotoError(f"{width}×{height} pixels needs about {need / 2**30:.1f} GiB of memory to deblur and "
                     f"{free / 2**30:.1f} GiB is free; scale it down or free some memory first")
  return width, height


def read_photo(path: pathlib.Path, max_pixels: int = MAX_PHOTO_PIXELS) -> Photo:
  """Reads a photo as float RGB (+ alpha), EXIF-rotated; 16-bit PNGs through pypng (Pillow truncates them).
  `check_photo` first: at most `max_pixels`, a regular file."""
  check_photo(path, max_pixels)
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
  """Lossless PNG at the input's bit depth; the alpha channel as it was read. `path` may be in a bucket. The
  file appears complete or not at all (`paths.atomic_write`)."""
  scale = 65535 if bits == 16 else 255
  channels = [rgb] if alpha is None else [rgb, alpha[..., None]]
  pixels = np.round(np.clip(np.concatenate(channels, axis=-1), 0, 1) * scale)
  with paths.atomic_write(path) as f:
    if bits == 16:
      mode = "RGBA;16" if alpha is not None else "RGB;16"
      png.from_array(pixels.astype(np.uint16).reshape(pixels.shape[0], -1), mode).write(f)
    else:
      Image.fromarray(pixels.astype(np.uint8)).save(f, format="PNG")


def write_png(path: epath.Path, pixels: np.ndarray) -> None:
  """uint8 pixels as a PNG at `path` (a local file or an object in a bucket), its folder made first; the file
  appears complete or not at all."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with paths.atomic_write(path) as f:
    Image.fromarray(pixels).save(f, format="PNG")
