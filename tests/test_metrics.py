"""PSNR and SSIM in both conventions against a formula, scikit-image and a scipy 3-D Gaussian SSIM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import skimage.data
from skimage.metrics import structural_similarity

from simplenet_jax import photos
from simplenet_jax.evaluation import metrics


def matlab_ssim_scipy(a, b):
  """MATLAB ssim(A, ref) on an H×W×3 array: one 3-D volume, 3-D Gaussian σ=1.5 in an 11³ box, replicate."""
  a, b = a.astype(np.float64), b.astype(np.float64)

  def blur(v):  # scipy's radius is int(truncate·σ + 0.5) = 5, as MATLAB's 2·ceil(3σ)+1 = 11 taps
    return scipy.ndimage.gaussian_filter(v, sigma=1.5, mode="nearest", truncate=5 / 1.5)

  mu_a, mu_b = blur(a), blur(b)
  var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  return np.mean((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))


def python_ssim_skimage(a, b):
  return structural_similarity(a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                               use_sample_covariance=False, data_range=255)


def _pairs():
  """Random and photographic pairs at odd sizes: (sharp, degraded) uint8."""
  rng = np.random.default_rng(0)
  photo = skimage.data.astronaut()[101:138, 203:256]  # 37×53
  blurred = scipy.ndimage.uniform_filter(photo.astype(float), size=(1, 7, 1)) + rng.normal(0, 3, photo.shape)
  noise = rng.integers(0, 256, (45, 31, 3))
  pairs = [(photo, np.clip(np.round(blurred), 0, 255)),
           (noise, np.clip(noise + rng.integers(-60, 60, noise.shape), 0, 255)),
           (skimage.data.coffee()[:123, :97], np.clip(skimage.data.coffee()[3:126, 2:99].astype(int) - 9, 0, 255))]
  return [(a.astype(np.uint8), b.astype(np.uint8)) for a, b in pairs]


REFERENCES = {"python": python_ssim_skimage, "matlab": matlab_ssim_scipy}


@pytest.mark.parametrize("convention", metrics.CONVENTIONS)
@pytest.mark.parametrize("index", range(3))
def test_ssim_matches_independent_reference(index, convention):
  """float32 (what evaluation runs on every device) to 1e-6, and x64 to 1e-10."""
  a, b = _pairs()[index]
  want = REFERENCES[convention](b, a)
  with jax.enable_x64(True):
    got = float(metrics.ssim(jnp.asarray(b), jnp.asarray(a), convention))
  assert abs(got - want) < 1e-10
  got32 = metrics.ssim(jnp.asarray(b), jnp.asarray(a), convention)
  assert got32.dtype == jnp.float32 and abs(float(got32) - want) < 1e-6


def _flat_pairs():
  """Where float32 SSIM's textbook E[x²] − μ² cancels: large flat areas far from mid-grey, noise of ±2 levels
  (the textbook formula is off by 1.4e-5 on flat 254; `ops.ssim` computes about each window's centre)."""
  rng = np.random.default_rng(3)
  half = np.full((67, 95, 3), 2)
  half[:, 40:] = 253
  cases = [np.full((61, 83, 3), 254), half, np.full((53, 71, 3), 1)]
  return [(a.astype(np.uint8), np.clip(a + rng.integers(-2, 3, a.shape), 0, 255).astype(np.uint8)) for a in cases]


@pytest.mark.parametrize("convention", metrics.CONVENTIONS)
@pytest.mark.parametrize("index", range(3))
def test_float32_ssim_is_accurate_on_flat_bright_and_dark_areas(index, convention):
  a, b = _flat_pairs()[index]
  want = REFERENCES[convention](b, a)
  got = metrics.ssim(jnp.asarray(b), jnp.asarray(a), convention)
  assert got.dtype == jnp.float32 and abs(float(got) - want) < 1e-6, (float(got), want)


def _photo_720p():
  """A 1280×720 photo (scikit-image's coffee, resized) and a shaken, noisy copy: GoPro's frame size."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  sharp = np.asarray(Image.fromarray(skimage.data.coffee()).resize((1280, 720), Image.LANCZOS))
  rng = np.random.default_rng(4)
  shaken = scipy.ndimage.uniform_filter(sharp.astype(float), size=(5, 9, 1)) + rng.normal(0, 2, sharp.shape)
  return sharp, np.clip(np.round(shaken), 0, 255).astype(np.uint8)


def test_float32_metrics_on_a_720p_photo_match_float64_references():
  """The issue's bounds: SSIM within 1e-5 in both conventions, PSNR within 1e-4 dB (measured: ~1e-7, ~1e-6)."""
  sharp, blur = _photo_720p()
  for convention in metrics.CONVENTIONS:
    got = float(metrics.ssim(jnp.asarray(blur), jnp.asarray(sharp), convention))
    assert abs(got - REFERENCES[convention](blur, sharp)) < 1e-6, convention
  mse = np.mean((blur.astype(np.float64) - sharp) ** 2)
  assert abs(float(metrics.psnr(jnp.asarray(blur), jnp.asarray(sharp))) - 10 * np.log10(255 ** 2 / mse)) < 1e-5


def test_the_two_conventions_differ_and_identity_is_one():
  a, b = _pairs()[0]
  assert abs(float(metrics.ssim(jnp.asarray(b), jnp.asarray(a), "matlab")) -
             float(metrics.ssim(jnp.asarray(b), jnp.asarray(a), "python"))) > 1e-3
  for convention in metrics.CONVENTIONS:
    assert float(metrics.ssim(jnp.asarray(a), jnp.asarray(a), convention)) == pytest.approx(1.0, abs=1e-6)


def test_psnr_matches_formula_and_is_batched():
  rng = np.random.default_rng(1)
  target = rng.integers(0, 256, (3, 19, 23, 3)).astype(np.uint8)
  pred = np.clip(target.astype(int) + rng.integers(-20, 21, target.shape), 0, 255).astype(np.uint8)
  mse = ((pred.astype(np.float64) - target) ** 2).reshape(3, -1).mean(axis=1)
  got = jax.jit(metrics.psnr)(jnp.asarray(pred), jnp.asarray(target))
  np.testing.assert_allclose(np.asarray(got), 10 * np.log10(255 ** 2 / mse), rtol=1e-6)
  assert np.isinf(float(metrics.psnr(jnp.asarray(target[0]), jnp.asarray(target[0]))))


def test_psnr_sums_squared_errors_exactly_past_float32_precision():
  """Squared errors summing to ~5e9, past float32's exact integers and past int32, over several int32 blocks:
  exact, so no platform's order of a float reduction can move it (one int32 sum would overflow here)."""
  rng = np.random.default_rng(5)
  target = rng.integers(0, 256, (2, 301, 257, 3)).astype(np.uint8)  # 232,071 values: 8 blocks of 32768
  pred = (255 - target).astype(np.uint8)  # large errors: the sum is ~5e9, past int32 too
  mse = ((pred.astype(np.float64) - target) ** 2).reshape(2, -1).mean(axis=1)
  got = np.asarray(metrics.psnr(jnp.asarray(pred), jnp.asarray(target)))
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, 10 * np.log10(255 ** 2 / mse), rtol=0, atol=2e-6)


