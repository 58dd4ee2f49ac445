"""Deformable convolution (DCNv1, Dai et al. 2017; DCNv2, Zhu et al. 2019): fast, with a hand-written VJP.

The contract is SPEC §2 and matches `torchvision.ops.deform_conv2d` one to one, in NHWC:

* ``x``       ``[N, H, W, Cin]``
* ``offset``  ``[N, Ho, Wo, 2·G·kh·kw]``; for offset group ``g`` and kernel point ``k`` (row-major over
  ``kh, kw``), channel ``g·2·kh·kw + 2k`` is the **y** (row) offset and ``+1`` the **x** (column) offset.
* ``mask``    ``[N, Ho, Wo, G·kh·kw]`` (modulation, DCNv2) or ``None`` (DCNv1).
* ``kernel``  ``[kh, kw, Cin, Cout]`` (Flax HWIO); no bias.

Offset group ``g`` deforms input channels ``g·Cin/G … (g+1)·Cin/G − 1``. Sampling is bilinear and a neighbour
outside the image contributes zero, so a sample more than one pixel outside the image is exactly zero.

How it is computed, and why (measured with ``benchmarks/deform_conv.py`` on a 2-core CPU; the simple
gather-then-autodiff version is kept as ``ops/deform_conv_reference.py``):

1. **A sampling plan, computed once per call.** For every sample (output pixel × kernel point × group) the
   plan holds one int32 row index — of the top-left neighbour, in the image zero-padded by 2 pixels, so the
   other three neighbours are at fixed steps and every index is in bounds — the fractions ``ly, lx``, the
   mask and the four bilinear weights × mask. XLA would otherwise fuse this index arithmetic into every
   consumer and redo it for each of the Cin channels (that alone made the first custom VJP 3× slower).
2. **Tiles of output rows, ``tile_bytes`` of float32 im2col each.** Each tile builds its columns by four
   row gathers (fused into one loop with the weights) and multiplies them by the kernel as one
   ``[rows, kh·kw·Cin] × [kh·kw·Cin, Cout]`` matmul. The tile size depends only on the shapes and the byte
   budget, never on the machine that traces the program, so what compiles on a CPU is what a GPU or TPU
   gets. The budget bounds memory everywhere: a single tile (plain im2col + matmul) of the paper's PVB fuse
   layer is 4.2 GB at 720p. On CPU, small tiles are also fast: they keep every temporary in cache and
   avoid the page faults of fresh, large buffers on every call, which cost more than the arithmetic
   (a 75 MB temporary costs ~40 ms to fault in).
3. **A custom VJP** that re-gathers the four neighbours of a tile once and reuses them for everything:
   the kernel gradient ``colsᵀ·g`` and the column gradient ``g·Wᵀ`` are matmuls; the mask and offset
   gradients are four per-sample dot products ``S_j = ⟨x(corner j), ∂cols⟩`` combined with the bilinear
   derivatives; the input gradient adds ``w_j·∂cols`` back to each corner's row. That last step is still a
   scatter-add, but one over contiguous Cin/G-wide rows accumulated in place into a loop carry, which on
   this CPU costs about a tenth of the backward pass; autodiff of the simple version instead emitted
   scatters over the whole im2col array with batch dimensions, 20× a plain conv. (A scatter-free transpose
   — sorting the sample indices and segment-summing — was slower: the sort alone costs more than all four
   scatters.) Nothing is saved between the forward and backward passes but the inputs.

Arithmetic on positions and weights is float32 (float64 if an input is float64), so bf16 inputs sample at
float32 positions; the columns are cast to the matmul dtype (bf16 if ``x`` and ``kernel`` are bf16) and
the matmuls accumulate in float32. The forward-mode derivative (``jax.jvp``) is not defined for a custom
VJP; use the reference implementation if you need it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

IntPair = int | Sequence[int]

# Zero border around the image: a sample outside (-1, H) × (-1, W) is moved to (-2, -2), whose four
# neighbours then all lie in the border; samples inside have neighbours in [-1, H] × [-1, W].
_BORDER = 2
# About this many bytes of float32 im2col per tile, on every platform (`deform_conv2d`'s `tile_bytes`,
# `config.model.dcn_tile_bytes`). A sweep of 128 KiB … 16 MiB put the CPU backward pass's optimum at
# 0.5–1 MiB on the 2-core benchmark machine, 3–9× faster than 16 MiB.
DEFAULT_TILE_BYTES = 1 << 20
_IN_BOUNDS = lax.GatherScatterMode.PROMISE_IN_BOUNDS
SAMPLINGS = ("gather", "matmul")
# The output width a shape-polymorphic export plans its tiles for (`tile_rows`).
SYMBOLIC_WIDTH = 1280


def to_pair(value: IntPair, name: str) -> tuple[int, int]:
  pair = (value, value) if isinstance(value, int) else tuple(value)
  if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
    raise ValueError(f"deform_conv2d: {name}={value!r} must be an int or a pair of ints.")
  return pair  # type: ignore[return-value]


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
  """Output length of a convolution along one axis (as torch and lax compute it)."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def check_shapes(x, offset, mask, kernel, out_hw) -> int:
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


