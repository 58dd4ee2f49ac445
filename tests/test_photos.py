"""simplenet_jax.photos: the uint8 ↔ float conventions against formulas, and photo files read back with
Pillow and pypng (bit depth, gray, alpha, palettes, EXIF orientation)."""

import os
import struct
import zlib

import jax.numpy as jnp
import numpy as np
import png
import pytest
from etils import epath
from PIL import Image

from simplenet_jax import photos


def _rng(seed):
  return np.random.default_rng(seed)


def test_to_uint8_clips_scales_by_255_and_rounds_half_to_even():
  """Random floats (some outside [0, 1]) against Python's round() of the clipped value × 255."""
  values = _rng(0).uniform(-0.3, 1.3, (7, 5, 3)).astype(np.float32)
  expected = [round(min(max(float(v), 0.0), 1.0) * 255) for v in values.ravel()]
  got = photos.to_uint8(jnp.asarray(values))
  assert got.dtype == jnp.uint8 and got.shape == (7, 5, 3)
  np.testing.assert_array_equal(np.asarray(got).ravel(), expected)


def test_to_uint8_rounds_exact_halves_to_even_like_write_photo(tmp_path):
  """Floats whose float32 product with 255 is k + ½ (the model's outputs are float32): the even neighbour,
  as Python's round() gives, and the same level as write_photo's PNG holds."""
  candidates = ((np.arange(255) + 0.5) / 255).astype(np.float32)
  products = candidates * np.float32(255)
  halves = candidates[products == np.arange(255) + 0.5]
  assert len(halves) > 100
  expected = [round(float(p)) for p in halves * np.float32(255)]  # half to even
  assert sum(e % 2 == 0 for e in expected) == len(expected)
  got = np.asarray(photos.to_uint8(jnp.asarray(halves)))
  np.testing.assert_array_equal(got, expected)
  rgb = np.repeat(halves[None, :, None], 3, axis=-1)
  photos.write_photo(epath.Path(tmp_path) / "halves.png", rgb, None, 8)
  with Image.open(tmp_path / "halves.png") as image:
    np.testing.assert_array_equal(np.asarray(image)[0, :, 0], expected)


def test_as_uint8_passes_uint8_and_rounds_floats_on_the_host():
  rng = _rng(1)
  pixels = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
  got = photos.as_uint8(pixels)
  assert isinstance(got, np.ndarray) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, pixels)
  device = photos.as_uint8(jnp.asarray(pixels))
  assert isinstance(device, np.ndarray) and device.dtype == np.uint8
  np.testing.assert_array_equal(device, pixels)
  floats = rng.uniform(-0.1, 1.1, (9, 11, 3))  # float64 NumPy, as a host array may be
  expected = np.clip(np.round(np.clip(floats, 0, 1) * 255), 0, 255).astype(np.uint8)
  for image in (floats, jnp.asarray(floats, jnp.float32)):
    got = photos.as_uint8(image)
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_to_float_divides_by_255_and_round_trips_every_level():
  levels = np.arange(256, dtype=np.uint8)
  got = photos.to_float(levels)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float64), levels / 255, rtol=2 ** -23, atol=0)
  assert float(got[0]) == 0.0 and float(got[255]) == 1.0
  np.testing.assert_array_equal(np.asarray(photos.to_uint8(got)), levels)
  floats = _rng(2).uniform(size=(3, 5)).astype(np.float32)
  passed = photos.to_float(floats)  # floats are already in the model's range
  assert passed.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(passed), floats)


def _save(image: Image.Image, path, **kwargs):
  image.save(path, **kwargs)
  return path


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_8_bit_pngs_are_rgb_floats_with_the_alpha_kept_aside(tmp_path, mode, channels):
  pixels = _rng(3).integers(0, 256, (23, 37, channels), dtype=np.uint8)
  path = _save(Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode), tmp_path / "photo.png")
  photo = photos.read_photo(path)
  assert photo.bits == 8 and photo.rgb.dtype == np.float32 and photo.rgb.shape == (23, 37, 3)
  color = pixels[..., :3] if channels >= 3 else np.repeat(pixels[..., :1], 3, axis=-1)
  np.testing.assert_array_equal(np.round(photo.rgb.astype(np.float64) * 255), color)
  np.testing.assert_allclose(photo.rgb, color / 255, rtol=0, atol=1e-7)
  if channels in (2, 4):
    np.testing.assert_array_equal(np.round(photo.alpha.astype(np.float64) * 255), pixels[..., -1])
  else:
    assert photo.alpha is None


