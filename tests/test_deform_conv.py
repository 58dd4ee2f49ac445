"""deform_conv2d against a naive NumPy loop (per output pixel, per kernel point, bilinear), and the fast
custom-VJP version against the simple autodiff one (`deform_conv2d_reference`), tiled and untiled."""

import itertools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simplenet_jax.ops import deform_conv
from simplenet_jax.ops import deform_conv2d
from simplenet_jax.ops.deform_conv_reference import deform_conv2d_reference

IMPLEMENTATIONS = {"fast": deform_conv2d, "reference": deform_conv2d_reference}


def _bilinear_numpy(img, y, x):
  """torchvision's bilinear_interpolate: zero outside, each neighbour only if inside. img [H, W, C]."""
  height, width, channels = img.shape
  if y <= -1 or y >= height or x <= -1 or x >= width:
    return np.zeros(channels)
  y0, x0 = int(np.floor(y)), int(np.floor(x))
  ly, lx = y - y0, x - x0
  out = np.zeros(channels)
  for yy, xx, w in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                    (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
    if 0 <= yy < height and 0 <= xx < width:
      out += w * img[yy, xx]
  return out


def deform_conv2d_numpy(x, offset, mask, kernel, stride, padding, dilation):
  n, h, w, cin = x.shape
  kh, kw, _, cout = kernel.shape
  ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
  wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
  groups = offset.shape[-1] // (2 * kh * kw)
  cg = cin // groups
  out = np.zeros((n, ho, wo, cout))
  for b, r, c in itertools.product(range(n), range(ho), range(wo)):
    for g in range(groups):
      for i, j in itertools.product(range(kh), range(kw)):
        k = i * kw + j
        dy = offset[b, r, c, g * 2 * kh * kw + 2 * k]
        dx = offset[b, r, c, g * 2 * kh * kw + 2 * k + 1]
        y = r * stride - padding + i * dilation + dy
        xx = c * stride - padding + j * dilation + dx
        val = _bilinear_numpy(x[b, :, :, g * cg:(g + 1) * cg], y, xx)
        if mask is not None:
          val = val * mask[b, r, c, g * kh * kw + k]
        out[b, r, c] += val @ kernel[i, j, g * cg:(g + 1) * cg]
  return out


def _inputs(rng, n, h, w, cin, cout, groups, stride, padding, dilation, offset_scale, masked, k=3):
  ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
  wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
  x = rng.normal(size=(n, h, w, cin))
  offset = rng.normal(scale=offset_scale, size=(n, ho, wo, 2 * groups * k * k))
  mask = rng.uniform(size=(n, ho, wo, groups * k * k)) if masked else None
  kernel = rng.normal(size=(k, k, cin, cout))
  return x, offset, mask, kernel


CASES = [
    # n, h, w, cin, cout, groups, stride, padding, dilation, offset_scale, masked
    (2, 7, 9, 4, 3, 1, 1, 1, 1, 1.5, True),
    (1, 9, 7, 4, 5, 2, 1, 1, 1, 2.0, False),
    (2, 9, 11, 2, 3, 1, 2, 1, 1, 1.0, True),
    (1, 11, 10, 6, 2, 2, 2, 2, 2, 3.0, True),
    (1, 10, 9, 3, 4, 1, 1, 3, 3, 1.0, False),
    (1, 8, 9, 4, 3, 2, 1, 0, 1, 0.7, True),
    # offsets that push samples far outside the image (and partly back in)
    (1, 7, 8, 2, 3, 1, 1, 1, 2, 9.0, True),
]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_loop_float64(case, implementation):
  *shape, stride, padding, dilation, scale, masked = case
  rng = np.random.default_rng(sum(shape) + stride + dilation)
  args = _inputs(rng, *shape, stride, padding, dilation, scale, masked)
  expected = deform_conv2d_numpy(*args, stride, padding, dilation)
  conv = IMPLEMENTATIONS[implementation]
  with jax.enable_x64(True):
    fn = jax.jit(lambda x, o, m, k: conv(x, o, m, k, stride=stride, padding=padding, dilation=dilation))
    got = fn(*[None if a is None else jnp.asarray(a) for a in args])
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10, atol=1e-10)


