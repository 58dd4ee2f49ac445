"""The Table 5/6 comparison modules (non-local, TGM+TRM, none) against NumPy transcriptions of their papers,
each with a test of its defining property, and their wiring into SimpleNet's LGCR slot by config."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simplenet_jax.config_files import load_config
from simplenet_jax.models import ModelConfig
from simplenet_jax.models import ResBlock
from simplenet_jax.models import SimpleNet
from simplenet_jax.models.global_context import LGCR
from simplenet_jax.models.global_context import Identity
from simplenet_jax.models.global_context import NonLocal
from simplenet_jax.models.global_context import TensorLowRank
from simplenet_jax.ops import non_local
from simplenet_jax.ops import tensor_low_rank


def non_local_numpy(x, theta, phi, g, out):
  """Wang et al. 2018 eq. 1 (embedded Gaussian, normalised by C(x) = Σ_j f) and eq. 6, one query at a time."""
  result = np.empty_like(x)
  for n in range(x.shape[0]):
    pixels = x[n].reshape(-1, x.shape[-1])
    th, ph, gg = (pixels @ k + b for k, b in (theta, phi, g))
    for i in range(len(pixels)):
      f = np.exp(ph @ th[i] - (ph @ th[i]).max())
      y = (f[:, None] * gg).sum(0) / f.sum()
      result[n].reshape(-1, x.shape[-1])[i] = pixels[i] + y @ out[0] + out[1]
  return result


def _non_local_weights(rng, c, d):
  pair = lambda i, o: (rng.normal(size=(i, o)) / np.sqrt(i), rng.normal(size=o) * 0.1)
  return pair(c, d), pair(c, d), pair(c, d), pair(d, c)


@pytest.mark.parametrize("query_block", [None, 5])
def test_non_local_matches_numpy_transcription(query_block):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 7, 6, 4)) * 2
  weights = _non_local_weights(rng, 4, 3)
  expected = non_local_numpy(x, *weights)
  with jax.enable_x64(True):
    got = non_local.non_local_block(jnp.asarray(x), *jax.tree.map(jnp.asarray, weights), query_block=query_block)
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def test_non_local_is_global_and_equivariant_to_any_permutation_of_positions():
  """Defining property: every output sees every input position, and positions are a set (no geometry)."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 9, 8, 6)), jnp.float32)
  weights = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _non_local_weights(rng, 6, 3))
  out = non_local.non_local_block(x, *weights)
  # A change at one corner pixel reaches the opposite corner (a 3×3 conv stack would need 8 layers).
  nudged = non_local.non_local_block(x.at[0, 0, 0].add(3.0), *weights)
  assert np.all(np.abs(np.asarray(nudged - out))[0, 1:, 1:].max(-1) > 0)
  permutation = rng.permutation(9 * 8)
  shuffle = lambda a: a.reshape(1, 72, 6)[:, permutation].reshape(1, 9, 8, 6)
  np.testing.assert_allclose(np.asarray(non_local.non_local_block(shuffle(x), *weights)),
                             np.asarray(shuffle(out)), rtol=1e-5, atol=1e-5)


def test_non_local_module_starts_as_identity_and_counts_parameters():
  block = NonLocal(10, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (2, 5, 4, 10))
  np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))  # W_z = 0
  params = sum(p.size for p in jax.tree.leaves(nnx.state(block, nnx.Param)))
  assert params == 3 * (10 * 5 + 5) + 5 * 10 + 10


def tgm_trm_numpy(x, scales_c, scales_h, scales_w, rank_weights):
  """Chen et al. 2020 TGM + TRM as Li et al. 2021 Fig. 4 describes it, in C×H×W, one rank-1 term at a time."""
  out = np.empty_like(x)
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  for n in range(x.shape[0]):
    volume = x[n].transpose(2, 0, 1)
    v_c, v_h, v_w = volume.mean(axis=(1, 2)), volume.mean(axis=(0, 2)), volume.mean(axis=(0, 1))
    attention = np.zeros_like(volume)
    for i, weight in enumerate(rank_weights):
      attention += weight * np.einsum("c,h,w->chw", sigmoid(scales_c[i] * v_c), sigmoid(scales_h[i] * v_h),
                                      sigmoid(scales_w[i] * v_w))
    out[n] = (volume * attention).transpose(1, 2, 0)
  return out


