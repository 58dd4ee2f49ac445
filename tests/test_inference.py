"""Self-ensemble, tiling, padding and the deblur CLI (simplenet_jax.inference, simplenet_jax.deblur)."""

import math
import re
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import png
import pytest
import skimage.data
from PIL import Image

from simplenet_jax import inference
from simplenet_jax import paths
from simplenet_jax import photos
from simplenet_jax.evaluation import metrics


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


def _per_tile_net(v):
  """Position-dependent and global within its window, like a real network with LGCR: tiled ≠ whole."""
  rows = jnp.arange(v.shape[1])[None, :, None, None] / 50
  cols = jnp.arange(v.shape[2])[None, None, :, None] / 70
  return v * 0.7 + jnp.mean(v, axis=(1, 2), keepdims=True) * 0.3 + rows - cols


def _blend_reference(net, image, tile, overlap):
  """An independent tiled blend in NumPy: ceil((S − o) / (t − o)) tiles per axis at i·(t − o), the last one
  moved back to end at the edge; each tile's weight is the product over both axes of
  min(1, (distance to an edge it shares with another tile + 1) / (o + 1))."""
  _, height, width, _ = image.shape
  image = np.asarray(image)

  def starts(size):
    if tile >= size:
      return [0]
    count = math.ceil((size - overlap) / (tile - overlap))
    return sorted({min(i * (tile - overlap), size - tile) for i in range(count)})

  def weight(size, first, last):
    position = np.arange(min(tile, size))
    rise = np.minimum(1, (position + 1) / (overlap + 1)) if not first else np.ones(len(position))
    fall = np.minimum(1, (len(position) - position) / (overlap + 1)) if not last else np.ones(len(position))
    return np.minimum(rise, fall)

  total = np.zeros(image.shape[1:], np.float64)
  norm = np.zeros(image.shape[1:3] + (1,), np.float64)
  rows, cols = starts(height), starts(width)
  th, tw = min(tile, height), min(tile, width)
  for i, top in enumerate(rows):
    for j, left in enumerate(cols):
      out = np.asarray(net(jnp.asarray(image[:, top:top + th, left:left + tw])))[0]
      w = (weight(height, i == 0, i == len(rows) - 1)[:, None] *
           weight(width, j == 0, j == len(cols) - 1)[None, :])[..., None]
      total[top:top + th, left:left + tw] += out * w
      norm[top:top + th, left:left + tw] += w
  return total / norm


@pytest.mark.parametrize("height,width,tile,overlap", [(90, 70, 32, 8), (41, 77, 24, 5), (37, 29, 32, 0)])
def test_tiles_smaller_than_the_image_equal_an_independent_blend(height, width, tile, overlap):
  x = _image(height, width, seed=1)
  got = np.asarray(inference.tiled(_per_tile_net, x, tile=tile, overlap=overlap))[0]
  want = _blend_reference(_per_tile_net, x, tile, overlap)
  assert np.abs(want - np.asarray(_per_tile_net(x))[0]).max() > 0.05  # tiles really differ from the whole
  np.testing.assert_allclose(got, want, atol=2e-6)


def test_small_tiles_blend_seams_and_stay_close():
  x = _image(90, 70)
  local = lambda v: v * 0.8 + 0.1  # position-independent: tiling must be exact up to float rounding
  np.testing.assert_allclose(np.asarray(inference.tiled(local, x, tile=32, overlap=8)), np.asarray(local(x)),
                             atol=1e-6)
  global_net = lambda v: v * 0.9 + 0.1 * jnp.mean(v)  # global context: tiling approximates it
  diff = metrics.psnr(photos.to_uint8(inference.tiled(global_net, x, tile=32, overlap=8)[0]),
                      photos.to_uint8(global_net(x)[0]))
  assert float(diff) > 35  # dB between tiled and whole-image output


