"""PSNR and SSIM on uint8 RGB images, in the two conventions of SPEC §5.

* ``"matlab"`` (default; the paper used MATLAB R2019b's built-ins): ``ssim(A, ref)`` on the H×W×3 uint8
  array treats it as a **3-D volume** — a 3-D Gaussian window (σ = 1.5, 11 taps, replicate padding) that
  also mixes the colour channels — and averages the map over every voxel.
* ``"python"``: per-channel 2-D Gaussian SSIM, as ``skimage.metrics.structural_similarity(…,
  channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)``: only
  windows wholly inside the image count, and the channel means are averaged.

The two differ a lot on the same pair, so every reported SSIM names its convention. PSNR is the same in
both: ``10·log10(255² / MSE)`` over all H·W·3 values.

All functions take ``[H, W, 3]`` or batched ``[N, H, W, 3]`` uint8 arrays and are jit-able, and run on the
device in float32 (TPUs have no float64): SSIM within 1e-6 of the float64 references on 8-bit photos
(`ops.ssim` says how), PSNR from an exact integer sum of squared errors (within 1e-6 dB). Under
``jax.enable_x64(True)`` both are float64 (equal to the references to ~1e-12).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from simplenet_jax.ops import ssim as ssim_ops

Convention = Literal["matlab", "python"]
CONVENTIONS = ("matlab", "python")
_WINDOW = 11  # 2·ceil(3σ) + 1 for σ = 1.5


def _check_pair(pred, target, what: str) -> None:
  for name, image in (("pred", pred), ("target", target)):
    if image.ndim not in (3, 4) or image.shape[-1] != 3:
      raise ValueError(f"{what}: {name} must be an RGB image [H, W, 3] or batch [N, H, W, 3], "
                       f"got shape {tuple(image.shape)}.")
    if image.dtype != jnp.uint8:
      raise ValueError(f"{what}: {name} has dtype {image.dtype}, but metrics compare 8-bit images as saved "
                       "PNGs hold them; convert [0, 1] floats with simplenet_jax.photos.to_uint8 first.")
  if pred.shape != target.shape:
    raise ValueError(f"{what}: pred shape {tuple(pred.shape)} differs from target shape "
                     f"{tuple(target.shape)}.")


# Squared errors of 8-bit values are at most 255² = 65025, so 32768 of them sum exactly in int32.
_EXACT_BLOCK = 1 << 15


def psnr(pred: jax.Array, target: jax.Array) -> jax.Array:
  """``10·log10(255² / MSE)`` over all H·W·3 values of each image (inf for identical images).

  The sum of squared errors is exact: int32 sums of blocks of 32768, split into their high and low 16
  bits, each summed exactly in int32 (for images up to 10⁹ values), then one rounding to float.
  """
  _check_pair(pred, target, "psnr")
  dtype = jnp.float64 if jax.config.x64_enabled else jnp.float32
  diff = pred.astype(jnp.int32) - target.astype(jnp.int32)
  squared = (diff * diff).reshape(*diff.shape[:-3], -1)
  count = squared.shape[-1]
  if count > _EXACT_BLOCK * _EXACT_BLOCK:
    raise ValueError(f"psnr: images of more than {_EXACT_BLOCK ** 2} values are not supported, got {count}.")
  squared = jnp.pad(squared, [(0, 0)] * (squared.ndim - 1) + [(0, -count % _EXACT_BLOCK)])
  blocks = squared.reshape(*squared.shape[:-1], -1, _EXACT_BLOCK).sum(axis=-1)  # each < 2³¹
  high, low = (blocks >> 16).sum(axis=-1), (blocks & 0xFFFF).sum(axis=-1)
  mse = (high.astype(dtype) * 65536 + low.astype(dtype)) / count
  return 10.0 * jnp.log10(255.0 ** 2 / mse)


def colour_shift(pred: jax.Array, target: jax.Array) -> jax.Array:
  """The largest |mean of a channel of pred − mean of that channel of target| of each image, in 8-bit levels:
  how far a colour cast moves the image (the pixels' own errors average out; a cast does not).

  Each row's channel sums are exact in int32; their sum is one float rounding (1e-7 of the mean).
  """
  _check_pair(pred, target, "colour_shift")
  dtype = jnp.float64 if jax.config.x64_enabled else jnp.float32

  def channel_means(image):
    rows = image.astype(jnp.int32).sum(axis=-2)  # [..., H, 3], each at most 255·W
    return rows.astype(dtype).sum(axis=-2) / (image.shape[-3] * image.shape[-2])

  return jnp.abs(channel_means(pred) - channel_means(target)).max(axis=-1)


def ssim(pred: jax.Array, target: jax.Array, convention: Convention = "matlab") -> jax.Array:
  """Mean SSIM of each image in the given convention (see the module docstring)."""
  _check_pair(pred, target, "ssim")
  if convention not in CONVENTIONS:
    raise ValueError(f'ssim: convention must be one of {CONVENTIONS}, got {convention!r}.')
  if convention == "python" and min(pred.shape[-3:-1]) < _WINDOW:
    raise ValueError(f"ssim: the python convention needs images of at least {_WINDOW}×{_WINDOW} pixels "
                     f"(its Gaussian window), got {pred.shape[-3]}×{pred.shape[-2]}.")
  return _mean_ssim(pred, target, convention)


@functools.partial(jax.jit, static_argnames="convention")  # compiled once per shape: 2–3× faster than eager
def _mean_ssim(pred: jax.Array, target: jax.Array, convention: Convention) -> jax.Array:
  if convention == "matlab":
    # The H×W×3 array is one 3-D volume: filter rows, columns and the colour axis, replicate padding.
    ssim_map = ssim_ops.ssim_map(pred, target, axes=(-3, -2, -1), padding="edge")
  else:
    # Each channel alone in 2-D; "valid" windows are exactly the map that scikit-image keeps after cropping.
    ssim_map = ssim_ops.ssim_map(pred, target, axes=(-3, -2), padding="valid")
  # One axis at a time: float32 sums of at most a row's length rather than of millions of values.
  return ssim_map.mean(axis=-1).mean(axis=-1).mean(axis=-1)
