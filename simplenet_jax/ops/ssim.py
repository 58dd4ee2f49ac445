"""Structural similarity (Wang et al. 2004) with Gaussian windows, as a pure batched function.

``ssim_map`` computes the SSIM index map with a separable Gaussian window over any set of axes, with either
"valid" filtering (windows wholly inside the image; scikit-image then crops the border that padding touched,
so the padding mode never matters) or "edge" (replicate) padding (MATLAB's ``imgaussfilt``/``imgaussfilt3``).
The two metric conventions of SPEC §5 are built on it in ``simplenet_jax.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Padding = Literal["valid", "edge"]


def gaussian_taps(sigma: float = 1.5, radius: int = 5) -> np.ndarray:
  """Normalised 1-D Gaussian window of 2·radius + 1 taps (MATLAB: radius = ceil(3σ); scipy: truncate·σ)."""
  offsets = np.arange(-radius, radius + 1, dtype=np.float64)
  taps = np.exp(-0.5 * (offsets / sigma) ** 2)
  return taps / taps.sum()


def gaussian_filter(x: jax.Array, taps: np.ndarray, axes: Sequence[int], padding: Padding) -> jax.Array:
  """Separable Gaussian filter along ``axes``; "valid" shrinks each axis by len(taps) − 1."""
  radius = len(taps) // 2
  for axis in axes:
    axis = axis % x.ndim
    if padding == "edge":
      pad = [(0, 0)] * x.ndim
      pad[axis] = (radius, radius)
      x = jnp.pad(x, pad, mode="edge")
    length = x.shape[axis] - 2 * radius
    x = sum(float(t) * jax.lax.slice_in_dim(x, i, i + length, axis=axis) for i, t in enumerate(taps))
  return x


def ssim_map(
    x: jax.Array,
    y: jax.Array,
    *,
    axes: Sequence[int],
    padding: Padding,
    data_range: float = 255.0,
    sigma: float = 1.5,
    radius: int = 5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
  """SSIM index map, ``(2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`` (Wang et al. eq. 13).

  Local statistics are Gaussian-weighted means over ``axes`` with population (not sample) covariance, as
  MATLAB's ``ssim`` and scikit-image with ``use_sample_covariance=False`` compute them.

  Precision: float64 when x64 is enabled (``with jax.enable_x64(True):``; evaluation does this, and it matches
  scipy/scikit-image to ~1e-12), else float32, whose cancellation in ``E[x²] − μ²`` costs up to ~2e-6 of
  mean SSIM on 8-bit photos. Both images are shifted by ``−data_range/2`` first (SSIM only uses differences
  of means and centred moments), which keeps that cancellation small.
  """
  dtype = jnp.float64 if jax.config.x64_enabled else jnp.float32
  shift = data_range / 2
  x = jnp.asarray(x, dtype) - shift
  y = jnp.asarray(y, dtype) - shift
  taps = gaussian_taps(sigma, radius)

  def blur(v):
    return gaussian_filter(v, taps, axes, padding)

  mu_x, mu_y = blur(x), blur(y)
  var_x = blur(x * x) - mu_x * mu_x
  var_y = blur(y * y) - mu_y * mu_y
  cov_xy = blur(x * y) - mu_x * mu_y
  # μ of the unshifted images, for the luminance term
  mu_x, mu_y = mu_x + shift, mu_y + shift
  c1 = (k1 * data_range) ** 2
  c2 = (k2 * data_range) ** 2
  return ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
