"""Linear light: the sRGB curve against its published points, every code round trips, and light (not codes)
averages."""

import numpy as np

from simplenet_jax.data.synthesis import linear_light


def test_linear_light_average_of_black_and_white_is_188_not_128():
  black, white = np.zeros((2, 3, 3), np.uint8), np.full((2, 3, 3), 255, np.uint8)
  average = linear_light.uint8_from_linear(
      np.mean([linear_light.linear_from_uint8(f) for f in (black, white)], axis=0))
  # Reference: the sRGB curve by hand, 1.055·0.5^(1/2.4) − 0.055 = 0.7354 → 187.5 → 188.
  expected = round((1.055 * 0.5 ** (1 / 2.4) - 0.055) * 255)
  assert expected == 188
  np.testing.assert_array_equal(average, np.full((2, 3, 3), 188, np.uint8))


def test_srgb_conversion_round_trips_every_code():
  codes = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(linear_light.uint8_from_linear(linear_light.linear_from_uint8(codes)), codes)
  # Two published points of the sRGB curve (IEC 61966-2-1): 0.5 → 0.2140, 0.04045 is the linear-segment knee.
  np.testing.assert_allclose(linear_light.srgb_to_linear(np.array([0.5, 0.04045])), [0.21404, 0.04045 / 12.92],
                             rtol=1e-4)
