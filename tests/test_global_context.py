"""LGCR maths (eqs. 1–5) against a NumPy transcription of the paper that loops over the rank."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from simplenet_jax.ops import global_context


def lgcr_numpy(x, kc, kh, kw, sc, sh, sw, k3, softmax_axes):
  """Eqs. 1–5 on one C×H×W tensor at a time, in the paper's own layout, one rank-1 term at a time."""
  out = np.empty_like(x)
  rank = kc.shape[1]
  for n in range(x.shape[0]):
    volume = x[n].transpose(2, 0, 1)  # I ∈ R^{C×H×W}
    c, h, w = volume.shape
    pooled = {"c": volume.mean(axis=(1, 2)), "h": volume.mean(axis=(0, 2)), "w": volume.mean(axis=(0, 1))}
    weights = {"c": (kc, sc), "h": (kh, sh), "w": (kw, sw)}
    raw = np.zeros((c, h, w))
    for i in range(rank):  # eq. 2: Σ_i v_ci ⊗ v_hi ⊗ v_wi
      fragment = {}
      for axis, v in pooled.items():  # eq. 1: PReLU(Conv1D(v, W_i)), kernel 3, zero padding 1
        kernel, slopes = weights[axis]
        padded = np.pad(v, 1)
        conv = np.array([padded[j:j + 3] @ kernel[:, i] for j in range(len(v))])
        fragment[axis] = np.where(conv >= 0, conv, slopes[i] * conv)
      raw += fragment["c"][:, None, None] * fragment["h"][None, :, None] * fragment["w"][None, None, :]
    if softmax_axes == "chw":  # eq. 3
      e = np.exp(raw - raw.max())
      gcrw = e / e.sum()
    else:
      e = np.exp(raw - raw.max(axis=0, keepdims=True))
      gcrw = e / e.sum(axis=0, keepdims=True)
    rr = scipy.ndimage.correlate(volume, k3, mode="constant")  # eq. 4: Conv3D, zero padding
    out[n] = (rr * gcrw + volume).transpose(1, 2, 0)  # eq. 5
  return out


def _weights(rng, rank):
  return (rng.normal(size=(3, rank)), rng.normal(size=(3, rank)), rng.normal(size=(3, rank)),
          rng.uniform(0, 0.5, rank), rng.uniform(0, 0.5, rank), rng.uniform(0, 0.5, rank),
          rng.normal(size=(3, 3, 3)))


@pytest.mark.parametrize("softmax_axes", ["chw", "c"])
@pytest.mark.parametrize("shape,rank", [((2, 5, 7, 6), 4), ((1, 9, 4, 3), 7)])
def test_matches_numpy_transcription(shape, rank, softmax_axes):
  rng = np.random.default_rng(rank)
  x = rng.normal(size=shape) * 3  # large enough that the softmax is far from uniform
  weights = _weights(rng, rank)
  expected = lgcr_numpy(x, *weights, softmax_axes)
  with jax.enable_x64(True):
    got = jax.jit(global_context.light_global_context_refinement, static_argnames="softmax_axes")(
        jnp.asarray(x), *map(jnp.asarray, weights), softmax_axes=softmax_axes)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-12)


def test_softmax_sums_to_one():
  rng = np.random.default_rng(0)
  raw = jnp.asarray(rng.normal(size=(3, 5, 7, 6)) * 4, jnp.float32)
  chw = global_context.global_context_weight(raw, "chw")
  np.testing.assert_allclose(np.asarray(chw.sum(axis=(1, 2, 3))), 1.0, rtol=1e-5)
  c = global_context.global_context_weight(raw, "c")
  np.testing.assert_allclose(np.asarray(c.sum(axis=-1)), 1.0, rtol=1e-5)
  assert global_context.global_context_weight(raw.astype(jnp.bfloat16), "chw").dtype == jnp.float32


def test_zero_conv3d_kernel_is_identity():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 7, 5, 4)), jnp.float32)
  weights = list(map(jnp.asarray, _weights(rng, 3)))
  weights[-1] = jnp.zeros((3, 3, 3))
  out = global_context.light_global_context_refinement(x, *weights)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_cp_reconstruction_never_builds_the_rank_stack():
  """The largest intermediate of eq. 2 at the 720p bottleneck is the H·W·r outer product, not r·C·H·W."""
  n, h, w, c, r = 1, 180, 320, 128, 64
  jaxpr = jax.make_jaxpr(global_context.cp_reconstruction)(
      jax.ShapeDtypeStruct((n, c, r), jnp.float32), jax.ShapeDtypeStruct((n, h, r), jnp.float32),
      jax.ShapeDtypeStruct((n, w, r), jnp.float32))
  largest = max(int(np.prod(v.aval.shape)) for eqn in jaxpr.eqns for v in eqn.outvars)
  assert largest <= max(n * h * w * r, n * h * w * c)
  assert largest * 20 <= n * r * c * h * w


def test_bad_softmax_axes():
  with pytest.raises(ValueError, match='softmax axes must be "chw" or "c"'):
    global_context.global_context_weight(jnp.zeros((1, 2, 2, 2)), "hw")
