"""deform_conv2d against a naive NumPy loop (per output pixel, per kernel point, bilinear)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simplenet_jax.ops import deform_conv2d


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


@pytest.mark.parametrize("case", CASES)
def test_matches_numpy_loop_float64(case):
  *shape, stride, padding, dilation, scale, masked = case
  rng = np.random.default_rng(sum(shape) + stride + dilation)
  args = _inputs(rng, *shape, stride, padding, dilation, scale, masked)
  expected = deform_conv2d_numpy(*args, stride, padding, dilation)
  with jax.enable_x64(True):
    fn = jax.jit(lambda x, o, m, k: deform_conv2d(x, o, m, k, stride=stride, padding=padding,
                                                   dilation=dilation))
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
    (1, 7, 6, 2, 2, 1, 2, 1, 2, 2.5, True),
    (1, 5, 6, 3, 2, 1, 1, 1, 1, 4.0, False),
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
