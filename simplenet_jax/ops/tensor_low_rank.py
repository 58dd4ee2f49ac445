"""TGM+TRM ("T+T"): tensor generation and tensor reconstruction (Chen et al. 2020, "Tensor Low-Rank
Reconstruction for Semantic Segmentation", Sec. 3.2–3.3), the second comparison module of Table 5/6, in the
form Li et al. 2021 compare LGCR against (Sec. 3.1, Fig. 4, col. 2).

Li et al. name the two differences from LGCR: T+T's context fragments are the pooled vectors times one
learned scalar per axis and rank ("simple multiplication with 3×r scalars", then the activation: Chen et
al.'s sigmoid), where LGCR uses a Conv1D + PReLU; and T+T has no raw residual: its reconstruction is an
attention map that multiplies the input ("a global amplitude adjustment weight to multiply the input").
So, with the same axis-pooled vectors v_c, v_h, v_w as LGCR's eq. 1 (`global_context.axis_pooled_vectors`):

* TGM   ``v_mi = sigmoid(a_mi · v_m)``, m ∈ {c, h, w}, i = 1 … r            (``tensor_generation``)
* TRM   ``A = Σ_i λ_i · v_ci ⊗ v_hi ⊗ v_wi``  (Chen et al. eq. 6's weighted rank-1 sum)
* out   ``Y = X ⊙ A``                                                     (``tgm_trm``)

Chen et al. generate the fragments with 1×1 convolutions over the pooled vectors (C×C, H×H, W×W weights),
which ties the module to one input size; the 3×r-scalar reading above is size-free, so the same network
trains on 256² crops and runs on 720p frames.
"""

from __future__ import annotations

import jax

from simplenet_jax.ops.global_context import axis_pooled_vectors
from simplenet_jax.ops.global_context import cp_reconstruction


def tensor_generation(vector: jax.Array, scales: jax.Array) -> jax.Array:
  """TGM: the r context fragments ``sigmoid(a_i · v)`` of one axis: ``[N, L]``, ``[r]`` → ``[N, L, r]``."""
  return jax.nn.sigmoid(vector[:, :, None] * scales.astype(vector.dtype))


def tensor_reconstruction(frag_c: jax.Array, frag_h: jax.Array, frag_w: jax.Array,
                          rank_weights: jax.Array) -> jax.Array:
  """TRM: ``A = Σ_i λ_i v_ci ⊗ v_hi ⊗ v_wi`` → ``[N, H, W, C]``, one contraction (as LGCR's eq. 2)."""
  return cp_reconstruction(frag_c * rank_weights.astype(frag_c.dtype), frag_h, frag_w)


def tgm_trm(x: jax.Array, scales_c: jax.Array, scales_h: jax.Array, scales_w: jax.Array,
            rank_weights: jax.Array) -> jax.Array:
  """T+T on ``x [N, H, W, C]``: ``X ⊙ Σ_i λ_i sigmoid(a_ci v_c) ⊗ sigmoid(a_hi v_h) ⊗ sigmoid(a_wi v_w)``.

  Args:
    x: ``[N, H, W, C]``.
    scales_c, scales_h, scales_w: ``[r]`` TGM scalars a of each axis.
    rank_weights: ``[r]`` TRM weights λ.
  """
  v_c, v_h, v_w = axis_pooled_vectors(x)
  attention = tensor_reconstruction(tensor_generation(v_c, scales_c), tensor_generation(v_h, scales_h),
                                    tensor_generation(v_w, scales_w), rank_weights)
  return x * attention.astype(x.dtype)