def test_tgm_trm_matches_numpy_transcription():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 5, 7, 6)) + 0.5
  weights = [rng.normal(size=4) * 2 for _ in range(3)] + [rng.uniform(0.5, 2, 4)]
  expected = tgm_trm_numpy(x, *weights)
  with jax.enable_x64(True):
    got = jax.jit(tensor_low_rank.tgm_trm)(jnp.asarray(x), *map(jnp.asarray, weights))
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-11, atol=1e-12)


def test_tgm_trm_gate_is_a_positive_tensor_of_cp_rank_at_most_r():
  """Defining property: the output is the input times a rank-r (CP) attention map with positive entries,
  so every mode unfolding of out/in has matrix rank ≤ r, far below full rank."""
  rank = 3
  block = TensorLowRank(rank=rank, rngs=nnx.Rngs(3))
  x = jax.random.uniform(jax.random.key(4), (1, 9, 10, 12), minval=0.5, maxval=2.0)
  with jax.enable_x64(True):
    gate = np.asarray(block(x.astype(jnp.float64))) / np.asarray(x, np.float64)
  assert np.all(gate > 0)
  volume = gate[0]  # [H, W, C]
  for axis in range(3):
    unfolding = np.moveaxis(volume, axis, 0).reshape(volume.shape[axis], -1)
    singular = np.linalg.svd(unfolding, compute_uv=False)
    assert np.sum(singular > 1e-9 * singular[0]) <= rank < min(unfolding.shape)


def test_tgm_trm_starts_near_identity():
  block = TensorLowRank(rank=64, rngs=nnx.Rngs(5))
  x = jax.random.normal(jax.random.key(6), (2, 8, 8, 16)) * 0.1
  ratio = np.asarray(block(x)) / np.asarray(x)
  assert abs(ratio.mean() - 1) < 0.1


def _tiny(**fields):
  return ModelConfig(widths=(8, 8, 16), lgcr_rank=4, **fields)


@pytest.mark.parametrize("kind,module_type", [("lgcr", LGCR), ("resblock", ResBlock), ("nonlocal", NonLocal),
                                              ("tgm_trm", TensorLowRank), ("none", Identity)])
def test_simplenet_slot_holds_the_configured_module(kind, module_type):
  model = nnx.eval_shape(lambda: SimpleNet(_tiny(global_context=kind), rngs=nnx.Rngs(0)))
  assert type(model.lgcr) is module_type
  out = jax.eval_shape(lambda m, x: m(x), model, jax.ShapeDtypeStruct((1, 16, 20, 3), jnp.float32))
  assert out.shape == (1, 16, 20, 3)


def test_none_is_the_identity():
  """With "none" the bottleneck goes straight from encoder3 to decoder3."""
  x = jax.random.uniform(jax.random.key(1), (1, 8, 8, 16))
  assert Identity()(x) is x
  assert not nnx.state(Identity(), nnx.Param)


CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"


def test_configs_select_the_table5_modules():
  """As train.py loads them (by path: `nonlocal` is a Python keyword, so configs/nonlocal.py cannot be
  imported by name)."""
  assert load_config(CONFIGS / "default.py").model.global_context == "lgcr"
  for name, kind in (("nonlocal.py", "nonlocal"), ("tgm_trm.py", "tgm_trm")):
    config = load_config(CONFIGS / name)
    assert config.model.global_context == kind and config.name == kind
    assert ModelConfig.from_mapping(config.model).global_context == kind


@pytest.mark.parametrize("fields,message", [
    (dict(global_context="attention"), "config.model.global_context must be one of"),
    (dict(global_context="nonlocal", use_lgcr=False), r"unknown field\(s\) \['use_lgcr'\]"),
])
def test_bad_global_context_raises_one_clear_sentence(fields, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig.from_mapping(fields)