@dataclasses.dataclass(frozen=True)
class ConvShape:
  """Static shape facts of one deformable-conv call, shared by both sampling paths (hashable: part of the
  custom VJPs' non-differentiable argument)."""
  in_hw: tuple[int, int]
  out_hw: tuple[int, int]
  kernel_hw: tuple[int, int]
  stride: tuple[int, int]
  padding: tuple[int, int]
  dilation: tuple[int, int]
  groups: int

  @property
  def taps(self) -> int:
    return self.kernel_hw[0] * self.kernel_hw[1]


@dataclasses.dataclass(frozen=True)
class _Geometry(ConvShape):
  """The gather path's tiles of output rows."""
  tile_rows: int  # output rows per tile
  tiles: int  # tiles · tile_rows ≥ Ho; the plan and gradients are padded to that many rows

  @property
  def padded_hw(self) -> tuple[int, int]:
    return self.in_hw[0] + 2 * _BORDER, self.in_hw[1] + 2 * _BORDER

  @property
  def corner_steps(self) -> tuple[int, int, int, int]:
    """Row-index steps from the top-left neighbour to the (0,0), (0,1), (1,0), (1,1) neighbours."""
    width, g = self.padded_hw[1], self.groups
    return 0, g, width * g, (width + 1) * g


class _Plan(NamedTuple):
  """Per-sample sampling plan, each ``[N, tiles·tile_rows, Wo·kh·kw·G]`` (sample order: column, tap, group)."""
  index: jax.Array  # int32 row of the top-left neighbour in the padded image's ``[N, Hp·Wp·G, Cin/G]`` rows
  ly: jax.Array  # fractional parts of the sampling position
  lx: jax.Array
  mask: jax.Array  # modulation (ones for DCNv1)
  weights: tuple[jax.Array, ...]  # bilinear weight × mask of the four neighbours, in corner_steps order