def test_palette_png_with_a_transparent_index_gets_an_alpha(tmp_path):
  rng = _rng(4)
  palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
  indices = rng.integers(0, 16, (19, 29), dtype=np.uint8)
  image = Image.fromarray(indices, "P")
  image.putpalette(palette.ravel().tolist())
  photo = photos.read_photo(_save(image, tmp_path / "palette.png", transparency=5))
  np.testing.assert_array_equal(np.round(photo.rgb * 255).astype(np.uint8), palette[indices])
  np.testing.assert_array_equal(photo.alpha, np.where(indices == 5, 0.0, 1.0))
  opaque = photos.read_photo(_save(image, tmp_path / "opaque.png"))
  assert opaque.alpha is None
  np.testing.assert_array_equal(np.round(opaque.rgb * 255).astype(np.uint8), palette[indices])


def test_gray_png_with_a_transparent_level_gets_an_alpha(tmp_path):
  gray = _rng(5).integers(0, 8, (13, 17), dtype=np.uint8) * 30
  photo = photos.read_photo(_save(Image.fromarray(gray, "L"), tmp_path / "gray.png", transparency=60))
  np.testing.assert_array_equal(np.round(photo.rgb * 255).astype(np.uint8), np.repeat(gray[..., None], 3, -1))
  np.testing.assert_array_equal(photo.alpha, np.where(gray == 60, 0.0, 1.0))


@pytest.mark.parametrize("mode,planes", [("RGB", 3), ("RGBA", 4), ("L", 1), ("LA", 2)])
def test_16_bit_pngs_keep_all_16_bits(tmp_path, mode, planes):
  """Written by pypng; Pillow would truncate these to 8 bits."""
  pixels = _rng(6).integers(0, 65536, (21, 31, planes), dtype=np.uint16)
  with open(tmp_path / "deep.png", "wb") as f:
    png.from_array(pixels.reshape(21, -1), f"{mode};16").write(f)
  photo = photos.read_photo(tmp_path / "deep.png")
  assert photo.bits == 16 and photo.rgb.dtype == np.float32 and photo.rgb.shape == (21, 31, 3)
  color = pixels[..., :3] if planes >= 3 else np.repeat(pixels[..., :1], 3, axis=-1)
  np.testing.assert_array_equal(np.round(photo.rgb.astype(np.float64) * 65535), color)
  if planes in (2, 4):
    np.testing.assert_array_equal(np.round(photo.alpha.astype(np.float64) * 65535), pixels[..., -1])
  else:
    assert photo.alpha is None


