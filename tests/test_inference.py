"""Self-ensemble, tiling and the deblur CLI (simplenet_jax.inference, simplenet_jax.deblur)."""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import png
import pytest
import skimage.data
from PIL import Image

from simplenet_jax import deblur
from simplenet_jax import evaluate
from simplenet_jax import inference
from simplenet_jax import metrics


def _image(h=37, w=53, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(1, h, w, 3)), jnp.float32)


def test_each_of_the_8_transforms_is_inverted():
  x = _image()
  seen = set()
  for k in range(8):
    moved = inference._transform(x, k)
    seen.add(np.asarray(moved).tobytes())
    np.testing.assert_array_equal(np.asarray(inference._inverse(moved, k)), np.asarray(x))
  assert len(seen) == 8  # eight distinct symmetries


def test_ensemble_of_an_identity_like_model_returns_the_input():
  x = _image()
  np.testing.assert_allclose(np.asarray(inference.self_ensemble(lambda v: v, x)), np.asarray(x), atol=1e-6)
  # a model that is not equivariant (adds a ramp along its own width) is averaged over all orientations
  ramp = lambda v: v + jnp.arange(v.shape[2])[None, None, :, None] / 100
  assert not np.allclose(np.asarray(inference.self_ensemble(ramp, x)), np.asarray(ramp(x)))


def test_tile_covering_the_image_equals_untiled_exactly():
  x = _image(40, 48)
  net = lambda v: v * 0.5 + jnp.mean(v)  # global, like LGCR
  np.testing.assert_array_equal(np.asarray(inference.tiled(net, x, tile=64, overlap=8)), np.asarray(net(x)))


def test_small_tiles_blend_seams_and_stay_close():
  x = _image(90, 70)
  local = lambda v: v * 0.8 + 0.1  # position-independent: tiling must be exact up to float rounding
  np.testing.assert_allclose(np.asarray(inference.tiled(local, x, tile=32, overlap=8)), np.asarray(local(x)),
                             atol=1e-6)
  global_net = lambda v: v * 0.9 + 0.1 * jnp.mean(v)  # global context: tiling approximates it
  diff = metrics.psnr(metrics.to_uint8(inference.tiled(global_net, x, tile=32, overlap=8)[0]),
                      metrics.to_uint8(global_net(x)[0]))
  assert float(diff) > 35  # dB between tiled and whole-image output


@pytest.mark.parametrize("tile,overlap,message", [(8, 0, "--tile must be at least 16 pixels, got 8."),
                                                  (32, 32, "--overlap must be at least 0 and smaller")])
def test_bad_tiling_is_one_sentence(tile, overlap, message):
  with pytest.raises(ValueError) as info:
    inference.tiled(lambda v: v, _image(), tile, overlap)
  assert message in str(info.value)


@pytest.fixture()
def workdir(trained_workdir):
  return trained_workdir


@pytest.fixture()
def photos(tmp_path):
  folder = tmp_path / "photos"
  folder.mkdir()
  coffee = skimage.data.coffee()[:61, :83]
  # EXIF orientation 6: the stored pixels are rotated; a viewer (and we) turn them upright (83 wide → 61).
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(coffee).save(folder / "rotated.jpg", exif=exif, quality=95)
  rgba = np.concatenate([skimage.data.chelsea()[:45, :50], np.arange(45 * 50, dtype=np.uint8).reshape(45, 50, 1)],
                        axis=-1)
  Image.fromarray(rgba).save(folder / "alpha.png")
  deep = skimage.data.astronaut()[:41, :43].astype(np.uint16) * 257 + 3
  png.from_array(deep.reshape(41, -1), "RGB;16").save(str(folder / "deep.png"))
  (folder / "broken.webp").write_bytes(b"RIFF0000WEBPjunk")
  return folder


def _deblur_cli(*args):
  return subprocess.run([sys.executable, "-m", "simplenet_jax.deblur", *map(str, args)], capture_output=True,
                        text=True, timeout=600)


def test_cli_keeps_orientation_bit_depth_alpha_and_lists_failures(workdir, photos, tmp_path):
  out = tmp_path / "out"
  run = _deblur_cli("--workdir", workdir, photos, "--out", out)
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert "1 input(s) failed:" in run.stderr and "broken.webp: unreadable image" in run.stderr
  assert "deblurred 3 photo(s)" in run.stdout
  assert np.asarray(Image.open(out / "rotated.png")).shape == (83, 61, 3)
  alpha = np.asarray(Image.open(out / "alpha.png"))
  np.testing.assert_array_equal(alpha[..., 3], np.arange(45 * 50, dtype=np.uint8).reshape(45, 50))
  width, height, _, info = png.Reader(filename=str(out / "deep.png")).asDirect()
  assert (width, height, info["bitdepth"], info["planes"]) == (43, 41, 16, 3)

  again = _deblur_cli("--workdir", workdir, photos / "alpha.png", "--out", out)
  assert again.returncode == 0 and "kept 1 existing output(s) (--overwrite replaces them)" in again.stdout


def test_cli_tiled_result_matches_untiled_when_the_tile_covers_the_photo(workdir, photos, tmp_path):
  whole = _deblur_cli("--workdir", workdir, photos / "alpha.png", "--out", tmp_path / "a", "--tile", "0")
  tiled = _deblur_cli("--workdir", workdir, photos / "alpha.png", "--out", tmp_path / "b", "--tile", "64")
  assert whole.returncode == 0 and tiled.returncode == 0, whole.stderr[-2000:] + tiled.stderr[-2000:]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "alpha.png")),
                                np.asarray(Image.open(tmp_path / "b" / "alpha.png")))


def test_cli_bad_workdir_and_unwritable_output(photos, tmp_path):
  run = _deblur_cli("--workdir", tmp_path / "nothing", photos, "--out", tmp_path / "out")
  assert run.returncode == 1 and "has no checkpoint" in run.stderr and "Traceback" not in run.stderr
  blocker = tmp_path / "file"
  blocker.write_text("x")
  run = _deblur_cli("--workdir", tmp_path, photos, "--out", blocker / "sub")
  assert run.returncode == 1 and run.stderr.startswith(f"error: cannot write to the output folder {blocker / 'sub'} (")
  assert run.stderr.rstrip().endswith("); pass --out with a writable folder.") and "Traceback" not in run.stderr


def test_read_photo_converts_gray_to_rgb(tmp_path):
  Image.fromarray(skimage.data.camera()[:20, :30]).save(tmp_path / "gray.png")
  photo = deblur.read_photo(tmp_path / "gray.png")
  assert photo.rgb.shape == (20, 30, 3) and photo.alpha is None and photo.bits == 8
  np.testing.assert_array_equal(photo.rgb[..., 0], photo.rgb[..., 2])
