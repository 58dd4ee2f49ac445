"""ResBlock, DeformConv, PVB, DR, LGCR modules: residual structure, shapes at odd sizes, initial state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from simplenet_jax.models import LGCR
from simplenet_jax.models import PVB
from simplenet_jax.models import DeformableResBlock
from simplenet_jax.models import DeformConv
from simplenet_jax.models import ResBlock
from simplenet_jax.models.blocks import up_conv4x4
from test_global_context import lgcr_numpy


def _zero(param):
  param[...] = jnp.zeros_like(param[...])


def _input(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# (block, the layer whose zeroing must turn the block into the identity, its least change at initialisation
# relative to the input's largest value: LGCR's eq. 3 softmax spreads over C·H·W values, so its residual
# starts tiny; `test_lgcr_module_equals_its_numpy_transcription_where_its_effect_is_large` measures it)
BLOCKS = [
    (lambda rngs: ResBlock(6, rngs=rngs), lambda b: (_zero(b.conv3.kernel), _zero(b.conv3.bias)), 0.1),
    (lambda rngs: PVB(6, deform_groups=2, rngs=rngs), lambda b: (_zero(b.fuse.kernel), _zero(b.fuse.bias)), 0.1),
    (lambda rngs: DeformableResBlock(6, rngs=rngs), lambda b: (_zero(b.conv.kernel), _zero(b.conv.bias)), 0.1),
    (lambda rngs: LGCR(rank=5, rngs=rngs), lambda b: _zero(b.kernel_3d), 1e-4),
]


@pytest.mark.parametrize("make,zero_last,least_change", BLOCKS)
@pytest.mark.parametrize("shape", [(2, 9, 7, 6), (1, 5, 13, 6)])
def test_shape_and_zeroed_last_layer_is_identity(make, zero_last, least_change, shape):
  block = make(nnx.Rngs(0))
  x = _input(shape)
  y = block(x)
  assert y.shape == x.shape
  change = float(np.abs(np.asarray(y) - np.asarray(x)).max() / np.abs(np.asarray(x)).max())
  assert change > least_change, f"an initialised block changes its input by only {change:.1e} of it"
  zero_last(block)
  np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))


@pytest.mark.parametrize("softmax_axes", ["chw", "c"])
def test_lgcr_module_equals_its_numpy_transcription_where_its_effect_is_large(softmax_axes):
  """Every weight random and distinct per axis (slopes too), large enough that the refinement is a tenth of
  the input or more, so that a swapped, dropped or mis-wired weight shows far above float rounding."""
  rank, shape = 5, (2, 9, 7, 6)
  block = LGCR(rank=rank, softmax_axes=softmax_axes, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(3)
  for name in ("kernel_c", "kernel_h", "kernel_w"):
    getattr(block, name)[...] = jnp.asarray(rng.normal(size=(3, rank)) * 4, jnp.float32)
  for name in ("slopes_c", "slopes_h", "slopes_w"):
    getattr(block, name)[...] = jnp.asarray(rng.uniform(-0.5, 0.5, size=rank), jnp.float32)
  block.kernel_3d[...] = jnp.asarray(rng.normal(size=(3, 3, 3)) * 3, jnp.float32)
  x = np.random.default_rng(4).normal(size=shape).astype(np.float32) + 1.0
  weights = [np.asarray(getattr(block, name)[...], np.float64) for name in
             ("kernel_c", "kernel_h", "kernel_w", "slopes_c", "slopes_h", "slopes_w", "kernel_3d")]
  want = lgcr_numpy(x.astype(np.float64), *weights, softmax_axes)
  got = np.asarray(block(jnp.asarray(x)), np.float64)
  effect = np.abs(want - x).max()
  assert effect > 0.1 * np.abs(x).max(), f"the weights do not make LGCR matter ({effect:.2e})"
  np.testing.assert_allclose(got - x, want - x, atol=1e-4 * effect)


def test_untrained_deform_conv_is_plain_conv_with_half_mask():
  layer = DeformConv(5, 4, groups=1, rngs=nnx.Rngs(1))
  layer.bias[...] = jnp.arange(4.0)
  x = _input((2, 9, 11, 5), seed=2)
  plain = jax.lax.conv_general_dilated(x, 0.5 * layer.kernel[...], (1, 1), [(1, 1), (1, 1)],
                                       dimension_numbers=("NHWC", "HWIO", "NHWC")) + jnp.arange(4.0)
  np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain), rtol=1e-5, atol=1e-5)


def test_deform_conv_offsets_move_the_samples():
  layer = DeformConv(3, 2, rngs=nnx.Rngs(0))
  x = _input((1, 8, 8, 3), seed=3)
  before = layer(x)
  layer.offset_conv.bias[...] = jnp.full_like(layer.offset_conv.bias[...], 0.5)
  assert not np.allclose(np.asarray(layer(x)), np.asarray(before))


def test_up_conv_doubles_size_like_pytorch_transposed_conv():
  """ConvTranspose2d(k=4, s=2, p=1) = zero-insertion upsampling, pad k−1−p = 2, conv with the flipped kernel."""
  up = up_conv4x4(3, 2, rngs=nnx.Rngs(0))
  x = _input((1, 5, 7, 3), seed=4)
  y = up(x)
  assert y.shape == (1, 10, 14, 2)
  kernel = np.asarray(up.kernel[...])
  xn = np.asarray(x)[0]
  dilated = np.zeros((9, 13, 3))
  dilated[::2, ::2] = xn
  padded = np.pad(dilated, ((2, 3), (2, 3), (0, 0)))
  # PyTorch would hold this kernel flipped; correlating with Flax's own (unflipped) kernel is the same maths.
  want = np.zeros((10, 14, 2))
  for r in range(10):
    for c in range(14):
      want[r, c] = np.einsum("ijc,ijco->o", padded[r:r + 4, c:c + 4], kernel)
  np.testing.assert_allclose(np.asarray(y)[0], want + np.asarray(up.bias[...]), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_pvb_gradients_are_finite_and_nonzero():
  block = PVB(4, rngs=nnx.Rngs(0))
  x = _input((1, 7, 9, 4))
  grads = nnx.grad(lambda b: jnp.sum(b(x) ** 2))(block)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
  # the offset convs start at zero but must receive gradient (otherwise they could never learn to deform)
  assert float(jnp.abs(grads.fuse.offset_conv.kernel[...]).sum()) > 0
