"""Reading, checking and encoding image files: the one place where a bad file becomes one clear sentence.

Everything downstream (crops, the model, metrics) assumes 8-bit RGB, so gray, palette and RGBA files are
converted here, and a file that cannot be decoded is reported by path before any work starts.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib

import numpy as np
from PIL import Image
from PIL import ImageOps

# The suffixes a data set or a folder of photos may use; GoPro and RealBlur ship PNG.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# Fixed so that the same pixels always give the same bytes (the demo set must be byte-identical across runs).
# Level 1 encodes 256×256 photos 3–4× faster than the default 6 for files about 9% larger.
PNG_COMPRESS_LEVEL = 1

PathLike = str | os.PathLike


class DatasetError(ValueError):
  """A data set, photo folder or image the user pointed at is missing, incomplete or broken.

  The message is one sentence that names the path and the fix; command-line tools print it without a
  traceback.
  """


@dataclasses.dataclass(frozen=True)
class ImageInfo:
  """What the header of an image file says, read without decoding the pixels."""

  path: pathlib.Path
  width: int
  height: int
  mode: str
  format: str

  @property
  def is_rgb(self) -> bool:
    return self.mode == "RGB"

  @property
  def size_text(self) -> str:
    return f"{self.width}×{self.height}"


def is_image_file(path: pathlib.Path) -> bool:
  return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def inspect_image(path: PathLike, *, verify: bool = True) -> ImageInfo:
  """Reads the header of `path`; with `verify`, also checks that the whole file decodes.

  PNG is checked by its chunk checksums (fast, no decoding); other formats are decoded, since PIL has no
  cheap integrity check for them.
  """
  path = pathlib.Path(path)
  try:
    with Image.open(path) as img:
      info = ImageInfo(path, img.width, img.height, img.mode, img.format or "")
      if verify:
        if img.format == "PNG":
          img.verify()
        else:
          img.load()
  except FileNotFoundError:
    raise DatasetError(f"Image {path} does not exist; restore the file or remove it from the data set.") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
    raise DatasetError(
        f"Cannot read image {path} ({_reason(err)}); replace the file or remove it from the data set.") from None
  return info


def _reason(err: Exception) -> str:
  text = str(err).strip().rstrip(".") or type(err).__name__
  return text.replace(str(getattr(err, "filename", "") or "\0"), "the file")


def to_rgb_array(img: Image.Image) -> np.ndarray:
  """Pixels of `img` as uint8 [H, W, 3]; gray, palette and 16-bit are expanded, alpha is dropped."""
  if img.mode != "RGB":
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
      # 16-bit gray: PIL's convert("RGB") would clip at 255 instead of scaling, so scale to 8 bits first.
      wide = np.asarray(img, dtype=np.float64)
      img = Image.fromarray(np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
    img = img.convert("RGB")
  return np.asarray(img, dtype=np.uint8)


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
  """Decodes encoded image bytes (PNG, JPEG) to uint8 [H, W, 3]."""
  try:
    with Image.open(io.BytesIO(data)) as img:
      return to_rgb_array(img)
  except (OSError, SyntaxError, ValueError) as err:
    raise DatasetError(f"Cannot decode image {name} ({_reason(err)}); re-create the data set.") from None


def read_rgb(path: PathLike, *, apply_exif_orientation: bool = False) -> np.ndarray:
  """Reads an image file as uint8 [H, W, 3].

  `apply_exif_orientation` turns phone photos upright (for the photos that blur synthesis starts from). Pairs
  of a data set are read as stored, so that a shard and the file it came from give the same pixels.
  """
  path = pathlib.Path(path)
  try:
    with Image.open(path) as img:
      return to_rgb_array(ImageOps.exif_transpose(img) if apply_exif_orientation else img)
  except FileNotFoundError:
    raise DatasetError(f"Image {path} does not exist; restore the file or remove it from the data set.") from None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
    raise DatasetError(
        f"Cannot read image {path} ({_reason(err)}); replace the file or remove it from the data set.") from None


def encode_png(pixels: np.ndarray) -> bytes:
  """Lossless PNG bytes of uint8 [H, W, 3] pixels; the same pixels always give the same bytes."""
  if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[-1] != 3:
    raise ValueError(f"encode_png expects uint8 [H, W, 3], got {pixels.dtype} {pixels.shape}.")
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
  return buffer.getvalue()


def png_bytes_of_file(path: PathLike, info: ImageInfo | None = None) -> bytes:
  """The file's own bytes when it is a PNG (lossless, bit-exact), else its pixels re-encoded as PNG."""
  path = pathlib.Path(path)
  info = info or inspect_image(path, verify=False)
  if info.format == "PNG":
    return path.read_bytes()
  return encode_png(read_rgb(path))