def test_float32_close_to_reference():
  rng = np.random.default_rng(3)
  args = _inputs(rng, 2, 9, 7, 4, 3, 2, 1, 1, 1, 2.0, True)
  expected = deform_conv2d_numpy(*args, 1, 1, 1)
  got = deform_conv2d(*[None if a is None else jnp.asarray(a, jnp.float32) for a in args])
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-4, atol=1e-4)


def test_far_outside_is_exactly_zero():
  rng = np.random.default_rng(4)
  x, offset, mask, kernel = _inputs(rng, 1, 7, 9, 3, 2, 1, 1, 1, 1, 1.0, True)
  offset = np.full_like(offset, 50.0)  # every sample lands > 1 px outside the image
  out = deform_conv2d(jnp.asarray(x), jnp.asarray(offset), jnp.asarray(mask), jnp.asarray(kernel))
  assert np.all(np.asarray(out) == 0.0)


@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 3, 0)])
def test_zero_offset_unit_mask_equals_regular_conv(stride, dilation, padding):
  rng = np.random.default_rng(stride * 10 + dilation)
  x, offset, mask, kernel = _inputs(rng, 2, 13, 11, 5, 4, 1, stride, padding, dilation, 1.0, True)
  with jax.enable_x64(True):
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    got = deform_conv2d(x, jnp.zeros(offset.shape), jnp.ones(mask.shape), kernel,
                        stride=stride, padding=padding, dilation=dilation)
    dcnv1 = deform_conv2d(x, jnp.zeros(offset.shape), None, kernel,
                          stride=stride, padding=padding, dilation=dilation)
    want = jax.lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
                                        rhs_dilation=(dilation, dilation),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(np.asarray(dcnv1), np.asarray(want), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [
    (1, 6, 7, 4, 3, 2, 1, 1, 1, 1.3, True),
    # The fast tier checks one case; the whole suite all three (finite differences of a NumPy loop are slow).
    pytest.param((1, 7, 6, 2, 2, 1, 2, 1, 2, 2.5, True), marks=pytest.mark.slow),
    pytest.param((1, 5, 6, 3, 2, 1, 1, 1, 1, 4.0, False), marks=pytest.mark.slow),
])
def test_gradients_match_finite_differences_of_numpy_reference(case):
  """Directional derivatives of all four inputs against central differences of the NumPy loop."""
  *shape, stride, padding, dilation, scale, masked = case
  rng = np.random.default_rng(7 + stride + dilation)
  args = list(_inputs(rng, *shape, stride, padding, dilation, scale, masked))
  weights = rng.normal(size=deform_conv2d_numpy(*args, stride, padding, dilation).shape)

  def loss_numpy(a):
    return float(np.sum(deform_conv2d_numpy(*a, stride, padding, dilation) * weights))

  with jax.enable_x64(True):
    def loss_jax(x, o, m, k):
      out = deform_conv2d(x, o, m, k, stride=stride, padding=padding, dilation=dilation)
      return jnp.sum(out * weights)
    argnums = (0, 1, 2, 3) if masked else (0, 1, 3)
    jargs = [None if a is None else jnp.asarray(a) for a in args]
    grads = jax.grad(loss_jax, argnums=argnums)(*jargs)

  eps = 1e-6
  for arg_index, grad in zip(argnums, grads):
    for _ in range(3):
      direction = rng.normal(size=args[arg_index].shape)
      plus = [a if i != arg_index else a + eps * direction for i, a in enumerate(args)]
      minus = [a if i != arg_index else a - eps * direction for i, a in enumerate(args)]
      numeric = (loss_numpy(plus) - loss_numpy(minus)) / (2 * eps)
      analytic = float(np.sum(np.asarray(grad) * direction))
      np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-6,
                                 err_msg=f"gradient of argument {arg_index}")