def _bilinear_weights(ly: jax.Array, lx: jax.Array) -> tuple[jax.Array, ...]:
  """Bilinear weights of the (0,0), (0,1), (1,0), (1,1) neighbours."""
  return (1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx


def _sampling_plan(offset: jax.Array, mask: jax.Array | None, geo: _Geometry, dtype) -> _Plan:
  """The plan of every sample (step 1 of the module docstring), in ``dtype`` (float32 or wider)."""
  n = offset.shape[0]
  ho, wo = geo.out_hw
  kh, kw = geo.kernel_hw
  k, g = geo.taps, geo.groups
  (h, w), (sh, sw), (ph, pw), (dh, dw) = geo.in_hw, geo.stride, geo.padding, geo.dilation
  offset = offset.astype(dtype).reshape(n, ho, wo, g, k, 2).transpose(0, 1, 2, 4, 3, 5)  # [N,Ho,Wo,K,G,2]
  # Regular-grid position of kernel point (i, j) for output (r, c): r·s − pad + i·d (DCNv2 eq. 3's p + p_k).
  grid_y = (jnp.arange(ho) * sh - ph)[:, None, None] + jnp.repeat(jnp.arange(kh) * dh, kw)[None, None, :]
  grid_x = (jnp.arange(wo) * sw - pw)[None, :, None] + jnp.tile(jnp.arange(kw) * dw, kh)[None, None, :]
  pos_y = grid_y[None, ..., None].astype(dtype) + offset[..., 0]
  pos_x = grid_x[None, ..., None].astype(dtype) + offset[..., 1]
  # A sample outside (-1, H) × (-1, W) is all zero; its index points at (-2, -2), in the zero border.
  # NaN positions count as outside, so every index is in bounds whatever the offsets hold, and their
  # fractions stay NaN (0·NaN), so a NaN offset still gives a NaN output instead of hiding it.
  inside = (pos_y > -1) & (pos_y < h) & (pos_x > -1) & (pos_x < w)
  y0 = jnp.floor(jnp.where(inside, pos_y, -2.0))
  x0 = jnp.floor(jnp.where(inside, pos_x, -2.0))
  ly = jnp.where(inside, pos_y - y0, 0 * pos_y)
  lx = jnp.where(inside, pos_x - x0, 0 * pos_x)
  row = (y0.astype(jnp.int32) + _BORDER) * geo.padded_hw[1] + x0.astype(jnp.int32) + _BORDER
  index = row * g + jnp.arange(g, dtype=jnp.int32)
  if mask is None:
    mask = jnp.ones_like(ly)
  else:
    mask = mask.astype(dtype).reshape(n, ho, wo, g, k).transpose(0, 1, 2, 4, 3)

  padded_rows = geo.tiles * geo.tile_rows

  def by_rows(a):
    a = a.reshape(n, ho, -1)
    return a if padded_rows == ho else jnp.pad(a, ((0, 0), (0, padded_rows - ho), (0, 0)))

  ly, lx, mask = by_rows(ly), by_rows(lx), by_rows(mask)
  weights = tuple(b * mask for b in _bilinear_weights(ly, lx))
  return _Plan(by_rows(index), ly, lx, mask, weights)


def _tile(a: jax.Array, t, geo: _Geometry) -> jax.Array:
  """Rows ``[t·tile_rows, (t+1)·tile_rows)`` of a plan or output-shaped array, samples flattened."""
  rows = lax.dynamic_slice_in_dim(a, t * geo.tile_rows, geo.tile_rows, axis=1)
  return rows.reshape(a.shape[0], -1, *a.shape[3:])


def _pad_rows(a: jax.Array, geo: _Geometry) -> jax.Array:
  extra = geo.tiles * geo.tile_rows - a.shape[1]
  return a if extra == 0 else jnp.pad(a, ((0, 0), (0, extra)) + ((0, 0),) * (a.ndim - 2))


# Row gather/scatter with the batch as a batching dimension (not folded into the row index), so that a
# batch-sharded call partitions without gathering the other devices' images.
_GATHER_ROWS = lax.GatherDimensionNumbers(offset_dims=(2,), collapsed_slice_dims=(1,), start_index_map=(1,),
                                          operand_batching_dims=(0,), start_indices_batching_dims=(0,))
_SCATTER_ROWS = lax.ScatterDimensionNumbers(update_window_dims=(2,), inserted_window_dims=(1,),
                                            scatter_dims_to_operand_dims=(1,), operand_batching_dims=(0,),
                                            scatter_indices_batching_dims=(0,))


def _gather_rows(rows: jax.Array, index: jax.Array) -> jax.Array:
  """``rows [N, R, C]``, ``index [N, S]`` (in bounds by construction) → ``[N, S, C]``."""
  return lax.gather(rows, index[..., None], _GATHER_ROWS, (1, 1, rows.shape[-1]), mode=_IN_BOUNDS)


def _scatter_add_rows(rows: jax.Array, index: jax.Array, updates: jax.Array) -> jax.Array:
  """Adjoint of `_gather_rows`: adds ``updates [N, S, C]`` to ``rows [N, R, C]`` at ``index [N, S]``."""
  return lax.scatter_add(rows, index[..., None], updates, _SCATTER_ROWS, mode=_IN_BOUNDS)


def _image_rows(x: jax.Array, geo: _Geometry) -> jax.Array:
  """``x`` zero-padded by the border, as ``[N, Hp·Wp·G, Cin/G]`` rows (one per pixel and group)."""
  b = _BORDER
  padded = jnp.pad(x, ((0, 0), (b, b), (b, b), (0, 0)))
  return padded.reshape(x.shape[0], -1, x.shape[-1] // geo.groups)


def _over_tiles(body: Callable[[Any, Any, Any], Any], carry: Any, invariants: Any, geo: _Geometry) -> Any:
  """``carry = body(t, carry, invariants)`` for every tile t: a loop, or one call when there is one tile.

  The arrays every tile reads travel as `invariants` in the loop's carry, not by closure. XLA gets the
  same while loop either way (closed-over arrays become loop operands); converters that trace the jaxpr
  take a loop only in this form."""
  if geo.tiles == 1:
    return body(0, carry, invariants)

  def step(t, state):
    carry, invariants = state
    return body(t, carry, invariants), invariants

  return lax.fori_loop(0, geo.tiles, step, (carry, invariants))[0]


def _dtypes(x, offset, mask, kernel) -> tuple[Any, Any]:
  """(dtype of positions, weights and accumulation: float32 or wider; dtype of the matmul operands)."""
  inputs = (x, offset, kernel) + (() if mask is None else (mask,))
  return jnp.promote_types(jnp.result_type(*inputs), jnp.float32), jnp.result_type(x.dtype, kernel.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _deform_conv(x, offset, mask, kernel, geo: _Geometry):
  return _deform_conv_forward(x, offset, mask, kernel, geo)[0]


def _deform_conv_forward(x, offset, mask, kernel, geo: _Geometry):
  """Tiled im2col by bilinear gather (step 2), then one matmul per tile."""
  compute, operand = _dtypes(x, offset, mask, kernel)
  n, _, _, cin = x.shape
  ho, wo = geo.out_hw
  cout = kernel.shape[-1]
  rows = _image_rows(x, geo)
  kernel_2d = kernel.reshape(geo.taps * cin, cout).astype(operand)
  plan = _sampling_plan(offset, mask, geo, compute)
  out_dtype = jnp.result_type(x.dtype, kernel.dtype)

  def tile(t, out, invariants):
    rows, kernel_2d, plan = invariants
    index = _tile(plan.index, t, geo)
    columns = sum(_tile(w, t, geo)[..., None] * _gather_rows(rows, index + step).astype(compute)
                  for step, w in zip(geo.corner_steps, plan.weights))
    columns = columns.astype(operand).reshape(-1, geo.taps * cin)  # [N·rows·Wo, K·Cin], Cin = (group, ch)
    y = jnp.dot(columns, kernel_2d, preferred_element_type=compute)
    return lax.dynamic_update_slice_in_dim(out, y.astype(out_dtype).reshape(n, -1, wo, cout),
                                           t * geo.tile_rows, axis=1)

  out = _over_tiles(tile, jnp.zeros((n, geo.tiles * geo.tile_rows, wo, cout), out_dtype),
                    (rows, kernel_2d, plan), geo)
  return out[:, :ho], (x, offset, mask, kernel)


def _deform_conv_backward(geo: _Geometry, residuals, grad_out):
  """Gradients of all four inputs, tile by tile (step 3)."""
  x, offset, mask, kernel = residuals
  compute, operand = _dtypes(x, offset, mask, kernel)
  n, h, w, cin = x.shape
  ho, wo = geo.out_hw
  k, g = geo.taps, geo.groups
  cout = kernel.shape[-1]
  rows = _image_rows(x, geo)
  kernel_2d = kernel.reshape(k * cin, cout).astype(operand)
  kernel_2d_t = kernel_2d.T
  plan = _sampling_plan(offset, mask, geo, compute)
  grad_out = _pad_rows(grad_out, geo)

  def tile(t, carry, invariants):
    grad_rows, grad_kernel, grad_y, grad_x, grad_mask = carry
    rows, kernel_2d_t, plan, grad_out = invariants
    index, ly, lx, m = (_tile(a, t, geo) for a in plan[:4])
    weights = [_tile(a, t, geo) for a in plan.weights]
    g_out = lax.dynamic_slice_in_dim(grad_out, t * geo.tile_rows, geo.tile_rows, axis=1)
    g_out = g_out.astype(operand).reshape(-1, cout)
    # ∂columns = ∂out · Wᵀ, one row of Cin/G per sample.
    g_cols = jnp.dot(g_out, kernel_2d_t, preferred_element_type=compute).reshape(n, -1, cin // g)
    # The four neighbours, gathered once: they give the columns (for ∂W) and the S_j (for ∂mask, ∂offset).
    corners = [_gather_rows(rows, index + step).astype(compute) for step in geo.corner_steps]
    columns = sum(wj[..., None] * xj for wj, xj in zip(weights, corners))
    grad_kernel = grad_kernel + jnp.dot(columns.astype(operand).reshape(-1, k * cin).T, g_out,
                                        preferred_element_type=compute)
    s = [jnp.einsum("nsc,nsc->ns", xj, g_cols) for xj in corners]  # S_j = ⟨x(corner j), ∂columns⟩
    for step, wj in zip(geo.corner_steps, weights):
      grad_rows = _scatter_add_rows(grad_rows, index + step, wj[..., None] * g_cols)
    # d(bilinear)/d(ly), d/d(lx), and ∂mask = Σ_j bilinear_j · S_j; ∂offset = ∂position.
    g_y = m * ((1 - lx) * (s[2] - s[0]) + lx * (s[3] - s[1]))
    g_x = m * ((1 - ly) * (s[1] - s[0]) + ly * (s[3] - s[2]))
    g_m = sum(b * sj for b, sj in zip(_bilinear_weights(ly, lx), s))

    def put(a, v):
      return lax.dynamic_update_slice_in_dim(a, v.reshape(n, geo.tile_rows, -1), t * geo.tile_rows, axis=1)

    return grad_rows, grad_kernel, put(grad_y, g_y), put(grad_x, g_x), put(grad_mask, g_m)

  per_sample = jnp.zeros(plan.ly.shape, compute)
  carry = (jnp.zeros(rows.shape, compute), jnp.zeros((k * cin, cout), compute), per_sample, per_sample,
           per_sample)
  grad_rows, grad_kernel, grad_y, grad_x, grad_mask = _over_tiles(tile, carry, (rows, kernel_2d_t, plan, grad_out), geo)

  b = _BORDER
  grad_x_in = grad_rows.reshape(n, h + 2 * b, w + 2 * b, cin)[:, b:b + h, b:b + w].astype(x.dtype)
  grad_offset = jnp.stack([grad_y[:, :ho], grad_x[:, :ho]], axis=-1).reshape(n, ho, wo, k, g, 2)
  grad_offset = grad_offset.transpose(0, 1, 2, 4, 3, 5).reshape(offset.shape).astype(offset.dtype)
  if mask is None:
    grad_mask = None
  else:
    grad_mask = grad_mask[:, :ho].reshape(n, ho, wo, k, g).transpose(0, 1, 2, 4, 3)
    grad_mask = grad_mask.reshape(mask.shape).astype(mask.dtype)
  return grad_x_in, grad_offset, grad_mask, grad_kernel.reshape(kernel.shape).astype(kernel.dtype)


_deform_conv.defvjp(_deform_conv_forward, _deform_conv_backward)


def tile_rows(batch: int, cin: int, kernel_hw: tuple[int, int], out_hw: tuple[int, int],
              tile_bytes: int) -> tuple[int, int]:
  """(output rows per tile, tiles) for about `tile_bytes` of float32 im2col per tile (at least one row;
  `tile_bytes` 0 = a single tile). Shapes and budget only: the same answer on every platform.

  A shape-polymorphic export (`jax.export` with a symbolic batch, height or width) cannot divide the budget
  by sizes it does not know: it plans each layer as if its output were one image `SYMBOLIC_WIDTH` wide (the
  full-resolution layers of 720p). Tiles then hold about `tile_bytes` per image at that width, and in
  proportion at others. Layers at lower resolution get smaller tiles than that, and the padding to a whole
  number of tiles adds fewer than `rows` rows, which is waste only when `rows` exceeds the image's height.
  """
  ho, wo = out_hw
  if tile_bytes <= 0:
    return ho, 1
  if any(jax.export.is_symbolic_dim(d) for d in (batch, ho, wo)):
    reference_wo = wo if not jax.export.is_symbolic_dim(wo) else SYMBOLIC_WIDTH
    rows = max(1, tile_bytes // (4 * reference_wo * kernel_hw[0] * kernel_hw[1] * cin))
    return rows, (ho + rows - 1) // rows
  row_bytes = 4 * batch * wo * kernel_hw[0] * kernel_hw[1] * cin
  rows = max(1, min(ho, tile_bytes // row_bytes))
  tiles = math.ceil(ho / rows)
  return math.ceil(ho / tiles), tiles  # balanced, so that padding adds less than one row per tile


def deform_conv2d(
    x: jax.Array,
    offset: jax.Array,
    mask: jax.Array | None,
    kernel: jax.Array,
    *,
    stride: IntPair = 1,
    padding: IntPair = 1,
    dilation: IntPair = 1,
    tile_bytes: int = DEFAULT_TILE_BYTES,
    max_offset: float | None = None,
    sampling: str = "gather",
) -> jax.Array:
  """Modulated deformable convolution, ``y[p] = Σ_k w_k · m_k · x(p·s − pad + k·d + Δp_k)`` (DCNv2 eq. 3).

  Pure and jit-, vmap- and shard-able; float32, float64 or bfloat16 (the result has the promoted dtype of
  ``x`` and ``kernel``). Gradients with respect to all four arrays come from a custom VJP (module
  docstring); `ops.deform_conv_reference.deform_conv2d_reference` is the autodiff version it is tested
  against.

  Args:
    x: ``[N, H, W, Cin]`` input.
    offset: ``[N, Ho, Wo, 2·G·kh·kw]`` sampling offsets in pixels, (y, x) pairs, torchvision layout.
    mask: ``[N, Ho, Wo, G·kh·kw]`` modulation scalars, or ``None`` for DCNv1 (all ones).
    kernel: ``[kh, kw, Cin, Cout]`` weights.
    stride, padding, dilation: ints or (row, column) pairs, as in a regular convolution.
    tile_bytes: float32 im2col bytes per tile of output rows (module docstring, step 2); it bounds the
      temporaries of forward and backward. 0 = one tile (plain im2col + matmul).
    max_offset: ``None`` (default): offsets of any size. A positive number: every offset is clipped to
      ``[-max_offset, max_offset]`` first (a clipped offset gets no gradient).
    sampling: how the samples are taken, never what they are: ``"gather"`` (this module; any offsets, the
      fastest on a CPU) or ``"matmul"`` (`ops.deform_conv_windowed`: matmuls over windows, the path a TPU
      runs fast; it needs ``max_offset``).

  Returns:
    ``[N, Ho, Wo, Cout]``.
  """
  sh, sw = to_pair(stride, "stride")
  ph, pw = to_pair(padding, "padding")
  dh, dw = to_pair(dilation, "dilation")
  kh, kw = kernel.shape[:2] if kernel.ndim == 4 else (0, 0)
  ho = output_size(x.shape[1], kh, sh, ph, dh) if x.ndim == 4 else 0
  wo = output_size(x.shape[2], kw, sw, pw, dw) if x.ndim == 4 else 0
  groups = check_shapes(x, offset, mask, kernel, (ho, wo))
  if not isinstance(tile_bytes, int) or tile_bytes < 0:
    raise ValueError(f"deform_conv2d: tile_bytes must be a non-negative int, got {tile_bytes!r}.")
  if max_offset is not None and (isinstance(max_offset, bool) or not isinstance(max_offset, (int, float))
                                 or not 0 < max_offset < math.inf):
    raise ValueError(f"deform_conv2d: max_offset must be None or a positive number, got {max_offset!r}.")
  if sampling not in SAMPLINGS:
    raise ValueError(f"deform_conv2d: sampling must be one of {SAMPLINGS}, got {sampling!r}.")
  if sampling == "matmul":
    if max_offset is None:
      raise ValueError("deform_conv2d: sampling='matmul' needs max_offset (its windows are sized by it).")
    from simplenet_jax.ops import deform_conv_windowed  # pylint: disable=import-outside-toplevel
    geo = deform_conv_windowed.geometry(x.shape, kernel.shape, (ho, wo), (sh, sw), (ph, pw), (dh, dw), groups,
                                        max_offset, tile_bytes)
    return deform_conv_windowed.deform_conv2d_windowed(x, offset, mask, kernel, geo)
  if max_offset is not None:
    offset = jnp.clip(offset, -max_offset, max_offset)
  rows, tiles = tile_rows(x.shape[0], x.shape[-1], (kh, kw), (ho, wo), tile_bytes)
  geo = _Geometry(tuple(x.shape[1:3]), (ho, wo), (kh, kw), (sh, sw), (ph, pw), (dh, dw), groups, rows, tiles)
  return _deform_conv(x, offset, mask, kernel, geo)
