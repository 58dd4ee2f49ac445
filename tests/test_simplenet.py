"""SimpleNet: the SPEC §1 parameter counts, full-size shapes (no compile), tiny forward/backward, bad input."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import default as default_config
from simplenet_jax.complexity import parameters_by_block_type
from simplenet_jax.models import ModelConfig
from simplenet_jax.models import SimpleNet

TINY = dict(widths=(8, 8, 8), lgcr_rank=4)


def _abstract(**model):
  config = default_config.get_config()
  config.model.update(model)
  return nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0)))


def test_default_has_the_spec_parameter_counts():
  table = parameters_by_block_type(_abstract())
  assert {name: params for name, (_, params) in table.items()} == {
      "ResBlock": 1_162_560, "PVB": 3_643_460, "DR": 442_033, "LGCR": 795,
      "head/down/up/tail convs": 258_051}
  assert {name: count for name, (count, _) in table.items()} == {
      "ResBlock": 6, "PVB": 6, "DR": 3, "LGCR": 1, "head/down/up/tail convs": 6}
  assert sum(params for _, params in table.values()) == 5_506_899


def test_wide_variant_is_about_20_8m():
  model = _abstract(widths=(64, 128, 256))
  total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert round(total / 1e6, 1) == 20.8


@pytest.mark.parametrize("ablation,resblocks,pvbs,drs,lgcrs", [
    (dict(use_dr=False), 9, 6, 0, 1),     # Baseline1: DRs → ResBlocks
    (dict(global_context="resblock"), 7, 6, 3, 1 - 1),  # Baseline2: LGCR → ResBlock
    (dict(use_pvb=False), 12, 0, 3, 1),   # Baseline3: PVBs → ResBlocks
])
def test_table3_ablations_replace_blocks_by_resblocks(ablation, resblocks, pvbs, drs, lgcrs):
  table = parameters_by_block_type(_abstract(**ablation))
  assert (table["ResBlock"][0], table["PVB"][0], table["DR"][0], table["LGCR"][0]) == (
      resblocks, pvbs, drs, lgcrs)


def test_eval_shape_at_720p():
  model = _abstract()
  graphdef, state = nnx.split(model)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state,
                       jax.ShapeDtypeStruct((1, 720, 1280, 3), jnp.float32))
  assert out.shape == (1, 720, 1280, 3) and out.dtype == jnp.float32


def test_untrained_default_model_is_the_identity():
  model = SimpleNet(ModelConfig(**TINY), rngs=nnx.Rngs(0))
  image = jnp.asarray(np.random.default_rng(1).uniform(size=(1, 12, 16, 3)), jnp.float32)
  np.testing.assert_array_equal(np.asarray(model(image)), np.asarray(image))


def test_tiny_model_forward_backward_and_global_residual():
  model = SimpleNet(ModelConfig(**TINY, zero_init_tail=False), rngs=nnx.Rngs(0))
  image = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 36, 44, 3)), jnp.float32)
  target = jnp.clip(image + 0.1, 0, 1)

  def loss(model):
    return jnp.mean(jnp.abs(model(image) - target))

  value, grads = jax.jit(nnx.value_and_grad(loss))(model)
  assert np.isfinite(float(value))
  grad_leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grad_leaves)
  assert sum(float(jnp.abs(g).sum()) > 0 for g in grad_leaves) > 0.9 * len(grad_leaves)
  out = model(image)
  assert out.shape == image.shape and not np.allclose(np.asarray(out), np.asarray(image))
  model.tail.kernel[...] = jnp.zeros_like(model.tail.kernel[...])
  model.tail.bias[...] = jnp.zeros_like(model.tail.bias[...])
  np.testing.assert_array_equal(np.asarray(model(image)), np.asarray(image))


def test_the_gate_applies_each_images_residual_whole_or_not_at_all():
  """`residual_gate`: an image whose gate logit is negative comes back exactly as it was, one whose logit is
  positive gets the ungated network's output, each image of a batch by its own logit; the logit is a linear
  function of the log mean energies of the encoder's channels (their mean square over the image)."""
  gated = SimpleNet(ModelConfig(**TINY, zero_init_tail=False, residual_gate=True), rngs=nnx.Rngs(2))
  plain = SimpleNet(ModelConfig(**TINY, zero_init_tail=False), rngs=nnx.Rngs(2))
  rng = np.random.default_rng(3)
  kernel = rng.normal(size=gated.gate.kernel.shape) * 0.1
  gated.gate.kernel[...] = jnp.asarray(kernel, jnp.float32)
  image = jnp.asarray(rng.uniform(size=(2, 20, 28, 3)) * np.array([1.0, 0.3])[:, None, None, None], jnp.float32)
  residual = np.asarray(plain(image) - image)
  assert np.abs(residual).max() > 0.05
  features, skips = plain.encode(image)
  energies = np.concatenate([np.log(np.square(np.asarray(x, np.float64)).mean(axis=(1, 2)) + 1e-6)
                             for x in (*skips, features)], axis=1)
  logits = energies @ kernel[:, 0]
  np.testing.assert_allclose(np.asarray(gated.residual_and_gate(image)[1])[:, 0], logits, rtol=1e-4, atol=1e-4)
  for bias in (-logits.max() - 0.5, -logits.min() + 0.5, -logits.mean()):
    gated.gate.bias[...] = jnp.full((1,), bias, jnp.float32)
    applied = (logits + bias > 0).astype(np.float32)
    got = np.asarray(gated(image) - image)
    np.testing.assert_allclose(got, residual * applied[:, None, None, None], atol=1e-6)
  assert list(applied) in ([0, 1], [1, 0])  # the last bias splits the batch: each image by its own logit