# EXIF 2.3, tag 0x0112: "the 0th row of the stored image is the visual …, the 0th column the visual …".
# Stored S[i, j] is shown at D[…]: each row a NumPy construction of D from the spec's sentence.
ORIENTATIONS = {
    1: lambda s: s,  # top, left
    2: lambda s: s[:, ::-1],  # top, right
    3: lambda s: s[::-1, ::-1],  # bottom, right
    4: lambda s: s[::-1, :],  # bottom, left
    5: lambda s: s.transpose(1, 0, 2),  # left, top: D[j, i] = S[i, j]
    6: lambda s: s.transpose(1, 0, 2)[:, ::-1],  # right, top: D[j, H-1-i] = S[i, j]
    7: lambda s: s.transpose(1, 0, 2)[::-1, ::-1],  # right, bottom: D[W-1-j, H-1-i] = S[i, j]
    8: lambda s: s.transpose(1, 0, 2)[::-1, :],  # left, bottom: D[W-1-j, i] = S[i, j]
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_of_a_jpeg_is_applied(tmp_path, orientation):
  """Compared with the stored (undecoded-orientation) pixels that Pillow decodes, transposed per the spec."""
  pixels = _rng(7).integers(0, 256, (15, 26, 3), dtype=np.uint8)
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = _save(Image.fromarray(pixels), tmp_path / "shot.jpg", exif=exif, quality=95)
  with Image.open(path) as stored:
    assert stored.getexif()[0x0112] == orientation
    stored = np.asarray(stored.convert("RGB"))
  photo = photos.read_photo(path)
  expected = ORIENTATIONS[orientation](stored)
  assert photo.rgb.shape == expected.shape and photo.alpha is None and photo.bits == 8
  np.testing.assert_array_equal(np.round(photo.rgb * 255).astype(np.uint8), expected)


def test_exif_orientation_of_a_png_is_applied_losslessly(tmp_path):
  pixels = _rng(8).integers(0, 256, (11, 18, 3), dtype=np.uint8)
  exif = Image.Exif()
  exif[0x0112] = 6
  photo = photos.read_photo(_save(Image.fromarray(pixels), tmp_path / "shot.png", exif=exif))
  np.testing.assert_array_equal(np.round(photo.rgb * 255).astype(np.uint8), ORIENTATIONS[6](pixels))


def _assert_nearest_levels(stored, values, scale):
  """`stored` holds the level nearest to each clipped value × `scale`, up to float32's rounding of the product
  (write_photo computes in the float32 it is given: ≤ scale · 2⁻²⁴ off, which moves a level only there)."""
  exact = np.clip(values.astype(np.float64), 0, 1) * scale  # exact: a float32 times a 16-bit integer
  slack = scale * 2.0 ** -24
  assert np.all(np.abs(stored - exact) <= 0.5 + slack)
  clear = np.abs(exact % 1 - 0.5) > slack  # not within float32's rounding of a half
  assert clear.mean() > 0.95
  np.testing.assert_array_equal(stored[clear], np.round(exact[clear]))


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_write_photo_is_lossless_at_its_bit_depth(tmp_path, bits, with_alpha):
  """Read back with pypng: the nearest of 2^bits levels per channel, alpha last; read_photo returns it."""
  rng = _rng(9)
  rgb = rng.uniform(-0.2, 1.2, (17, 25, 3)).astype(np.float32)
  alpha = rng.uniform(size=(17, 25)).astype(np.float32) if with_alpha else None
  path = epath.Path(tmp_path) / "out.png"
  photos.write_photo(path, rgb, alpha, bits)
  width, height, rows, info = png.Reader(filename=str(path)).asDirect()
  planes = 4 if with_alpha else 3
  assert (width, height, info["bitdepth"], info["planes"]) == (25, 17, bits, planes)
  stored = np.vstack([np.asarray(row, np.int64) for row in rows]).reshape(17, 25, planes)
  scale = 2 ** bits - 1
  _assert_nearest_levels(stored[..., :3], rgb, scale)
  assert stored[..., :3].min() == 0 and stored[..., :3].max() == scale  # clipped, not wrapped
  if with_alpha:
    _assert_nearest_levels(stored[..., 3], alpha, scale)
  again = photos.read_photo(path)
  assert again.bits == bits
  np.testing.assert_array_equal(np.round(again.rgb.astype(np.float64) * scale), stored[..., :3])
  if with_alpha:
    np.testing.assert_array_equal(np.round(again.alpha.astype(np.float64) * scale), stored[..., 3])
  else:
    assert again.alpha is None


def test_write_png_makes_its_folder_and_stores_the_pixels(tmp_path):
  pixels = _rng(10).integers(0, 256, (7, 13, 3), dtype=np.uint8)
  path = epath.Path(tmp_path) / "a" / "b" / "picture.png"
  photos.write_png(path, pixels)
  with Image.open(path) as image:
    assert image.format == "PNG" and image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), pixels)
  photos.write_png(path, pixels[::-1].copy())  # overwrites an existing file
  with Image.open(path) as image:
    np.testing.assert_array_equal(np.asarray(image), pixels[::-1])


