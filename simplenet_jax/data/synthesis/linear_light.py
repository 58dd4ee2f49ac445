"""Linear light: the sRGB transfer function (IEC 61966-2-1) and 8-bit sRGB codes ↔ linear light.

A sensor integrates light, so the sub-frames of an exposure are averaged (and sampled, and recoloured) in
linear light. Averaging the sRGB codes instead (GoPro's `blur_gamma`) darkens every edge: black and white
average to 128 that way but to 188 in linear light.
"""

from __future__ import annotations

import numpy as np


def srgb_to_linear(srgb: np.ndarray) -> np.ndarray:
  """The sRGB transfer function inverted (IEC 61966-2-1): sRGB values in [0, 1] to linear light."""
  srgb = np.asarray(srgb, dtype=np.float64)
  return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
  """Linear light in [0, 1] to sRGB values in [0, 1]."""
  linear = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
  return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


# Linear light of each 8-bit sRGB code, so photos convert with one lookup.
_LINEAR_OF_CODE = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)


def linear_from_uint8(pixels: np.ndarray) -> np.ndarray:
  """float32 linear light of uint8 sRGB pixels."""
  return _LINEAR_OF_CODE[pixels]


def uint8_from_linear(linear: np.ndarray) -> np.ndarray:
  """uint8 sRGB pixels of linear light, clipped at black and white."""
  return np.round(linear_to_srgb(linear) * 255.0).astype(np.uint8)