def test_jit_and_vmap_agree():
  rng = np.random.default_rng(11)
  x, offset, mask, kernel = (jnp.asarray(a, jnp.float32) for a in
                             _inputs(rng, 3, 8, 9, 4, 2, 2, 1, 1, 1, 1.0, True))
  direct = deform_conv2d(x, offset, mask, kernel)
  mapped = jax.vmap(lambda a, o, m: deform_conv2d(a[None], o[None], m[None], kernel)[0])(x, offset, mask)
  np.testing.assert_allclose(np.asarray(jax.jit(deform_conv2d)(x, offset, mask, kernel)),
                             np.asarray(direct), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(mapped), np.asarray(direct), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bad,message", [
    (dict(x=np.zeros((7, 9, 4))), "x must be [N, H, W, Cin]"),
    (dict(kernel=np.zeros((3, 3, 5, 2))), "kernel has 5 input channels but x has 4"),
    (dict(offset=np.zeros((1, 7, 9, 17))), "offset must be [1, 7, 9, 2·G·9]"),
    (dict(offset=np.zeros((1, 7, 9, 54))), "3 offset groups do not divide the 4 input channels"),
    (dict(mask=np.zeros((1, 7, 9, 18))), "mask must be [1, 7, 9, 9]"),
])
def test_bad_shapes_raise_one_clear_sentence(bad, message):
  args = dict(x=np.zeros((1, 7, 9, 4)), offset=np.zeros((1, 7, 9, 18)), mask=np.zeros((1, 7, 9, 9)),
              kernel=np.zeros((3, 3, 4, 2)))
  args.update(bad)
  with pytest.raises(ValueError) as info:
    deform_conv2d(*(jnp.asarray(args[k]) for k in ("x", "offset", "mask", "kernel")))
  assert message in str(info.value)


# --- The fast implementation's own machinery: tiles, custom VJP, dtypes, transformations. ---

TILED_CASES = [  # the fast tier checks the last (several tiles, the last one padded); the whole suite all three
    # n, h, w, cin, cout, groups, stride, padding, dilation, offset_scale, masked, tile rows
    pytest.param((2, 9, 8, 4, 3, 2, 1, 1, 1, 2.0, True, 1), marks=pytest.mark.slow),
    pytest.param((1, 11, 9, 4, 5, 1, 2, 1, 2, 3.0, False, 2), marks=pytest.mark.slow),  # Ho = 6: three tiles of two rows
    (2, 10, 7, 6, 2, 2, 1, 2, 2, 9.0, True, 3),  # Ho = 10: four tiles of three rows, the last padded
]


@pytest.mark.parametrize("case", TILED_CASES)
def test_tiled_forward_and_vjp_match_autodiff_reference_float64(case):
  """Whole vector-Jacobian products (not just directions) of all four inputs, with several tiles and a
  padded last tile, against autodiff of the simple implementation."""
  *shape, stride, padding, dilation, scale, masked, rows = case
  rng = np.random.default_rng(sum(shape) + rows)
  args = _inputs(rng, *shape, stride, padding, dilation, scale, masked)
  geometry = dict(stride=stride, padding=padding, dilation=dilation)
  out_hw = tuple(deform_conv.output_size(args[0].shape[i], 3, stride, padding, dilation) for i in (1, 2))
  row_bytes = 4 * args[0].shape[0] * out_hw[1] * 9 * args[0].shape[3]
  tile_bytes = rows * row_bytes
  assert deform_conv.tile_rows(args[0].shape[0], args[0].shape[3], (3, 3), out_hw, tile_bytes)[0] == rows
  with jax.enable_x64(True):
    jargs = [None if a is None else jnp.asarray(a) for a in args]
    out, vjp = jax.vjp(lambda *a: deform_conv2d(*a, **geometry, tile_bytes=tile_bytes), *jargs)
    want, vjp_ref = jax.vjp(lambda *a: deform_conv2d_reference(*a, **geometry), *jargs)
    cotangent = jnp.asarray(rng.normal(size=out.shape))
    grads, grads_ref = vjp(cotangent), vjp_ref(cotangent)
  np.testing.assert_allclose(np.asarray(out), np.asarray(want), rtol=1e-11, atol=1e-11)
  np.testing.assert_allclose(np.asarray(out), deform_conv2d_numpy(*args, stride, padding, dilation),
                             rtol=1e-10, atol=1e-10)
  assert_vjps_match_float64(grads, grads_ref)


