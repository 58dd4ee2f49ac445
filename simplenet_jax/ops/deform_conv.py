"""Deformable convolution (DCNv1, Dai et al. 2017; DCNv2, Zhu et al. 2019) by bilinear gather.

The contract is SPEC §2 and matches `torchvision.ops.deform_conv2d` one to one, in NHWC:

* ``x``       ``[N, H, W, Cin]``
* ``offset``  ``[N, Ho, Wo, 2·G·kh·kw]``; for offset group ``g`` and kernel point ``k`` (row-major over
  ``kh, kw``), channel ``g·2·kh·kw + 2k`` is the **y** (row) offset and ``+1`` the **x** (column) offset.
* ``mask``    ``[N, Ho, Wo, G·kh·kw]`` (modulation, DCNv2) or ``None`` (DCNv1).
* ``kernel``  ``[kh, kw, Cin, Cout]`` (Flax HWIO); no bias.

Offset group ``g`` deforms input channels ``g·Cin/G … (g+1)·Cin/G − 1``. Sampling is bilinear and a neighbour
outside the image contributes zero, so a sample more than one pixel outside the image is exactly zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

IntPair = int | Sequence[int]


def _pair(value: IntPair, name: str) -> tuple[int, int]:
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
    raise ValueError(f"deform_conv2d: {name}={value!r} must be an int or a pair of ints.")
  return pair  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
  """Output length of a convolution along one axis (as torch and lax compute it)."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_shapes(x, offset, mask, kernel, out_hw):
  """Raises one ValueError sentence for a shape that breaks the contract; returns the offset group count."""
  if x.ndim != 4:
    raise ValueError(f"deform_conv2d: x must be [N, H, W, Cin], got shape {x.shape}.")
  if kernel.ndim != 4:
    raise ValueError(f"deform_conv2d: kernel must be [kh, kw, Cin, Cout], got shape {kernel.shape}.")
  n, _, _, cin = x.shape
  kh, kw, kin, _ = kernel.shape
  if kin != cin:
    raise ValueError(f"deform_conv2d: kernel has {kin} input channels but x has {cin}.")
  ho, wo = out_hw
  if ho < 1 or wo < 1:
    raise ValueError(f"deform_conv2d: the output would be {ho}×{wo}; the input {x.shape[1:3]} is too small.")
  k = kh * kw
  if offset.ndim != 4 or offset.shape[:3] != (n, ho, wo) or offset.shape[-1] % (2 * k):
    raise ValueError(
        f"deform_conv2d: offset must be [{n}, {ho}, {wo}, 2·G·{k}] for this input and kernel, "
        f"got shape {offset.shape}.")
  groups = offset.shape[-1] // (2 * k)
  if groups == 0 or cin % groups:
    raise ValueError(f"deform_conv2d: {groups} offset groups do not divide the {cin} input channels.")
  if mask is not None and mask.shape != (n, ho, wo, groups * k):
    raise ValueError(
        f"deform_conv2d: mask must be [{n}, {ho}, {wo}, {groups * k}] (G·kh·kw) or None, got {mask.shape}.")
  return groups


def bilinear_sample(image: jax.Array, y: jax.Array, x: jax.Array) -> jax.Array:
  """Samples ``image [H, W, C]`` at real positions ``y, x`` (any equal shapes S) → ``[*S, C]``.

  Bilinear between the four integer neighbours; a neighbour outside the image contributes zero
  (torchvision's ``bilinear_interpolate`` in ``deform_conv2d``).
  """
  height, width, _ = image.shape
  y0 = jnp.floor(y)
  x0 = jnp.floor(x)
  ly, lx = y - y0, x - x0
  y0 = y0.astype(jnp.int32)
  x0 = x0.astype(jnp.int32)
  flat = image.reshape(height * width, -1)
  out = 0.0
  for dy, wy in ((0, 1 - ly), (1, ly)):
    for dx, wx in ((0, 1 - lx), (1, lx)):
      yi, xi = y0 + dy, x0 + dx
      inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
      index = jnp.where(inside, yi * width + xi, 0)
      weight = jnp.where(inside, wy * wx, 0.0).astype(image.dtype)
      out = out + weight[..., None] * jnp.take(flat, index, axis=0)
  return out


