"""The simple deformable convolution: one bilinear gather per corner, then an einsum; gradients by autodiff.

This is the first implementation of SPEC §2, kept as the readable reference that `deform_conv2d`
(`ops/deform_conv.py`, custom VJP, tiled) is tested and benchmarked against. It is easy to check by eye but
slow to train: autodiff turns each of its gathers into a scatter-add over the whole im2col array
(`benchmarks/deform_conv.py` has the numbers). Same contract, same arguments, same errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from simplenet_jax.ops.deform_conv import IntPair
from simplenet_jax.ops.deform_conv import check_shapes
from simplenet_jax.ops.deform_conv import output_size
from simplenet_jax.ops.deform_conv import to_pair


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


def deform_conv2d_reference(
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

  The arguments, shapes and result are those of `simplenet_jax.ops.deform_conv2d` (SPEC §2); gradients
  with respect to all four arrays come from JAX autodiff of the bilinear gather.
  """
  sh, sw = to_pair(stride, "stride")
  ph, pw = to_pair(padding, "padding")
  dh, dw = to_pair(dilation, "dilation")
  kh, kw = kernel.shape[:2] if kernel.ndim == 4 else (0, 0)
  ho = output_size(x.shape[1], kh, sh, ph, dh) if x.ndim == 4 else 0
  wo = output_size(x.shape[2], kw, sw, pw, dw) if x.ndim == 4 else 0
  groups = check_shapes(x, offset, mask, kernel, (ho, wo))
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
