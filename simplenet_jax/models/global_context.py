"""The non-localized modules of Table 5/6 (Li et al. 2021, Sec. 4.4) for SimpleNet's LGCR slot (row 10 of
SPEC §1), chosen by `config.model.global_context`:

* ``"lgcr"``     LGCR (Sec. 3.1, eqs. 1–5), `LGCR` — the paper's module and the default.
* ``"nonlocal"`` the embedded-Gaussian non-local block (Wang et al. 2018), `NonLocal`.
* ``"tgm_trm"``  tensor generation + reconstruction, "T+T" (Chen et al. 2020), `TensorLowRank`.
* ``"resblock"`` a vanilla ResBlock: Table 3's Baseline2 and Table 5's "w/o" row (`configs/baseline2.py`).
* ``"none"``     nothing in the slot (`Identity`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from simplenet_jax.models.blocks import ResBlock
from simplenet_jax.models.config import GLOBAL_CONTEXTS
from simplenet_jax.models.config import ModelConfig
from simplenet_jax.ops import global_context as global_context_ops
from simplenet_jax.ops import non_local
from simplenet_jax.ops import tensor_low_rank

# Above this many positions the non-local block attends in blocks of queries: the same result without the
# HW×HW matrix (13 GB per 720p bottleneck in float32); at and below it (a 256² crop's 64² bottleneck),
# the whole matrix, as Wang et al. compute it.
NON_LOCAL_DENSE_POSITIONS = 64 * 64
NON_LOCAL_QUERY_BLOCK = 1024


class Identity(nnx.Module):
  """An empty slot: ``global_context = "none"``."""

  def __call__(self, x: jax.Array) -> jax.Array:
    return x


# The paper gives neither initialisation; `ModelConfig` holds our choices and their reasons.
LGCR_INITIAL_SLOPE = ModelConfig.lgcr_initial_slope
LGCR_KERNEL_3D_STD = ModelConfig.lgcr_kernel_3d_std


class LGCR(nnx.Module):
  """Light Global Context Refinement (Li et al. 2021, Sec. 3.1, eqs. 1–5); the maths is
  ``ops.global_context.light_global_context_refinement``.

  Attributes:
    kernel_c, kernel_h, kernel_w: ``[3, r]`` Conv1D weights per pooled axis (eq. 1), no bias; fan-in
      initialisation (3 taps).
    slopes_c, slopes_h, slopes_w: ``[r]`` PReLU slopes, one per rank (eq. 1), initialised to `initial_slope`.
    kernel_3d: ``[3, 3, 3]`` W_G of the raw residual (eq. 4), indexed (channel, row, column), no bias; normal
      with standard deviation `kernel_3d_std`.
  """

  def __init__(self, *, rank: int = 64, softmax_axes: global_context_ops.SoftmaxAxes = "chw",
               initial_slope: float = LGCR_INITIAL_SLOPE, kernel_3d_std: float = LGCR_KERNEL_3D_STD,
               rngs: nnx.Rngs):
    self.softmax_axes = softmax_axes
    conv1d_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0, out_axis=())
    self.kernel_c = nnx.Param(conv1d_init(rngs.params(), (3, rank)))
    self.kernel_h = nnx.Param(conv1d_init(rngs.params(), (3, rank)))
    self.kernel_w = nnx.Param(conv1d_init(rngs.params(), (3, rank)))
    self.slopes_c = nnx.Param(jnp.full((rank,), initial_slope, jnp.float32))
    self.slopes_h = nnx.Param(jnp.full((rank,), initial_slope, jnp.float32))
    self.slopes_w = nnx.Param(jnp.full((rank,), initial_slope, jnp.float32))
    self.kernel_3d = nnx.Param(jax.random.normal(rngs.params(), (3, 3, 3)) * kernel_3d_std)

  def __call__(self, x: jax.Array) -> jax.Array:
    return global_context_ops.light_global_context_refinement(
        x, self.kernel_c[...], self.kernel_h[...], self.kernel_w[...],
        self.slopes_c[...], self.slopes_h[...], self.slopes_w[...], self.kernel_3d[...],
        softmax_axes=self.softmax_axes)


class NonLocal(nnx.Module):
  """Embedded-Gaussian non-local block (Wang et al. 2018, eqs. 1 and 6); the maths is
  ``ops.non_local.non_local_block``.

  W_z starts at zero, so the block starts as the identity (Wang et al. zero-initialise the BN scale after
  W_z to the same end; there is no normalisation in SimpleNet).

  Attributes:
    theta, phi, g: 1×1 conv (kernel ``[C, C/2]``, bias) embeddings.
    out_kernel, out_bias: W_z, ``[C/2, C]`` and ``[C]``.
  """

  def __init__(self, channels: int, *, rngs: nnx.Rngs):
    inner = max(1, channels // 2)
    init = nnx.initializers.lecun_normal()
    self.theta_kernel = nnx.Param(init(rngs.params(), (channels, inner)))
    self.theta_bias = nnx.Param(jnp.zeros((inner,)))
    self.phi_kernel = nnx.Param(init(rngs.params(), (channels, inner)))
    self.phi_bias = nnx.Param(jnp.zeros((inner,)))
    self.g_kernel = nnx.Param(init(rngs.params(), (channels, inner)))
    self.g_bias = nnx.Param(jnp.zeros((inner,)))
    self.out_kernel = nnx.Param(jnp.zeros((inner, channels)))
    self.out_bias = nnx.Param(jnp.zeros((channels,)))

  def __call__(self, x: jax.Array) -> jax.Array:
    positions = x.shape[1] * x.shape[2]
    block = None if positions <= NON_LOCAL_DENSE_POSITIONS else NON_LOCAL_QUERY_BLOCK
    return non_local.non_local_block(
        x, (self.theta_kernel[...], self.theta_bias[...]), (self.phi_kernel[...], self.phi_bias[...]),
        (self.g_kernel[...], self.g_bias[...]), (self.out_kernel[...], self.out_bias[...]), query_block=block)


class TensorLowRank(nnx.Module):
  """TGM+TRM, "T+T" (Chen et al. 2020, as compared in Li et al. 2021 Fig. 4); the maths is
  ``ops.tensor_low_rank.tgm_trm``: ``X ⊙ Σ_i λ_i sigmoid(a_ci v_c) ⊗ sigmoid(a_hi v_h) ⊗ sigmoid(a_wi v_w)``.

  λ starts at 8/r: with fragments near sigmoid(0) = 1/2 the attention then starts near 1, so the untrained
  module passes its input through nearly unchanged.

  Attributes:
    scales_c, scales_h, scales_w: ``[r]`` TGM scalars (the "3×r scalars"), standard normal.
    rank_weights: ``[r]`` TRM weights λ.
  """

  def __init__(self, *, rank: int = 64, rngs: nnx.Rngs):
    self.scales_c = nnx.Param(jax.random.normal(rngs.params(), (rank,)))
    self.scales_h = nnx.Param(jax.random.normal(rngs.params(), (rank,)))
    self.scales_w = nnx.Param(jax.random.normal(rngs.params(), (rank,)))
    self.rank_weights = nnx.Param(jnp.full((rank,), 8.0 / rank))

  def __call__(self, x: jax.Array) -> jax.Array:
    return tensor_low_rank.tgm_trm(x, self.scales_c[...], self.scales_h[...], self.scales_w[...],
                                   self.rank_weights[...])


def global_context_block(kind: str, channels: int, *, rank: int, softmax_axes: str,
                         lgcr_initial_slope: float = LGCR_INITIAL_SLOPE,
                         lgcr_kernel_3d_std: float = LGCR_KERNEL_3D_STD, rngs: nnx.Rngs) -> nnx.Module:
  """The module for `config.model.global_context` = ``kind`` at a ``channels``-wide feature map; ``rank``
  is r of LGCR and T+T, ``softmax_axes`` and the two initialisations LGCR's (eq. 3, eq. 1, eq. 4)."""
  if kind == "lgcr":
    return LGCR(rank=rank, softmax_axes=softmax_axes, initial_slope=lgcr_initial_slope,
                kernel_3d_std=lgcr_kernel_3d_std, rngs=rngs)
  if kind == "resblock":
    return ResBlock(channels, rngs=rngs)
  if kind == "nonlocal":
    return NonLocal(channels, rngs=rngs)
  if kind == "tgm_trm":
    return TensorLowRank(rank=rank, rngs=rngs)
  if kind == "none":
    return Identity()
  raise ValueError(f"global_context must be one of {GLOBAL_CONTEXTS}, got {kind!r}.")