def _network(v):
  """Like SimpleNet: only H and W that are multiples of 4, position-dependent, not flip-equivariant."""
  assert v.shape[1] % 4 == 0 and v.shape[2] % 4 == 0, v.shape
  return _per_tile_net(v) + jnp.mean(v[:, :, : v.shape[2] // 3], axis=(1, 2, 3), keepdims=True) * 0.2


def _any_size_reference(net, image):
  """NumPy reflect padding to a multiple of 4, the network, and the crop back, on one [H, W, 3] image."""
  h, w = image.shape[:2]
  padded = np.pad(image, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
  return np.asarray(net(jnp.asarray(padded[None])))[0, :h, :w]


def _ensemble_reference(net, image):
  """The mean over the 8 symmetries: k quarter turns (np.rot90), then optionally a left-right mirror, each
  mapped back by the inverse operations."""
  outputs = []
  for turns in range(4):
    for mirror in (False, True):
      moved = np.rot90(image, turns)
      moved = moved[:, ::-1] if mirror else moved
      out = _any_size_reference(net, np.ascontiguousarray(moved))
      out = out[:, ::-1] if mirror else out
      outputs.append(np.rot90(out, -turns))
  return np.mean(outputs, axis=0)


@pytest.mark.parametrize("ensemble,tile", [(False, 0), (True, 0), (False, 20), (True, 20)])
def test_deblur_fn_on_a_batch_equals_independent_per_image_references(ensemble, tile):
  images = np.random.default_rng(2).uniform(size=(2, 37, 53, 3)).astype(np.float32)
  deblur_fn = inference.make_deblur_fn(_network, ensemble=ensemble, tile=tile, overlap=6)
  got = np.asarray(deblur_fn(jnp.asarray(images)))
  one = (lambda x: _ensemble_reference(_network, x)) if ensemble else (lambda x: _any_size_reference(_network, x))
  if tile:
    want = [_blend_reference(lambda w: one(np.asarray(w)[0])[None], images[i:i + 1], tile, 6) for i in range(2)]
  else:
    want = [one(images[i]) for i in range(2)]
  assert got.shape == images.shape
  np.testing.assert_allclose(got, np.stack(want), atol=2e-6)
  if ensemble:  # the ensemble is not the plain network here, so the reference had something to check
    assert np.abs(got - np.asarray(inference.at_any_size(_network)(jnp.asarray(images)))).max() > 1e-2


@pytest.mark.parametrize("tile,overlap,message", [(8, 0, "--tile must be from 16 to 4096 pixels (or 0: no tiles), "
                                                            "got 8."),
                                                  (999999999, 0, "--tile must be from 16 to 4096 pixels"),
                                                  (32, 32, "--overlap must be at least 0 and smaller")])
def test_bad_tiling_is_one_sentence(tile, overlap, message):
  for run in (lambda: inference.tiled(lambda v: v, _image(), tile, overlap),
              lambda: inference.make_deblur_fn(lambda v: v, tile=tile, overlap=overlap)):
    with pytest.raises(ValueError) as info:
      run()
    assert message in str(info.value)


@pytest.fixture()
def workdir(trained_workdir):
  return trained_workdir


@pytest.fixture()
def photo_folder(tmp_path):
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


@pytest.mark.slow
def test_cli_keeps_orientation_bit_depth_alpha_and_lists_failures(workdir, photo_folder, tmp_path):
  out = tmp_path / "out"
  run = _deblur_cli("--workdir", workdir, photo_folder, "--out", out)
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert "1 input(s) failed:" in run.stderr and "broken.webp: unreadable image" in run.stderr
  assert "deblurred 3 photo(s)" in run.stdout
  assert np.asarray(Image.open(out / "rotated.png")).shape == (83, 61, 3)
  alpha = np.asarray(Image.open(out / "alpha.png"))
  np.testing.assert_array_equal(alpha[..., 3], np.arange(45 * 50, dtype=np.uint8).reshape(45, 50))
  width, height, _, info = png.Reader(filename=str(out / "deep.png")).asDirect()
  assert (width, height, info["bitdepth"], info["planes"]) == (43, 41, 16, 3)

  again = _deblur_cli("--workdir", workdir, photo_folder / "alpha.png", "--out", out)
  assert again.returncode == 0 and "kept 1 existing output(s) (--overwrite replaces them)" in again.stdout


def test_tiled_photo_equals_untiled_when_the_tile_covers_it(workdir, photo_folder, tmp_path):
  """`deblur_photos`, what simplenet-deblur runs, with --tile 0 and with a tile larger than the photo."""
  _, network, _ = inference.load_model(workdir)
  for tile, out in ((0, tmp_path / "a"), (64, tmp_path / "b")):
    run = inference.deblur_photos(network, [photo_folder / "alpha.png"], paths.user_path(out), tile=tile)
    assert (run.done, run.skipped, run.failures) == (1, 0, [])
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "alpha.png")),
                                np.asarray(Image.open(tmp_path / "b" / "alpha.png")))


def test_a_photo_too_small_is_listed_and_the_others_are_deblurred(workdir, photo_folder, tmp_path):
  Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(photo_folder / "tiny.png")
  _, network, _ = inference.load_model(workdir)
  run = inference.deblur_photos(network, [photo_folder / "tiny.png", photo_folder / "alpha.png"],
                                paths.user_path(tmp_path / "out"))
  assert run.failures == [(str(photo_folder / "tiny.png"),
                           "image of 2×3 pixels is too small to deblur; it needs at least 4×4.")]
  assert run.done == 1 and (tmp_path / "out" / "alpha.png").exists()
  assert not (tmp_path / "out" / "tiny.png").exists()


