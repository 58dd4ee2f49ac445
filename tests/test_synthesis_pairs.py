"""One pair: a still camera gives blur == sharp, augmentations reach both alike, every dihedral turn keeps the
shape, each colour change matches its formula, and the camera's JPEG reaches the input only."""

import dataclasses

import numpy as np
import pytest
from PIL import Image
from skimage import metrics as sk_metrics

from simplenet_jax.data.synthesis import camera_shake
from simplenet_jax.data.synthesis import pairs


def textured_photo(seed: int, height: int = 120, width: int = 150) -> Image.Image:
  """A textured RGB test photo: smooth colour gradients plus random blocks, so blur changes it everywhere."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3)).repeat(6, 0).repeat(6, 1)[:height, :width]
  ramp = np.linspace(0, 255, width)[None, :, None]
  return Image.fromarray(((blocks + ramp) / 2).astype(np.uint8))


def test_still_camera_gives_blur_equal_to_sharp():
  settings = dataclasses.replace(camera_shake.BlurSettings(), noise=0.0)
  pair = pairs.synthesize_pair(textured_photo(0), np.random.default_rng(1), 48, 64, settings,
                               shake=camera_shake.Shake.still(15))
  assert pair.blur.shape == pair.sharp.shape == (48, 64, 3)
  np.testing.assert_array_equal(pair.blur, pair.sharp)
  assert pair.info["trajectory_length_px"] == 0 and pair.info["input_psnr_db"] == float("inf")


def test_augmentations_reach_blur_and_sharp_identically():
  """With a still camera, no noise and no JPEG, the blurred image is the recoloured sharp one exactly."""
  settings = dataclasses.replace(camera_shake.BlurSettings(), noise=0.0, jpeg_fraction=0.0)
  plain = pairs.synthesize_pair(textured_photo(3), np.random.default_rng(4), 40, 64, settings,
                                shake=camera_shake.Shake.still(15))
  changed = pairs.synthesize_pair(textured_photo(3), np.random.default_rng(4), 40, 64, settings,
                                  shake=camera_shake.Shake.still(15), augment=pairs.Augmentations())
  assert changed.blur.shape == changed.sharp.shape == (40, 64, 3)
  np.testing.assert_array_equal(changed.blur, changed.sharp)
  assert np.abs(changed.sharp.astype(float) - plain.sharp).mean() > 10  # the augmentation did change the crop


@pytest.mark.parametrize("height,width", [(40, 64), (64, 40), (33, 33)])
def test_dihedral_canvas_has_the_requested_shape_for_every_turn(height, width):
  photo = textured_photo(1, 120, 150)
  turns = set()
  for seed in range(12):
    canvas, _ = pairs.random_canvas(photo, np.random.default_rng(seed), height, width, dihedral=True)
    assert canvas.shape == (height, width, 3)
    turns.add(int(np.random.default_rng(seed).integers(4)))
  assert turns == {0, 1, 2, 3}


def test_hue_rotation_is_scipys_rotation_about_the_gray_axis():
  from scipy.spatial.transform import Rotation  # pylint: disable=g-import-not-at-top
  for angle in (0.3, -2.0, np.pi):
    expected = Rotation.from_rotvec(angle * np.ones(3) / np.sqrt(3)).as_matrix()
    np.testing.assert_allclose(pairs.hue_rotation(angle), expected, atol=1e-12)


def _only(**fields) -> pairs.Augmentations:
  off = dict(dihedral=False, permute_channels=False, max_hue_deg=0.0, saturation=1.0, white_balance=1.0,
             exposure=1.0)
  return pairs.Augmentations(**{**off, **fields})


def test_each_colour_change_matches_its_formula():
  """Each change alone, on random linear colours, against a direct NumPy formula of what it means."""
  colours = np.random.default_rng(0).random((50, 3))
  rng = np.random.default_rng(7)
  matrix, info = pairs.colour_transform(rng, _only())
  np.testing.assert_allclose(matrix, np.eye(3), atol=1e-12)

  matrix, info = pairs.colour_transform(rng, _only(permute_channels=True))
  order = ["RGB".index(c) for c in info["channel_order"]]
  np.testing.assert_allclose(colours @ matrix, colours[:, order], atol=1e-12)

  matrix, info = pairs.colour_transform(rng, _only(saturation=2.0))
  s = info["saturation"]
  mean = colours.mean(axis=1, keepdims=True)
  np.testing.assert_allclose(colours @ matrix, mean + s * (colours - mean), atol=1e-3)
  assert 0.5 <= s <= 2.0 and abs(s - 1) > 1e-3

  matrix, info = pairs.colour_transform(rng, _only(white_balance=1.3, exposure=1.5))
  gains = np.array(info["white_balance"]) * info["exposure"]
  np.testing.assert_allclose(colours @ matrix, colours * gains, atol=1e-2)
  assert all(1 / 1.3 - 1e-3 <= g <= 1.3 + 1e-3 for g in info["white_balance"])

  matrix, info = pairs.colour_transform(rng, _only(max_hue_deg=90.0))
  gray = np.full((1, 3), 0.4)
  np.testing.assert_allclose(gray @ matrix, gray, atol=1e-12)  # gray stays gray
  np.testing.assert_allclose(np.linalg.norm(colours @ matrix, axis=1), np.linalg.norm(colours, axis=1), atol=1e-12)
  assert abs(info["hue_deg"]) <= 90


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
  with np.errstate(divide="ignore"):  # identical images: inf dB
    return sk_metrics.peak_signal_noise_ratio(a, b, data_range=255)


def test_jpeg_inputs_are_lossy_but_close_and_targets_stay_lossless():
  """The camera's JPEG reaches the input only; it matches OpenCV's JPEG at the same quality closely."""
  import cv2  # pylint: disable=g-import-not-at-top  (an independent JPEG encoder)
  settings = dataclasses.replace(camera_shake.BlurSettings(), noise=0.0, jpeg_quality=(80, 80))
  made = {fraction: pairs.synthesize_pair(textured_photo(5), np.random.default_rng(0), 48, 64,
                                          dataclasses.replace(settings, jpeg_fraction=fraction))
          for fraction in (0.0, 1.0)}
  plain, jpeg = made[0.0], made[1.0]
  assert plain.info["jpeg_quality"] == 0 and jpeg.info["jpeg_quality"] == 80
  np.testing.assert_array_equal(jpeg.sharp, plain.sharp)
  assert not np.array_equal(jpeg.blur, plain.blur)
  assert 25 < _psnr(jpeg.blur, plain.blur) < 45
  _, encoded = cv2.imencode(".jpg", plain.blur[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
  reference = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
  assert _psnr(jpeg.blur, reference) > _psnr(jpeg.blur, plain.blur) + 5


def test_near_sharp_pairs_move_at_most_min_length():
  photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8))
  settings = dataclasses.replace(camera_shake.BlurSettings(), near_sharp_fraction=1.0, jpeg_fraction=0.0)
  lengths = [pairs.synthesize_pair(photo, np.random.default_rng(k), 32, 32, settings).info["trajectory_length_px"]
             for k in range(6)]
  assert max(lengths) <= settings.min_length and len(set(lengths)) == 6



def test_a_noisy_target_carries_the_inputs_own_noise():
  """With `target_noise`, a still camera's target is its noisy input exactly, and a moving camera's target is
  the clean sharp crop plus the input's noise draw: the same blurred input, a target that differs from the
  clean one by noise of the drawn size, on average nothing."""
  settings = dataclasses.replace(camera_shake.BlurSettings(), noise=0.05, jpeg_fraction=0.0)
  noisy = dataclasses.replace(settings, target_noise=True)
  still = pairs.synthesize_pair(textured_photo(6), np.random.default_rng(2), 40, 56, noisy,
                                shake=camera_shake.Shake.still(15))
  assert still.info["noise_sigma"] > 0.005
  np.testing.assert_array_equal(still.sharp, still.blur)
  shake = camera_shake.random_shake(np.random.default_rng(7), 12.0, (40, 56), settings)
  clean, kept = (pairs.synthesize_pair(textured_photo(6), np.random.default_rng(2), 40, 56, s, shake=shake)
                 for s in (settings, noisy))
  np.testing.assert_array_equal(kept.blur, clean.blur)
  linear = [camera_shake.linear_light.linear_from_uint8(p.sharp).astype(np.float64) for p in (clean, kept)]
  added = linear[1] - linear[0]
  sigma = kept.info["noise_sigma"]
  assert sigma > 0.02  # several levels: the 8-bit rounding of the target is small beside it
  # The shot + read noise of the blurred image's levels.
  expected = sigma * np.sqrt(camera_shake.linear_light.linear_from_uint8(clean.blur).astype(np.float64) + 0.01)
  unclipped = (clean.sharp > 30) & (clean.sharp < 225)  # white and black clip the noise
  assert unclipped.mean() > 0.5
  assert np.std((added / expected)[unclipped]) == pytest.approx(1.0, abs=0.05)
  assert abs(np.mean((added / expected)[unclipped])) < 0.05
