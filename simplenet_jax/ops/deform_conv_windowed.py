"""Deformable convolution with bounded offsets, its sampling done by matmuls: the path for TPUs.

Same contract as `ops.deform_conv.deform_conv2d` (torchvision's, in NHWC), with one difference: every offset is
clipped to ``[-max_offset, max_offset]`` pixels first. For offsets inside that range the result is
torchvision's; beyond it, it is torchvision's on the clipped offsets, and the clipped offsets get no gradient.

Why a second path. A TPU keeps arrays in HBM as (8, 128) tiles, and XLA:TPU's gather reads a whole tile for
every index, whatever part of it the index uses: sampling one pixel's ``Cin`` channels for each of the
4 corners × 9 taps of every output pixel moves 10–60× the bytes it uses, and the deformable conv became ~58× a
plain conv of the same shape by XLA:TPU's cost model (`benchmarks/tpu_compile.py --dcn`). No gather layout
escapes that, because each sample's data is only 4 · Cin floats. Matmuls are what a TPU does best, so here
(4–7× the conv forward, 8–10× forward + backward, at the paper's shapes):

1. The output is cut into blocks of ``block × block`` pixels. With offsets bounded, every sample of a block
   falls inside one *window* of the input around it: ``(block − 1)·stride + (k − 1)·dilation + 2·max_offset + 3``
   pixels a side (its zero border included). The windows are cut from the zero-padded input by a gather of
   whole window rows (wide, contiguous slices, which XLA:TPU reads at full speed).
2. Bilinear sampling of a window is a matrix: sample ``s`` takes ``A[s, p] = m_s · tent(y_s − y_p) ·
   tent(x_s − x_p)`` of window pixel ``p``, ``tent(t) = max(0, 1 − |t|)``, which is the bilinear weight of
   the four neighbours and zero elsewhere (a neighbour in the zero border contributes zero, as in
   torchvision). The columns of im2col are then ``A · window``, one batched matmul per tile; XLA fuses the
   making of ``A`` into the matmul, so ``A`` never travels through HBM. The matmul spends ``P / 4`` times the
   FLOPs of the four-neighbour sum (``P`` window pixels), which a TPU's matrix unit has to spare.
3. The columns times the kernel is one more matmul, as in the gather path.
4. A custom VJP: the window gradient is ``Aᵀ · ∂columns``, added back to the image by the transpose of step
   1; the position gradients are ``⟨∂columns, A_y · window⟩`` with ``A_y = tent'(y_s − y_p) · tent(x_s −
   x_p)`` (the same kind of matmul; ``tent'`` is the one-sided derivative torchvision's kernel uses); the
   mask gradient is ``⟨∂columns, A₀ · window⟩`` with the unmodulated ``A₀``.
5. Layout. A TPU pads an array's two minor axes to (8, 128), so a per-sample array with its ``Cin`` channels
   minor (32 or 64 of them) takes 2–4× its size, and moving between layouts copies it. Every per-sample array
   keeps its long sample axis minor instead: the windows are ``[channels, pixels]``, the columns ``[channels,
   samples]``, and in the backward, where each per-sample array is read several times, ``[tap, block,
   channels, pixel]``, the layout XLA:TPU gives the kernel's transposed matmul. At 2×128²×64→64 that took the
   forward + backward from 12.2× a conv to 8.9×.

It is tiled like the gather path (``tile_bytes`` of float32 im2col per tile of output rows, a whole number of
blocks), which bounds its memory on a CPU, where ``A`` is built in full. On a CPU it is slower than the
gather path; it is chosen by the model's config (``config.model.dcn_max_offset``), never by the machine.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from simplenet_jax.ops import deform_conv as gather_path

# Output pixels a block side, by the input's channels (None; a test may fix one). With the paper's layers (3×3,
# dilation 1) and offsets ≤ 8, a block of 32 has a window of 52² = 2,704 pixels (2.6× the block's; the
# matmul's inner size), a block of 16 one of 36² (5.1×). Narrow inputs are bound by bytes, which the larger
# block's smaller overlap saves; from 128 channels the five window matmuls (2·P·Cin FLOPs a sample each) bind,
# and the smaller window wins. By XLA:TPU's cost model at the paper's six DCN shapes (`benchmarks/tpu_compile.py
# --dcn`), forward + backward against a plain conv, blocks of 32 / 16: 256²×32→32 8.1 / 12.1, 128²×64→64 8.9 /
# 11.7, 64²×128→128 10.3 / 8.3, 256²×128→32 10.8 / 9.2, 128²×256→64 11.6 / 9.4, 64²×512→128 10.9 / 9.5. Blocks
# of 24 (which divide no side of 256, 128, 64) gave 8.3–13.5×; of 48 and up and of 8, worse at every shape.
DEFAULT_BLOCK: int | None = None
NARROW_BLOCK, WIDE_BLOCK, WIDE_FROM_CHANNELS = 32, 16, 128


def default_block(channels: int) -> int:
  if DEFAULT_BLOCK:
    return DEFAULT_BLOCK
  return WIDE_BLOCK if channels >= WIDE_FROM_CHANNELS else NARROW_BLOCK


@dataclasses.dataclass(frozen=True)
class _Geometry(gather_path.ConvShape):
  """The matmul path's blocks, windows and tiles."""
  max_offset: float
  block: int
  blocks: tuple[int, int]  # blocks down, across (padded output: blocks · block)
  tile_blocks: int  # block rows per tile
  tiles: int

  @property
  def reach(self) -> int:
    """Window pixels before the block's first regular sample: the clipped offset, and one for the corner."""
    return math.ceil(self.max_offset) + 1

  @property
  def window(self) -> tuple[int, int]:
    return tuple((self.block - 1) * s + (k - 1) * d + 2 * self.reach + 1
                 for s, k, d in zip(self.stride, self.kernel_hw, self.dilation))

  @property
  def border(self) -> tuple[int, int]:
    """Zero rows/columns before the image so that every window starts inside the padded array."""
    return tuple(p + self.reach for p in self.padding)