def assert_vjps_match_float64(grads, grads_ref):
  """The four gradients (x, offset, mask or None, kernel) agree to 1e-10 and are float64."""
  for name, got, expected in zip(("x", "offset", "mask", "kernel"), grads, grads_ref):
    if expected is None:
      assert got is None
      continue
    assert got.dtype == jnp.float64, name
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-10, atol=1e-10,
                               err_msg=f"gradient of {name}")


def test_tiles_cover_the_output_with_less_than_a_row_of_padding_each():
  row_bytes = 4 * 2 * 7 * 9 * 6  # float32 im2col of one output row: N · Wo · kh·kw · Cin
  assert deform_conv.tile_rows(2, 6, (3, 3), (10, 7), 3 * row_bytes) == (3, 4)  # the last tile padded by 2
  assert deform_conv.tile_rows(2, 6, (3, 3), (10, 7), 3 * row_bytes + row_bytes - 1) == (3, 4)
  assert deform_conv.tile_rows(2, 6, (3, 3), (10, 7), 1) == (1, 10)  # never less than a row
  assert deform_conv.tile_rows(2, 6, (3, 3), (10, 7), 0) == (10, 1)  # 0: one tile, plain im2col
  assert deform_conv.tile_rows(2, 6, (3, 3), (10, 7), 10 ** 9) == (10, 1)


def test_tiling_does_not_depend_on_the_tracing_platform(monkeypatch):
  """What compiles here is what an accelerator gets: the lowered program is the same whatever backend
  JAX reports while tracing."""
  x = jnp.zeros((1, 12, 9, 4))
  offset, mask, kernel = jnp.zeros((1, 12, 9, 18)), jnp.ones((1, 12, 9, 9)), jnp.zeros((3, 3, 4, 2))
  texts = []
  for backend in ("cpu", "gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    fn = jax.jit(lambda *a: deform_conv2d(*a, tile_bytes=4 * 9 * 9 * 4 * 5))  # traced afresh each time
    texts.append(fn.lower(x, offset, mask, kernel).as_text())
  assert "while" in texts[0] and texts[0] == texts[1] == texts[2]


def test_nan_offset_stays_in_bounds_and_shows_in_the_output():
  """A NaN offset must not index outside the image (the gathers promise in-bounds indices); it makes
  exactly the outputs that read it NaN rather than hiding it."""
  x = jnp.ones((1, 6, 7, 2))
  offset = jnp.zeros((1, 6, 7, 18)).at[0, 2, 3, 4].set(jnp.nan)
  out = np.asarray(deform_conv2d(x, offset, jnp.ones((1, 6, 7, 9)), jnp.ones((3, 3, 2, 3))))
  nan_pixels = np.argwhere(np.isnan(out).any(axis=-1))
  np.testing.assert_array_equal(nan_pixels, [[0, 2, 3]])


def test_bfloat16_inputs_sample_in_float32():
  rng = np.random.default_rng(5)
  args = _inputs(rng, 2, 12, 10, 8, 4, 2, 1, 1, 1, 2.0, True)
  bf16 = [jnp.asarray(a, jnp.bfloat16) for a in args]
  # The same (rounded) numbers in float32: what is left is the bf16 rounding of the columns and of ∂out.
  f32 = [a.astype(jnp.float32) for a in bf16]
  out = deform_conv2d(*bf16)
  assert out.dtype == jnp.bfloat16
  exact = deform_conv2d_numpy(*[np.asarray(a, np.float64) for a in f32], 1, 1, 1)
  np.testing.assert_allclose(np.asarray(out, np.float32), exact, atol=0.02 * np.abs(exact).max())

  def loss(*a):
    return jnp.sum(jnp.sin(deform_conv2d(*a).astype(jnp.float32)))

  grads = jax.grad(loss, argnums=(0, 1, 2, 3))(*bf16)
  grads32 = jax.grad(loss, argnums=(0, 1, 2, 3))(*f32)
  for name, got, want in zip(("x", "offset", "mask", "kernel"), grads, grads32):
    assert got.dtype == jnp.bfloat16, name
    got, want = np.asarray(got, np.float32), np.asarray(want)
    np.testing.assert_allclose(got, want, atol=0.03 * np.abs(want).max(), err_msg=f"gradient of {name}")


def test_grad_under_jit_and_vmap_matches_batched_call():
  """Per-example gradients from vmap of the single-image call equal the batched call's gradients."""
  rng = np.random.default_rng(12)
  x, offset, mask, kernel = (jnp.asarray(a, jnp.float32) for a in
                             _inputs(rng, 3, 8, 9, 4, 2, 2, 1, 1, 1, 1.5, True))

  def loss(x, offset, mask, kernel):
    return jnp.sum(jnp.sin(deform_conv2d(x, offset, mask, kernel)))

  batched = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(x, offset, mask, kernel)
  per_example = jax.jit(jax.vmap(
      jax.grad(lambda a, o, m, k: loss(a[None], o[None], m[None], k), argnums=(0, 1, 2, 3)),
      in_axes=(0, 0, 0, None)))(x, offset, mask, kernel)
  for got, want in zip(per_example[:3], batched[:3]):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(per_example[3].sum(0)), np.asarray(batched[3]), rtol=1e-4, atol=1e-4)