def test_odd_tiny_config_variants_run():
  for extra in (dict(deform_groups=2, lgcr_softmax_axes="c"), dict(use_pvb=False, use_dr=False),
                dict(dcn_max_offset=3.0, dcn_sampling="matmul", deform_groups=2)):
    model = SimpleNet(ModelConfig(**TINY, **extra), rngs=nnx.Rngs(1))
    assert model(jnp.zeros((1, 12, 20, 3))).shape == (1, 12, 20, 3)


@pytest.mark.parametrize("shape,message", [
    ((36, 44, 3), "SimpleNet takes RGB batches [N, H, W, 3], got shape (36, 44, 3)"),
    ((1, 36, 44, 4), "got shape (1, 36, 44, 4)"),
    ((1, 36, 44, 1), "convert gray/RGBA images to RGB"),
    ((1, 37, 44, 3), "SimpleNet needs H and W divisible by 4, got 37×44"),
    ((2, 36, 42, 3), "got 36×42; pad the image"),
])
def test_bad_input_is_one_clear_sentence(shape, message):
  model = SimpleNet(ModelConfig(**TINY), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError) as info:
    jax.jit(lambda x: model(x))(jnp.zeros(shape))
  assert message in str(info.value)


@pytest.mark.parametrize("field,value,message", [
    ("use_pvbb", True, "config.model has unknown field(s) ['use_pvbb']"),
    ("widths", (8, 16), "config.model.widths must be three positive ints"),
    ("deform_groups", 3, "config.model.deform_groups=3 must be a positive int that divides every width"),
    ("lgcr_rank", 0, "config.model.lgcr_rank must be a positive int"),
    ("dcn_max_offset", -2.0, "config.model.dcn_max_offset must be a number of pixels ≥ 0 (0 = unbounded)"),
    ("dcn_sampling", "matmul", 'config.model.dcn_sampling="matmul" needs config.model.dcn_max_offset > 0'),
    ("dcn_sampling", "dense", "config.model.dcn_sampling must be one of ('gather', 'matmul')"),
    ("lgcr_softmax_axes", "hw", 'config.model.lgcr_softmax_axes must be "chw" or "c"'),
    ("use_dr", "no", "config.model.use_dr must be True or False"),
    ("residual_gate", 1, "config.model.residual_gate must be True or False"),
    ("lgcr_initial_slope", float("nan"), "config.model.lgcr_initial_slope must be a finite number, got nan."),
    ("lgcr_kernel_3d_std", -0.1, "config.model.lgcr_kernel_3d_std must be a finite number of at least 0, got -0.1."),
])
def test_bad_model_config_is_one_clear_sentence(field, value, message):
  model_config = ml_collections.ConfigDict({**TINY, field: value})
  with pytest.raises(ValueError) as info:
    SimpleNet.from_config(model_config, rngs=nnx.Rngs(0))
  assert message in str(info.value)


