"""The embedded-Gaussian non-local block (Wang et al. 2018, "Non-local Neural Networks", Sec. 3.2–3.3), the
first comparison module of Table 5/6 (Li et al. 2021), as a pure function.

Wang et al. eq. 1 with the embedded Gaussian pairwise function (Sec. 3.2) is the softmax attention

    y_i = Σ_j softmax_j(θ(x_i)ᵀ φ(x_j)) · g(x_j),        θ, φ, g: 1×1 convs C → C/2,

and the non-local block (eq. 6) is ``z_i = W_z y_i + x_i`` with a 1×1 conv ``W_z`` (C/2 → C). There is no
sub-sampling of φ and g (Wang et al.'s optional max-pool trick): Table 6's 8 GB at 180×180 is the cost of
the full N×N attention matrix, N = H·W, and that is the cost this module is compared for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def pointwise(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """1×1 convolution: ``x [..., Cin] · kernel [Cin, Cout] + bias [Cout]``."""
  return jnp.einsum("...c,co->...o", x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


def embedded_gaussian_attention(theta: jax.Array, phi: jax.Array, g: jax.Array) -> jax.Array:
  """Eq. 1 with f = exp(θᵀφ) normalised over j (Sec. 3.2): ``[N, Q, D]``, ``[N, K, D]``, ``[N, K, D']`` →
  ``[N, Q, D']``. The Q×K attention matrix is materialised; the softmax runs in float32 or wider."""
  logits = jnp.einsum("nqd,nkd->nqk", theta, phi)
  weights = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
  return jnp.einsum("nqk,nkd->nqd", weights.astype(g.dtype), g)


def non_local_block(x: jax.Array, theta: tuple[jax.Array, jax.Array], phi: tuple[jax.Array, jax.Array],
                    g: tuple[jax.Array, jax.Array], out: tuple[jax.Array, jax.Array], *,
                    query_block: int | None = None) -> jax.Array:
  """Non-local block (Wang et al. 2018, eqs. 1 and 6, embedded Gaussian): ``x + W_z · NL(x)``.

  Args:
    x: ``[N, H, W, C]``.
    theta, phi, g: (kernel ``[C, D]``, bias ``[D]``) of the three 1×1 embeddings (D = C/2 in the paper).
    out: (kernel ``[D, C]``, bias ``[C]``) of W_z.
    query_block: None materialises the whole ``[N, HW, HW]`` attention (the cost Table 6 measures); an int
      computes the same result ``query_block`` query positions at a time (memory ``HW·query_block``).

  Returns:
    ``[N, H, W, C]``.
  """
  n, h, w, c = x.shape
  positions = x.reshape(n, h * w, c)
  queries = pointwise(positions, *theta)
  keys = pointwise(positions, *phi)
  values = pointwise(positions, *g)
  if query_block is None or query_block >= h * w:
    y = embedded_gaussian_attention(queries, keys, values)
  else:
    blocks = -(-h * w // query_block)
    padded = jnp.pad(queries, ((0, 0), (0, blocks * query_block - h * w), (0, 0)))
    padded = padded.reshape(n, blocks, query_block, -1).transpose(1, 0, 2, 3)
    y = lax.map(lambda q: embedded_gaussian_attention(q, keys, values), padded)
    y = y.transpose(1, 0, 2, 3).reshape(n, blocks * query_block, -1)[:, :h * w]
  return x + pointwise(y, *out).reshape(n, h, w, c)