_SHARDING_CHECK = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from simplenet_jax.ops import deform_conv2d
    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (8, 12, 10, 6))
    offset = 2 * jax.random.normal(keys[1], (8, 12, 10, 18))
    mask = jax.random.uniform(keys[2], (8, 12, 10, 9))
    kernel = jax.random.normal(keys[3], (3, 3, 6, 5))
    def loss(x, offset, mask, kernel):
      return jnp.sum(deform_conv2d(x, offset, mask, kernel) ** 2)
    step = jax.value_and_grad(loss, argnums=(0, 1, 2, 3))
    want = jax.jit(step)(x, offset, mask, kernel)
    batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    sharded = jax.jit(step, in_shardings=(batch, batch, batch, replicated))
    got = sharded(*(jax.device_put(a, s) for a, s in zip((x, offset, mask, kernel), (batch,) * 3 + (replicated,))))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-4, atol=2e-4)
    assert got[1][0].sharding.spec[0] == "data", got[1][0].sharding
    out = jax.jit(deform_conv2d, in_shardings=(batch, batch, batch, replicated))(x, offset, mask, kernel)
    assert out.sharding.spec[0] == "data", out.sharding
    # Data parallel for real: no device gathers another's images; only ∂kernel is summed across devices.
    hlo = sharded.lower(x, offset, mask, kernel).compile().as_text()
    assert "all-gather(" not in hlo and "all-to-all(" not in hlo, "a sharded call gathers the batch"
    print("sharding ok")
""")


@pytest.mark.slow
def test_sharded_over_four_cpu_devices_matches_single_device():
  """Batch-sharded forward and gradients on a 4-device CPU mesh equal the single-device ones, without
  collectives on the images (its own process: the device count is fixed when JAX starts)."""
  env = dict(os.environ, XLA_FLAGS=f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, "-c", _SHARDING_CHECK], env=env, capture_output=True, text=True,
                          timeout=300, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "sharding ok" in result.stdout


def test_shape_polymorphic_export_tiles_rows_and_matches_numpy_loop():
  """`jax.export` with a symbolic batch, height and width (simplenet_jax.export): the tile plan is made for
  a 1280-wide row and so several tiles of 2 rows here, looped over a symbolic count."""
  cin, groups = 4, 2
  tile_bytes = 2 * 4 * deform_conv.SYMBOLIC_WIDTH * 9 * cin
  n, h, w = jax.export.symbolic_shape("n, h, w")
  specs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in
           ((n, h, w, cin), (n, h, w, 2 * groups * 9), (n, h, w, groups * 9), (3, 3, cin, 3))]
  assert deform_conv.tile_rows(n, cin, (3, 3), (h, w), tile_bytes)[0] == 2
  exported = jax.export.export(jax.jit(lambda *a: deform_conv2d(*a, tile_bytes=tile_bytes)))(*specs)
  rng = np.random.default_rng(5)
  for size in ((2, 7, 9), (1, 10, 5)):
    args = _inputs(rng, *size, cin, 3, groups, 1, 1, 1, 1.5, True)
    got = exported.call(*[jnp.asarray(a, jnp.float32) for a in args])
    np.testing.assert_allclose(np.asarray(got), deform_conv2d_numpy(*args, 1, 1, 1), rtol=1e-4, atol=1e-4)