def test_colour_shift_is_the_largest_channel_mean_offset():
  """Against NumPy float64 channel means on random odd-size images, a planted cast, and a 720p image."""
  rng = np.random.default_rng(3)
  pred = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
  target = rng.integers(0, 256, (2, 37, 53, 3), dtype=np.uint8)
  expected = np.abs(pred.astype(np.float64).mean(axis=(1, 2)) - target.mean(axis=(1, 2))).max(axis=1)
  np.testing.assert_allclose(np.asarray(metrics.colour_shift(pred, target)), expected, atol=1e-4)
  cast = np.clip(target.astype(int) + [0, 0, 3], 0, 255).astype(np.uint8)  # +3 levels of blue (few clip)
  np.testing.assert_allclose(np.asarray(metrics.colour_shift(cast, target)),
                             np.abs(cast.astype(np.float64) - target).mean(axis=(1, 2)).max(axis=1), atol=1e-4)
  assert 2.9 < float(metrics.colour_shift(cast, target)[0]) <= 3.0
  bright = np.full((1, 720, 1280, 3), 250, np.uint8)
  dim = bright.copy()
  dim[..., 1] -= 1
  np.testing.assert_allclose(np.asarray(metrics.colour_shift(bright, dim)), [1.0], atol=1e-5)


def test_batched_ssim_equals_one_at_a_time():
  rng = np.random.default_rng(2)
  target = rng.integers(0, 256, (2, 21, 17, 3)).astype(np.uint8)
  pred = np.clip(target.astype(int) + rng.integers(-30, 31, target.shape), 0, 255).astype(np.uint8)
  for convention in metrics.CONVENTIONS:
    batched = jax.jit(metrics.ssim, static_argnums=2)(jnp.asarray(pred), jnp.asarray(target), convention)
    single = [float(metrics.ssim(jnp.asarray(p), jnp.asarray(t), convention)) for p, t in zip(pred, target)]
    np.testing.assert_allclose(np.asarray(batched), single, rtol=1e-6)


def test_to_uint8_rounds_like_a_saved_png():
  values = jnp.asarray([-0.2, 0.0, 0.499 / 255, 0.501 / 255, 0.5, 254.5 / 255 + 1e-4, 1.0, 1.7])
  np.testing.assert_array_equal(np.asarray(photos.to_uint8(values)), [0, 0, 0, 1, 128, 255, 255, 255])


@pytest.mark.parametrize("pred,target,convention,message", [
    (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), "matlab", "convert [0, 1] floats with"),
    (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "matlab", "must be an RGB image"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9, 3), np.uint8), "matlab", "differs from target shape"),
    (np.zeros((8, 30, 3), np.uint8), np.zeros((8, 30, 3), np.uint8), "python", "at least 11×11 pixels"),
    (np.zeros((12, 12, 3), np.uint8), np.zeros((12, 12, 3), np.uint8), "octave", "convention must be one of"),
])
def test_bad_input_is_one_clear_sentence(pred, target, convention, message):
  with pytest.raises(ValueError) as info:
    metrics.ssim(jnp.asarray(pred), jnp.asarray(target), convention)
  assert message in str(info.value)