def _scrambled(good: bytes) -> bytes:
  """The compressed pixels of the first IDAT chunk flipped, its CRC made right again (so only zlib sees it)."""
  start = good.index(b"IDAT")
  (length,) = struct.unpack(">I", good[start - 4:start])
  data = bytearray(good[start + 4:start + 4 + length])
  for k in range(20, length - 10, 7):
    data[k] ^= 0x5A
  crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(data)))
  return good[:start + 4] + bytes(data) + crc + good[start + 8 + length:]


@pytest.mark.parametrize("bits,name,damage", [
    (8, "text.png", lambda good: b"not a picture"),
    (8, "text.jpg", lambda good: b"not a picture"),
    (8, "half.png", lambda good: good[:len(good) // 2]),
    (16, "half.png", lambda good: good[:len(good) // 2]),
    (8, "scrambled.png", _scrambled),
    (16, "scrambled.png", _scrambled),
])
def test_damaged_files_raise_one_of_the_read_errors(tmp_path, bits, name, damage):
  """What the deblur CLI catches to list a bad photo and go on with the others."""
  pixels = _rng(11).integers(0, 2 ** bits, (31, 29, 3))
  if bits == 8:  # Pillow's own file: Pillow reads a truncated pypng-written 8-bit PNG without a word
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "good.png")
  else:
    with open(tmp_path / "good.png", "wb") as f:
      png.from_array(pixels.reshape(31, -1), "RGB;16").write(f)
  (tmp_path / name).write_bytes(damage((tmp_path / "good.png").read_bytes()))
  with pytest.raises(photos.READ_ERRORS):
    photos.read_photo(tmp_path / name)


def test_check_photo_refuses_what_is_not_a_regular_nonempty_file(tmp_path):
  fifo = tmp_path / "pipe.png"
  os.mkfifo(fifo)
  with pytest.raises(photos.PhotoError, match="^not a regular file$"):
    photos.check_photo(fifo)  # returns at once: the FIFO is never opened
  (tmp_path / "empty.png").write_bytes(b"")
  with pytest.raises(photos.PhotoError, match="^an empty file$"):
    photos.read_photo(tmp_path / "empty.png")


def test_a_decompression_bomb_is_refused_from_its_header_at_every_bit_depth(tmp_path, monkeypatch):
  bomb = tmp_path / "bomb.png"  # 100 MP of one bit: a few kB on disk, 1.2 GB as float RGB
  Image.new("1", (10000, 10000)).save(bomb)
  assert bomb.stat().st_size < 100_000
  with pytest.raises(photos.PhotoError, match=r"^10000×10000 pixels \(100 MP\) is more than the 89 MP"):
    photos.read_photo(bomb)
  deep = tmp_path / "deep.png"
  png.from_array(np.zeros((30, 40 * 3), np.uint16), "RGB;16").save(str(deep))
  monkeypatch.setattr(png, "Reader", lambda *a, **k: pytest.fail("decoded before the budget was checked"))
  with pytest.raises(photos.PhotoError, match=r"^40×30 pixels .* is more than the 0 MP this command decodes; scale it down first$"):
    photos.read_photo(deep, max_pixels=1000)


def test_a_photo_that_would_not_fit_in_free_memory_is_refused_before_decoding(tmp_path, monkeypatch):
  big = tmp_path / "big.png"  # 6000 × 5000 of one bit: small on disk, about 2 GiB to deblur
  Image.new("1", (6000, 5000)).save(big)
  monkeypatch.setattr(photos, "available_memory", lambda: 1 << 30)
  monkeypatch.setattr(Image.Image, "load", lambda *a, **k: pytest.fail("decoded before the memory was checked"))
  with pytest.raises(photos.PhotoError, match=r"^6000×5000 pixels needs about 2\.0 GiB of memory to deblur and "
                                             r"1\.0 GiB is free; scale it down or free some memory first$"):
    photos.read_photo(big)
  monkeypatch.setattr(photos, "available_memory", lambda: 3 << 30)  # enough: the check passes
  assert photos.check_photo(big) == (6000, 5000)
  monkeypatch.setattr(photos, "available_memory", lambda: None)  # unknown (not Linux): no check
  assert photos.check_photo(big) == (6000, 5000)


def test_available_memory_is_a_plausible_figure_here():
  free = photos.available_memory()
  assert free is None or 1 << 26 < free < 1 << 50