def deform_conv2d(
    x: jax.Array,
    offset: jax.Array,
    mask: jax.Array | None,
    kernel: jax.Array,
    *,
    stride: IntPair = 1,
    padding: IntPair = 1,
    dilation: IntPair = 1,
) -> jax.Array:
  """Modulated deformable convolution, ``y[p] = Σ_k w_k · m_k · x(p·s − pad + k·d + Δp_k)`` (DCNv2 eq. 3).

  Pure and jit-able; float32 or float64 (the result has the promoted dtype of ``x`` and ``kernel``).
  Gradients with respect to all four arrays come from JAX autodiff of the bilinear gather.

  Args:
    x: ``[N, H, W, Cin]`` input.
    offset: ``[N, Ho, Wo, 2·G·kh·kw]`` sampling offsets in pixels, (y, x) pairs, torchvision layout.
    mask: ``[N, Ho, Wo, G·kh·kw]`` modulation scalars, or ``None`` for DCNv1 (all ones).
    kernel: ``[kh, kw, Cin, Cout]`` weights.
    stride, padding, dilation: ints or (row, column) pairs, as in a regular convolution.

  Returns:
    ``[N, Ho, Wo, Cout]``.
  """
  sh, sw = _pair(stride, "stride")
  ph, pw = _pair(padding, "padding")
  dh, dw = _pair(dilation, "dilation")
  kh, kw = kernel.shape[:2] if kernel.ndim == 4 else (0, 0)
  ho = output_size(x.shape[1], kh, sh, ph, dh) if x.ndim == 4 else 0
  wo = output_size(x.shape[2], kw, sw, pw, dw) if x.ndim == 4 else 0
  groups = _check_shapes(x, offset, mask, kernel, (ho, wo))
  n, _, _, cin = x.shape
  k = kh * kw
  dtype = jnp.result_type(x.dtype, offset.dtype)

  # Regular-grid sampling position of kernel point (i, j) for output (r, c): r·s − pad + i·d.
  grid_y = (jnp.arange(ho) * sh - ph)[:, None, None] + jnp.repeat(jnp.arange(kh) * dh, kw)[None, None, :]
  grid_x = (jnp.arange(wo) * sw - pw)[None, :, None] + jnp.tile(jnp.arange(kw) * dw, kh)[None, None, :]
  offset = offset.reshape(n, ho, wo, groups, k, 2).astype(dtype)
  pos_y = grid_y[None, :, :, None, :].astype(dtype) + offset[..., 0]  # [N, Ho, Wo, G, K]
  pos_x = grid_x[None, :, :, None, :].astype(dtype) + offset[..., 1]

  # One gather per (image, offset group): each group samples only its own slice of input channels.
  x_groups = x.reshape(n, *x.shape[1:3], groups, cin // groups).transpose(0, 3, 1, 2, 4)  # [N,G,H,W,Cg]
  sample = jax.vmap(jax.vmap(bilinear_sample, in_axes=(0, 2, 2), out_axes=2))
  columns = sample(x_groups, pos_y, pos_x)  # [N, Ho, Wo, G, K, Cg]
  if mask is not None:
    columns = columns * mask.reshape(n, ho, wo, groups, k, 1).astype(columns.dtype)
  # im2col layout [.., K, Cin] with Cin ordered (group, channel-in-group), as the kernel's Cin axis is.
  columns = columns.transpose(0, 1, 2, 4, 3, 5).reshape(n, ho, wo, k, cin)
  return jnp.einsum("nhwkc,kco->nhwo", columns, kernel.reshape(k, cin, -1))
