"""Camera shake: a still camera is the identity, a shifting one matches NumPy's average of shifted crops, and
random shakes are centred on the middle (sharp) sub-frame."""

import numpy as np

from simplenet_jax.data.synthesis import camera_shake
from simplenet_jax.data.synthesis import linear_light


def test_zero_length_random_shake_is_still():
  shake = camera_shake.random_shake(np.random.default_rng(0), 0.0, (32, 32), camera_shake.BlurSettings())
  np.testing.assert_array_equal(shake.homographies(), np.broadcast_to(np.eye(3), (shake.num_sub_frames, 3, 3)))


def test_shifting_camera_matches_average_of_shifted_crops():
  """Whole-pixel shifts with an (almost) infinite focal length are pure translations; the reference averages
  the shifted crops of the canvas in linear light with plain NumPy slicing."""
  rng = np.random.default_rng(3)
  canvas = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  height, width, margin = 20, 24, 5
  shifts = [(-3, 1), (-1, 0), (0, 0), (2, -1), (4, 2)]  # (x, y); the middle one is the sharp pose
  shake = camera_shake.Shake(np.array([complex(x, y) for x, y in shifts]), np.zeros(5), focal=1e12)
  got = camera_shake.render_blur(canvas, shake, height, width, margin)
  linear = linear_light.srgb_to_linear(canvas / 255.0)
  expected = np.mean([linear[margin + y:margin + y + height, margin + x:margin + x + width] for x, y in shifts],
                     axis=0)
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_random_shake_is_centred_on_the_middle_sub_frame():
  settings = camera_shake.BlurSettings()
  for seed, length in ((0, 3.0), (1, 12.0), (2, 30.0)):
    shake = camera_shake.random_shake(np.random.default_rng(seed), length, (256, 256), settings)
    middle = shake.num_sub_frames // 2
    assert shake.num_sub_frames % 2 == 1
    assert settings.min_sub_frames <= shake.num_sub_frames <= settings.max_sub_frames
    assert shake.offsets[middle] == 0 and shake.rolls[middle] == 0
    np.testing.assert_array_equal(shake.homographies()[middle], np.eye(3))
    # The sub-frames sample a path of that length; a polyline through samples is at most as long.
    assert 0.5 * length <= shake.path_length <= length + 1e-9
    assert np.abs(shake.rolls).max() <= np.deg2rad(settings.max_roll_deg) + 1e-12
