"""The deformable conv's matmul sampling (`sampling="matmul"`, `ops/deform_conv_windowed.py`): against the NumPy
loop of test_deform_conv.py on clipped offsets, and its custom VJP against autodiff of the gather-and-autodiff
reference, in float64, with odd sizes, groups, strides, dilations, several tiles and partial blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simplenet_jax.ops import deform_conv2d
from simplenet_jax.ops import deform_conv_windowed
from simplenet_jax.ops.deform_conv_reference import deform_conv2d_reference
from test_deform_conv import _inputs
from test_deform_conv import assert_vjps_match_float64
from test_deform_conv import deform_conv2d_numpy

CASES = [  # the fast tier checks the second (groups, tiles, DCNv1); the whole suite all five
    # n, h, w, cin, cout, groups, stride, padding, dilation, offset_scale, masked, max_offset, tile_bytes
    pytest.param((2, 13, 11, 6, 5, 1, 1, 1, 1, 2.5, True, 3.0, 0), marks=pytest.mark.slow),  # 1/4 clipped
    (1, 17, 9, 4, 3, 2, 1, 1, 1, 2.5, False, 2.5, 1),  # one block row a tile: three tiles, groups, DCNv1
    pytest.param((2, 12, 15, 4, 4, 1, 2, 1, 1, 4.0, True, 4, 0), marks=pytest.mark.slow),  # stride 2
    pytest.param((1, 10, 12, 3, 2, 1, 1, 2, 2, 3.0, True, 3, 0), marks=pytest.mark.slow),  # dilation 2
    # samples far outside the image, a fractional bound
    pytest.param((1, 9, 8, 2, 3, 1, 1, 1, 1, 12.0, True, 9.5, 0), marks=pytest.mark.slow),
]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
  """Blocks of 4 output pixels: the small images below then span several blocks, block rows and tiles, with
  partial blocks at their edges (the default, 32, would make each of them one partial block)."""
  monkeypatch.setattr(deform_conv_windowed, "DEFAULT_BLOCK", 4)


def test_the_cases_span_blocks_and_tiles():
  *shape, stride, padding, dilation, _, _, bound, tile_bytes = CASES[1]
  n, h, w, cin, cout = shape[:5]
  geo = deform_conv_windowed.geometry((n, h, w, cin), (3, 3, cin, cout), (h, w), (stride,) * 2, (padding,) * 2,
                                      (dilation,) * 2, shape[5], bound, tile_bytes)
  assert geo.tiles >= 3 and geo.blocks[1] >= 3 and h % geo.block and w % geo.block


def _clipped(offset, bound):
  return np.clip(offset, -bound, bound)


@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_loop_on_clipped_offsets_float64(case):
  *shape, stride, padding, dilation, scale, masked, bound, tile_bytes = case
  rng = np.random.default_rng(sum(shape) + stride + dilation)
  x, offset, mask, kernel = _inputs(rng, *shape, stride, padding, dilation, scale, masked)
  assert np.mean(np.abs(offset) > bound) > 0.05  # the bound matters in every case
  expected = deform_conv2d_numpy(x, _clipped(offset, bound), mask, kernel, stride, padding, dilation)
  with jax.enable_x64(True):
    got = jax.jit(lambda *a: deform_conv2d(*a, stride=stride, padding=padding, dilation=dilation,
                                           max_offset=bound, sampling="matmul", tile_bytes=tile_bytes))(
        *[None if a is None else jnp.asarray(a) for a in (x, offset, mask, kernel)])
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_vjp_matches_autodiff_of_reference_on_clipped_offsets_float64(case):
  """Whole vector-Jacobian products of all four inputs; a clipped offset has no gradient."""
  *shape, stride, padding, dilation, scale, masked, bound, tile_bytes = case
  rng = np.random.default_rng(sum(shape) + 17)
  args = _inputs(rng, *shape, stride, padding, dilation, scale, masked)
  geometry = dict(stride=stride, padding=padding, dilation=dilation)
  with jax.enable_x64(True):
    jargs = [None if a is None else jnp.asarray(a) for a in args]
    out, vjp = jax.vjp(lambda *a: deform_conv2d(*a, **geometry, max_offset=bound, sampling="matmul",
                                                tile_bytes=tile_bytes), *jargs)
    want, vjp_ref = jax.vjp(lambda x, o, m, k: deform_conv2d_reference(x, jnp.clip(o, -bound, bound), m, k,
                                                                        **geometry), *jargs)
    cotangent = jnp.asarray(rng.normal(size=out.shape))
    grads, grads_ref = vjp(cotangent), vjp_ref(cotangent)
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-11, atol=1e-11)
  assert_vjps_match_float64(grads, grads_ref)
  clipped = np.abs(args[1]) > bound
  assert np.all(np.asarray(grads[1])[clipped] == 0) and np.any(np.asarray(grads[1])[~clipped] != 0)


def test_gather_sampling_with_a_bound_gives_the_same_float32_results():
  """`sampling` is an execution choice: the gather path on the same bound computes the same function."""
  rng = np.random.default_rng(21)
  args = [jnp.asarray(a, jnp.float32) for a in _inputs(rng, 2, 19, 13, 8, 6, 1, 1, 1, 1, 4.0, True)]
  outputs = {}
  for sampling in ("gather", "matmul"):
    fn = lambda *a, s=sampling: jnp.sum(deform_conv2d(*a, max_offset=5.0, sampling=s) ** 2)
    outputs[sampling] = (deform_conv2d(*args, max_offset=5.0, sampling=sampling),
                         *jax.grad(fn, argnums=(0, 1, 2, 3))(*args))
  for got, want in zip(outputs["matmul"], outputs["gather"]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("cin,hw,block", [(8, (41, 37), 32),
                                          pytest.param(128, (35, 20), 16, marks=pytest.mark.slow)])
def test_the_default_blocks_give_the_gather_results(monkeypatch, cin, hw, block):
  """Without a test's blocks of 4: the default block for the input's width (32 under 128 channels, 16 from
  128), with partial blocks at the edges, computes the gather path's function, forward and backward."""
  monkeypatch.setattr(deform_conv_windowed, "DEFAULT_BLOCK", None)
  geo = deform_conv_windowed.geometry((1, *hw, cin), (3, 3, cin, 4), hw, (1, 1), (1, 1), (1, 1), 1, 8.0, 0)
  assert geo.block == block and geo.blocks[0] >= 2 and hw[0] % block and hw[1] % block
  rng = np.random.default_rng(5)
  args = [jnp.asarray(a, jnp.float32) for a in _inputs(rng, 1, *hw, cin, 4, 1, 1, 1, 1, 6.0, True)]
  outputs = {}
  for sampling in ("gather", "matmul"):
    fn = lambda *a, s=sampling: jnp.sum(deform_conv2d(*a, max_offset=8.0, sampling=s, tile_bytes=0) ** 2)
    outputs[sampling] = (deform_conv2d(*args, max_offset=8.0, sampling=sampling, tile_bytes=0),
                         *jax.grad(fn, argnums=(0, 1, 2, 3))(*args))
  for got, want in zip(outputs["matmul"], outputs["gather"]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


def test_nan_offset_shows_in_exactly_the_outputs_that_read_it():
  x = jnp.ones((1, 6, 7, 2))
  offset = jnp.zeros((1, 6, 7, 18)).at[0, 2, 3, 4].set(jnp.nan)
  out = np.asarray(deform_conv2d(x, offset, jnp.ones((1, 6, 7, 9)), jnp.ones((3, 3, 2, 3)), max_offset=2.0,
                                 sampling="matmul"))
  np.testing.assert_array_equal(np.argwhere(np.isnan(out).any(axis=-1)), [[0, 2, 3]])


def test_windows_hold_every_sample_of_their_block():
  """A block's window spans its samples' whole reach, for any stride, dilation and bound."""
  for stride, dilation, bound in ((1, 1, 8.0), (2, 1, 3.0), (1, 3, 2.5)):
    geo = deform_conv_windowed.geometry((1, 40, 40, 4), (3, 3, 4, 4), (40 // stride, 40 // stride),
                                        (stride, stride), (1, 1), (dilation, dilation), 1, bound, 0, block=4)
    highest = (4 - 1) * stride + 2 * dilation + geo.reach + bound + 1  # last row's corner below its sample
    assert geo.window[0] >= highest + 1 and geo.reach - bound >= 0


@pytest.mark.parametrize("kwargs,message", [
    (dict(sampling="matmul"), "needs max_offset"),
    (dict(sampling="scatter"), "sampling must be one of"),
    (dict(max_offset=-1.0), "max_offset must be None or a positive number"),
])
def test_bad_arguments_raise_one_sentence(kwargs, message):
  x, offset, mask, kernel = jnp.zeros((1, 5, 5, 2)), jnp.zeros((1, 5, 5, 18)), None, jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError, match=message):
    deform_conv2d(x, offset, mask, kernel, **kwargs)