@pytest.mark.slow
def test_cli_bad_workdir_and_unwritable_output(photo_folder, tmp_path):
  run = _deblur_cli("--workdir", tmp_path / "nothing", photo_folder, "--out", tmp_path / "out")
  assert run.returncode == 1 and "has no checkpoint" in run.stderr and "Traceback" not in run.stderr
  blocker = tmp_path / "file"
  blocker.write_text("x")
  run = _deblur_cli("--workdir", tmp_path, photo_folder, "--out", blocker / "sub")
  assert run.returncode == 1 and run.stderr.startswith(f"error: cannot write to the output folder {blocker / 'sub'} (")
  assert run.stderr.rstrip().endswith("); pass --out with a writable folder.") and "Traceback" not in run.stderr


def test_read_photo_converts_gray_to_rgb(tmp_path):
  Image.fromarray(skimage.data.camera()[:20, :30]).save(tmp_path / "gray.png")
  photo = photos.read_photo(tmp_path / "gray.png")
  assert photo.rgb.shape == (20, 30, 3) and photo.alpha is None and photo.bits == 8
  np.testing.assert_array_equal(photo.rgb[..., 0], photo.rgb[..., 2])


def test_bad_files_in_a_batch_are_one_line_each_and_the_good_photo_is_deblurred(workdir, photo_folder, tmp_path):
  folder = tmp_path / "mixed"
  folder.mkdir()
  (folder / "empty.png").write_bytes(b"")
  Image.new("1", (10000, 10000)).save(folder / "bomb.png")
  os.mkfifo(folder / "pipe.png")
  (folder / "good.png").write_bytes((photo_folder / "alpha.png").read_bytes())
  out = tmp_path / "out"
  out.mkdir()
  (out / ".good.png.partial").write_bytes(b"a write that a kill cut short")
  _, network, _ = inference.load_model(workdir)
  files, _ = photos.find_photos([str(folder)])
  run = inference.deblur_photos(network, files, paths.user_path(out))
  reasons = dict(run.failures)
  assert reasons == {str(folder / "empty.png"): "an empty file", str(folder / "pipe.png"): "not a regular file",
                     str(folder / "bomb.png"): "10000×10000 pixels (100 MP) is more than the 89 MP this command "
                                               "decodes; scale it down first"}
  assert (run.done, run.skipped) == (1, 0)  # the partial file was not taken for a finished output
  assert np.asarray(Image.open(out / "good.png")).shape == (45, 50, 4)


def test_a_full_disk_stops_with_one_sentence_and_keeps_what_was_written(workdir, photo_folder, tmp_path,
                                                                           monkeypatch):
  import errno  # pylint: disable=g-import-not-at-top
  _, network, _ = inference.load_model(workdir)
  out = paths.user_path(tmp_path / "out")
  write, calls = photos.write_photo, []

  def full_after_one(*args, **kwargs):
    calls.append(1)
    if len(calls) > 1:
      raise OSError(errno.ENOSPC, "No space left on device")
    write(*args, **kwargs)

  monkeypatch.setattr(photos, "write_photo", full_after_one)
  files = [photo_folder / "alpha.png", photo_folder / "rotated.jpg"]
  with pytest.raises(ValueError) as info:
    inference.deblur_photos(network, files, out)
  assert str(info.value) == (f"cannot write {out / 'rotated.png'} (No space left on device); the 1 photo(s) "
                             "written before it are complete; free some space and rerun, which keeps them.")
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["alpha.png"]


def test_a_checkpoint_with_flipped_bytes_is_refused_naming_the_intact_steps(workdir_copy):
  from test_checkpointing import _flip_bytes  # pylint: disable=g-import-not-at-top
  _flip_bytes(workdir_copy / "checkpoints" / "4")
  with pytest.raises(ValueError) as info:
    inference.load_model(workdir_copy)
  message = str(info.value)
  # A flipped frame that still decodes is told by the hashes; one that does not, by tensorstore.
  assert re.match(rf"the checkpoint of step 4 in {re.escape(str(workdir_copy))} is damaged \((\d+ of its parameter "
                  r"arrays differ from what was saved \(|incomplete or corrupt: )", message), message
  assert message.endswith("; pass --checkpoint with one of the intact steps [2].")
  inference.load_model(workdir_copy, "2")  # the intact one still loads