def test_lgcr_initialisation_fields_reach_the_module():
  default = SimpleNet(ModelConfig(**TINY), rngs=nnx.Rngs(0)).lgcr
  model = SimpleNet.from_config(ml_collections.ConfigDict({**TINY, "lgcr_initial_slope": 0.1,
                                                           "lgcr_kernel_3d_std": 0.5}), rngs=nnx.Rngs(0)).lgcr
  for axis in "chw":
    np.testing.assert_array_equal(np.asarray(getattr(default, f"slopes_{axis}")[...]), 0.25)
    np.testing.assert_array_equal(np.asarray(getattr(model, f"slopes_{axis}")[...]), np.float32(0.1))
  # the same random draw, scaled: 1/√27 by default, 0.5 here
  np.testing.assert_allclose(np.asarray(model.kernel_3d[...]) / 0.5,
                             np.asarray(default.kernel_3d[...]) * np.sqrt(27), rtol=1e-5)


def _small_residual_model(scale: float = 0.02) -> SimpleNet:
  """A tiny model with a random tail scaled so that its residual is about `scale` (a trained model's is
  small too): bf16 then rounds the residual by ~scale/256, far below an 8-bit level."""
  model = SimpleNet(ModelConfig(**TINY, zero_init_tail=False), rngs=nnx.Rngs(3))
  model.tail.kernel[...] = model.tail.kernel[...] * scale
  return model


def _bf16(model: SimpleNet) -> SimpleNet:
  graphdef, params = nnx.split(model)
  return nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(jnp.bfloat16), params))


def test_bfloat16_compute_rounds_the_residual_not_the_image():
  """bf16 features, float32 image and global residual add: the output stays within a fraction of an 8-bit
  level of float32's. Were the image or the add bf16, values in [0.5, 1) would round by up to 2⁻⁹ ≈ 1/2
  level (the bound below fails by 2×)."""
  model = _small_residual_model()
  image = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 36, 44, 3)), jnp.float32)
  want = nnx.jit(lambda m, x: m(x))(model, image)
  got = nnx.jit(lambda m, x: m(x, compute_dtype=jnp.bfloat16))(_bf16(model), image)
  assert got.dtype == jnp.float32
  residual = float(jnp.abs(want - image).max())
  error = float(jnp.abs(got - want).max())
  assert 0.005 < residual < 0.1, residual  # the network does change the image
  print(f"residual {residual:.4f}, bf16 error {error:.2e}")
  assert 0 < error < 1e-3, (error, residual)


def test_remat_and_tile_size_change_neither_outputs_nor_gradients():
  image = jnp.asarray(np.random.default_rng(6).uniform(size=(2, 20, 28, 3)), jnp.float32)

  def output_and_grads(**execution):
    model = SimpleNet(ModelConfig(**TINY, zero_init_tail=False, **execution), rngs=nnx.Rngs(5))
    graphdef, params = nnx.split(model)

    def loss(p):
      out = nnx.merge(graphdef, p)(image)
      return jnp.mean(out ** 2), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return out, jax.tree.leaves(grads)

  want, want_grads = output_and_grads()
  for execution in (dict(remat=True, dcn_tile_bytes=0),):
    got, grads = output_and_grads(**execution)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, err_msg=str(execution))
    for g, w in zip(grads, want_grads):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-6, err_msg=str(execution))