def _padded_image(x: jax.Array, geo: _Geometry) -> jax.Array:
  (bt, bl), (hb, wb) = geo.border, geo.blocks
  (sh, sw), (wy, wx) = geo.stride, geo.window
  need_h = (hb - 1) * geo.block * sh + wy
  need_w = (wb - 1) * geo.block * sw + wx
  h, w = geo.in_hw
  return jnp.pad(x, ((0, 0), (bt, max(0, need_h - h - bt)), (bl, max(0, need_w - w - bl)), (0, 0)))


def _windows(x: jax.Array, geo: _Geometry) -> jax.Array:
  """``[N, hb, wb, G, wy·wx, Cin/G]``: the window of every block (step 1), by gathers of whole rows."""
  n, cin = x.shape[0], x.shape[-1]
  (hb, wb), (wy, wx), (sh, sw) = geo.blocks, geo.window, geo.stride
  padded = _padded_image(x, geo)
  rows = (jnp.arange(hb) * geo.block * sh)[:, None] + jnp.arange(wy)[None, :]  # [hb, wy]
  cols = (jnp.arange(wb) * geo.block * sw)[:, None] + jnp.arange(wx)[None, :]  # [wb, wx]
  win = padded.at[:, rows].get(mode="promise_in_bounds")  # [N, hb, wy, Wp, C]
  win = win.at[:, :, :, cols].get(mode="promise_in_bounds")  # [N, hb, wy, wb, wx, C]
  win = win.transpose(0, 1, 3, 2, 4, 5).reshape(n, hb, wb, wy * wx, geo.groups, cin // geo.groups)
  return win.transpose(0, 1, 2, 4, 5, 3)  # [N, hb, wb, G, Cin/G, P]


def _by_blocks(a: jax.Array, geo: _Geometry) -> jax.Array:
  """``[N, Ho, Wo, ...]`` → ``[N, hb, wb, block·block, ...]`` (zero-padded to whole blocks)."""
  n, ho, wo = a.shape[:3]
  (hb, wb), b = geo.blocks, geo.block
  a = jnp.pad(a, ((0, 0), (0, hb * b - ho), (0, wb * b - wo)) + ((0, 0),) * (a.ndim - 3))
  a = a.reshape(n, hb, b, wb, b, *a.shape[3:]).swapaxes(2, 3)
  return a.reshape(n, hb, wb, b * b, *a.shape[5:])


def _from_blocks(a: jax.Array, geo: _Geometry) -> jax.Array:
  """Inverse of `_by_blocks`, cropped to ``[N, Ho, Wo, ...]``."""
  n = a.shape[0]
  (hb, wb), b = geo.blocks, geo.block
  a = a.reshape(n, hb, wb, b, b, *a.shape[4:]).swapaxes(2, 3).reshape(n, hb * b, wb * b, *a.shape[4:])
  return a[:, :geo.out_hw[0], :geo.out_hw[1]]


class _Plan:
  """Sample positions in window coordinates, their modulation, and which offsets were clipped, by blocks:
  each ``[N, hb, wb, G, block²·K]`` (samples ordered by pixel, then tap), ``unclipped`` with a last axis (y, x)."""

  def __init__(self, offset, mask, geo: _Geometry, dtype):
    n, ho, wo = offset.shape[:3]
    k, g, b = geo.taps, geo.groups, geo.block
    kh, kw = geo.kernel_hw
    (h, w), (sh, sw), (ph, pw), (dh, dw) = geo.in_hw, geo.stride, geo.padding, geo.dilation
    offset = offset.astype(dtype).reshape(n, ho, wo, g, k, 2).swapaxes(3, 4)  # [N, Ho, Wo, K, G, 2]
    self.unclipped = jnp.abs(offset) <= geo.max_offset  # NaN: False (no gradient, as for a clipped offset)
    offset = jnp.clip(offset, -geo.max_offset, geo.max_offset)
    tap_y = jnp.repeat(jnp.arange(kh) * dh, kw)[:, None]  # [K, 1]
    tap_x = jnp.tile(jnp.arange(kw) * dw, kh)[:, None]
    rows, cols = jnp.arange(ho)[:, None, None, None], jnp.arange(wo)[None, :, None, None]
    # Image coordinates (torchvision's p·s − pad + k·d + Δp), for the "outside is zero" rule.
    image_y = (rows * sh - ph + tap_y).astype(dtype) + offset[..., 0]
    image_x = (cols * sw - pw + tap_x).astype(dtype) + offset[..., 1]
    inside = (image_y > -1) & (image_y < h) & (image_x > -1) & (image_x < w)
    # Window coordinates: the block's first output row starts its window `reach` pixels before its first tap.
    local_y = ((rows % b) * sh + tap_y + geo.reach).astype(dtype) + offset[..., 0]
    local_x = ((cols % b) * sw + tap_x + geo.reach).astype(dtype) + offset[..., 1]
    m = jnp.ones(local_y.shape, dtype) if mask is None else (
        mask.astype(dtype).reshape(n, ho, wo, g, k).swapaxes(3, 4))
    self.mask = _samples_by_blocks(m, geo)
    self.inside = _samples_by_blocks(inside, geo)  # padded outputs are outside: zero
    self.y, self.x = _samples_by_blocks(local_y, geo), _samples_by_blocks(local_x, geo)
    self.unclipped = _samples_by_blocks(self.unclipped, geo)


def _samples_by_blocks(a: jax.Array, geo: _Geometry) -> jax.Array:
  """``[N, Ho, Wo, K, G, ...]`` → ``[N, hb, wb, G, K·block², ...]``."""
  a = _by_blocks(a, geo)  # [N, hb, wb, block², K, G, ...]
  a = jnp.moveaxis(jnp.moveaxis(a, 5, 3), 5, 4)  # [N, hb, wb, G, K, block², ...]
  return a.reshape(*a.shape[:4], -1, *a.shape[6:])


def _samples_from_blocks(a: jax.Array, geo: _Geometry) -> jax.Array:
  """Inverse of `_samples_by_blocks` (for one value per sample): ``[N, Ho, Wo, K, G]``."""
  a = a.reshape(*a.shape[:4], geo.taps, geo.block ** 2)
  return _from_blocks(jnp.moveaxis(jnp.moveaxis(a, 5, 3), 5, 4), geo)


def _tent(t):
  return jnp.maximum(0, 1 - jnp.abs(t))


def _tent_slope(t):
  """d tent(t)/dt as torchvision's kernel takes it at the kinks: the slope of the segment to the right."""
  return jnp.where((t >= -1) & (t < 0), 1, jnp.where((t >= 0) & (t < 1), -1, 0)).astype(t.dtype)


def _window_grid(geo: _Geometry, dtype):
  wy, wx = geo.window
  return (jnp.repeat(jnp.arange(wy), wx).astype(dtype), jnp.tile(jnp.arange(wx), wy).astype(dtype))


def _sample(weights: jax.Array, win: jax.Array) -> jax.Array:
  """``weights [B, samples, P]`` × ``win [B, C, P]`` → ``[B, C, samples]``, B = (N, block rows, blocks, G).

  Every per-sample array of a tile has this one batch axis: XLA:TPU would lay a separate unit G axis out as a
  padded tile row and copy between layouts."""
  return jnp.einsum("bsp,bcp->bcs", weights, win, preferred_element_type=jnp.promote_types(weights.dtype,
                                                                                           jnp.float32))


def _unmerged(a, geo):
  """``[B, Cin/G, K·block²]`` → ``[N, tb, wb, G, Cin/G, K, block²]``."""
  return a.reshape(-1, geo.tile_blocks, geo.blocks[1], geo.groups, a.shape[1], geo.taps, geo.block ** 2)


def _conv_of(samples, kernel_2d, geo, compute):
  k4 = kernel_2d.reshape(geo.taps, geo.groups, -1, kernel_2d.shape[-1])
  return jnp.einsum("ntwgckq,kgco->ntwqo", _unmerged(samples, geo), k4, preferred_element_type=compute)


def _merged(a: jax.Array) -> jax.Array:
  """``[N, tb, wb, G, ...]`` → ``[N·tb·wb·G, ...]``."""
  return a.reshape(-1, *a.shape[4:])


def _tile(a, t, geo: _Geometry):
  return lax.dynamic_slice_in_dim(a, t * geo.tile_blocks, geo.tile_blocks, axis=1)


def _put(a, v, t, geo: _Geometry):
  return lax.dynamic_update_slice_in_dim(a, v.astype(a.dtype), t * geo.tile_blocks, axis=1)


def _over_tiles(body, carry, invariants, geo: _Geometry):
  if geo.tiles == 1:
    return body(0, carry, invariants)
  return lax.fori_loop(0, geo.tiles, lambda t, s: (body(t, s[0], s[1]), s[1]), (carry, invariants))[0]


def _pad_blocks(a, geo: _Geometry):
  extra = geo.tiles * geo.tile_blocks - a.shape[1]
  return a if extra == 0 else jnp.pad(a, ((0, 0), (0, extra)) + ((0, 0),) * (a.ndim - 2))


def _parts(x, offset, mask, kernel, geo: _Geometry):
  compute, operand = gather_path._dtypes(x, offset, mask, kernel)
  plan = _Plan(offset, mask, geo, compute)
  win = _pad_blocks(_windows(x, geo), geo)
  fields = [_pad_blocks(a, geo) for a in (plan.y, plan.x, plan.mask, plan.inside, plan.unclipped)]
  return compute, operand, win, fields


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _deform_conv(x, offset, mask, kernel, geo: _Geometry):
  return _forward(x, offset, mask, kernel, geo)[0]


def _forward(x, offset, mask, kernel, geo: _Geometry):
  compute, operand, win, fields = _parts(x, offset, mask, kernel, geo)
  n, cin, cout = x.shape[0], x.shape[-1], kernel.shape[-1]
  wb = geo.blocks[1]
  kernel_2d = kernel.reshape(geo.taps * cin, cout).astype(operand)
  grid_y, grid_x = _window_grid(geo, compute)
  out_dtype = jnp.result_type(x.dtype, kernel.dtype)

  def tile(t, out, invariants):
    win, kernel_2d, fields = invariants
    y, x_, m, inside = (_merged(_tile(a, t, geo))[..., None] for a in fields[:4])
    weights = (m * inside) * _tent(y - grid_y) * _tent(x_ - grid_x)  # A, [B, samples, P]
    samples = _sample(weights.astype(operand), _merged(_tile(win, t, geo)).astype(operand)).astype(operand)
    res = _conv_of(samples, kernel_2d, geo, compute)
    return _put(out, res, t, geo)

  out = jnp.zeros((n, geo.tiles * geo.tile_blocks, wb, geo.block ** 2, cout), out_dtype)
  out = _over_tiles(tile, out, (win, kernel_2d, fields), geo)
  return _from_blocks(out[:, :geo.blocks[0]], geo), (x, offset, mask, kernel)


def _backward(geo: _Geometry, residuals, grad_out):
  x, offset, mask, kernel = residuals
  compute, operand, win, fields = _parts(x, offset, mask, kernel, geo)
  n, cin, cout = x.shape[0], x.shape[-1], kernel.shape[-1]
  k, g = geo.taps, geo.groups
  wb = geo.blocks[1]
  kernel_2d = kernel.reshape(k * cin, cout).astype(operand)
  grid_y, grid_x = _window_grid(geo, compute)
  grad_out = _pad_blocks(_by_blocks(grad_out, geo), geo)

  def tile(t, carry, invariants):
    grad_win, grad_kernel, grad_y, grad_x, grad_m = carry
    win, kernel_2d, fields, grad_out = invariants
    y, x_, m, inside = (_merged(_tile(a, t, geo))[..., None] for a in fields[:4])
    win_t = _merged(_tile(win, t, geo)).astype(operand)
    g_out = _tile(grad_out, t, geo).astype(operand)  # [N, tb, wb, block², Cout]
    k4 = kernel_2d.reshape(k, g, -1, cout)
    q = geo.block ** 2
    g_cols = jnp.einsum("kgco,ntwqo->kntwgcq", k4, g_out, preferred_element_type=compute)
    g_cols = g_cols.reshape(k, -1, g_cols.shape[-2], q)  # ∂samples, [K, B, Cin/G, block²]
    ty, tx, m_in = _tent(y - grid_y), _tent(x_ - grid_x), m * inside

    def sample_k(weights):
      weights = weights.reshape(weights.shape[0], k, q, -1)
      return jnp.einsum("bkqp,bcp->kbcq", weights, win_t, preferred_element_type=compute)

    by_tap = lambda a: a.reshape(-1, k, q).swapaxes(0, 1)[:, :, None]  # [B, S] → [K, B, 1, Q]
    # The unmodulated samples A₀·window (for ∂kernel and ∂mask) and their derivatives along y and x (for
    # ∂offset): three matmuls, each with its weights made inside it (stacked, XLA would write them to HBM).
    samples = sample_k((inside * ty * tx).astype(operand))
    along_y = sample_k((m_in * _tent_slope(y - grid_y) * tx).astype(operand))
    along_x = sample_k((m_in * ty * _tent_slope(x_ - grid_x)).astype(operand))
    columns = (by_tap(m[..., 0]) * samples).astype(operand)
    columns = columns.reshape(k, n, geo.tile_blocks, wb, g, -1, q)
    grad_kernel = grad_kernel + jnp.einsum("kntwgcq,ntwqo->kgco", columns, g_out,
                                           preferred_element_type=compute).reshape(k * cin, cout)
    dots = [jnp.sum(g_cols * a, axis=2).swapaxes(0, 1).reshape(-1, k * q) for a in (samples, along_y, along_x)]
    g_win = jnp.einsum("bkqp,kbcq->bcp", (m_in * ty * tx).astype(operand).reshape(-1, k, q, ty.shape[-1]),
                       g_cols.astype(operand), preferred_element_type=compute)
    tile_shape = (n, geo.tile_blocks, wb, g)
    grad_win = _put(grad_win, g_win.reshape(*tile_shape, *g_win.shape[1:]), t, geo)
    grad_y = _put(grad_y, dots[1].reshape(*tile_shape, -1), t, geo)
    grad_x = _put(grad_x, dots[2].reshape(*tile_shape, -1), t, geo)
    grad_m = _put(grad_m, dots[0].reshape(*tile_shape, -1), t, geo)
    return grad_win, grad_kernel, grad_y, grad_x, grad_m

  per_sample = jnp.zeros(fields[0].shape, compute)
  carry = (jnp.zeros(win.shape, compute), jnp.zeros(kernel_2d.shape, compute), per_sample, per_sample, per_sample)
  grad_win, grad_kernel, grad_y, grad_x, grad_m = _over_tiles(
      tile, carry, (win, kernel_2d, fields, grad_out), geo)

  hb = geo.blocks[0]
  _, window_vjp = jax.vjp(lambda a: _windows(a, geo), jnp.zeros(x.shape, compute))
  grad_x_in = window_vjp(grad_win[:, :hb])[0].astype(x.dtype)
  unclipped = fields[4][:, :hb]
  grad_offset = jnp.stack([_samples_from_blocks(grad_y[:, :hb] * unclipped[..., 0], geo),
                           _samples_from_blocks(grad_x[:, :hb] * unclipped[..., 1], geo)], axis=-1)
  grad_offset = grad_offset.swapaxes(3, 4).reshape(offset.shape).astype(offset.dtype)  # from [N,Ho,Wo,K,G,2]
  if mask is None:
    grad_mask = None
  else:
    grad_mask = _samples_from_blocks(grad_m[:, :hb], geo).swapaxes(3, 4).reshape(mask.shape).astype(mask.dtype)
  return grad_x_in, grad_offset, grad_mask, grad_kernel.reshape(kernel.shape).astype(kernel.dtype)


_deform_conv.defvjp(_forward, _backward)


def geometry(x_shape, kernel_shape, out_hw, stride, padding, dilation, groups: int, max_offset: float,
             tile_bytes: int, block: int | None = None) -> _Geometry:
  """The blocks and tiles of one call: a tile holds whole block rows, about `tile_bytes` of float32 im2col."""
  block = block or default_block(x_shape[-1])  # read at the call: tests cut images into many blocks
  ho, wo = out_hw
  hb, wb = -(-ho // block), -(-wo // block)
  rows, _ = gather_path.tile_rows(x_shape[0], x_shape[-1], tuple(kernel_shape[:2]), out_hw, tile_bytes)
  tile_blocks = hb if tile_bytes <= 0 else min(hb, max(1, rows // block))
  tiles = -(-hb // tile_blocks)
  tile_blocks = -(-hb // tiles)  # balanced
  return _Geometry(tuple(x_shape[1:3]), out_hw, tuple(kernel_shape[:2]), stride, padding, dilation, groups,
                   float(max_offset), block, (hb, wb), tile_blocks, tiles)


def deform_conv2d_windowed(x, offset, mask, kernel, geo: _Geometry) -> jax.Array:
  """The windowed path of `ops.deform_conv2d` (`max_offset` > 0), once it has checked the shapes."""
  return _deform_conv(x, offset, mask, kernel, geo)
