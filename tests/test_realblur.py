"""RealBlur's aligned PSNR / SSIM: planted warps are recovered, masks and formulas against plain NumPy."""

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from simplenet_jax.evaluation import realblur

H, W, MARGIN = 97, 121, 8  # odd sizes; the margin lets shifted / warped copies come from real content


def _texture(seed: int) -> np.ndarray:
  """A smooth random RGB texture (float64 in [0.1, 0.9] on the 0..255 scale), MARGIN px wider on each side."""
  noise = np.random.default_rng(seed).random((H + 2 * MARGIN, W + 2 * MARGIN, 3)).astype(np.float32)
  smooth = cv2.GaussianBlur(noise, (0, 0), 1.5).astype(np.float64)
  return np.round(255 * (0.1 + 0.8 * (smooth - smooth.min()) / (smooth.max() - smooth.min())))


def _crop(big: np.ndarray, dy: int = 0, dx: int = 0) -> np.ndarray:
  """The H×W window of ``big`` at offset (MARGIN + dy, MARGIN + dx), as uint8."""
  return big[MARGIN + dy:MARGIN + dy + H, MARGIN + dx:MARGIN + dx + W].astype(np.uint8)


def _unaligned_psnr(pred: np.ndarray, target: np.ndarray) -> float:
  mse = np.mean((pred.astype(np.float64) / 255 - target.astype(np.float64) / 255) ** 2)
  return 10 * np.log10(1 / mse)


def _points(matrix: np.ndarray) -> np.ndarray:
  """Where ``matrix`` sends every pixel (x, y) of the H×W grid: [2, H·W]."""
  ys, xs = np.mgrid[0:H, 0:W]
  mapped = np.asarray(matrix, np.float64) @ np.stack([xs.ravel(), ys.ravel(), np.ones(H * W)])
  return mapped[:2] / mapped[2]


def _planted_homography() -> np.ndarray:
  """Translation (1.5, -2.0) px, 0.5° rotation and 1 % zoom about the centre, plus a little perspective."""
  centre = np.array([(W - 1) / 2, (H - 1) / 2])
  angle, scale = np.deg2rad(0.5), 1.01
  linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  matrix = np.eye(3)
  matrix[:2, :2] = linear
  matrix[:2, 2] = centre - linear @ centre + [1.5, -2.0]
  matrix[2, :2] = [2e-5, -1e-5]
  return matrix


def test_planted_homography_is_recovered():
  big = _texture(0)
  target = _crop(big)
  planted = _planted_homography()  # target pixel p shows what pred shows at planted·p
  offset = np.eye(3)
  offset[:2, 2] = MARGIN  # target coordinates → coordinates in `big`
  # pred(q) = target(planted⁻¹·q), sampled from `big` so no border is invented.
  pred = cv2.warpPerspective(big.astype(np.float32), offset @ np.linalg.inv(planted), (W, H),
                             flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)
  pred = np.clip(np.round(pred), 0, 255).astype(np.uint8)

  aligned = realblur.align(pred, target)
  assert aligned.converged and aligned.ecc > 0.95
  assert aligned.warp.shape == (3, 3) and aligned.warp.dtype == np.float32
  # Tolerance: the estimated and planted warps put every pixel within 0.15 px of each other (0.05 px on
  # average); the planted warp moves pixels by 1.5–3.5 px, and its inverse is ~6 px away from it.
  error = np.abs(_points(aligned.warp) - _points(planted))
  assert error.max() < 0.15 and error.mean() < 0.05, (error.max(), error.mean())
  np.testing.assert_allclose(aligned.warp[:2, 2], planted[:2, 2], atol=0.1)

  psnr, ssim = realblur.aligned_psnr_ssim(pred, target)
  unaligned = _unaligned_psnr(pred, target)
  assert unaligned < 25 and psnr > unaligned + 12, (psnr, unaligned)
  assert ssim > 0.98, ssim


def test_shifted_pair_scores_higher_aligned_and_finds_the_shift():
  big = _texture(1)
  target, pred = _crop(big), _crop(big, dy=3, dx=-2)  # pred(y, x) = target(y + 3, x - 2)
  aligned = realblur.align(pred, target)
  assert aligned.converged
  # target(y, x) = pred(y - 3, x + 2): the warp sends target pixels 2 px right and 3 px up in pred.
  # (A homography's entries trade off against each other, so compare where it sends the pixels.)
  shift = np.array([[1, 0, 2], [0, 1, -3], [0, 0, 1]])
  assert np.abs(_points(aligned.warp) - _points(shift)).max() < 0.15
  psnr, ssim = realblur.masked_psnr_ssim(aligned)
  unaligned = _unaligned_psnr(pred, target)
  assert psnr >= unaligned
  assert psnr > unaligned + 15, (psnr, unaligned)
  assert ssim > 0.99 > structural_similarity(pred, target, channel_axis=-1, gaussian_weights=True,
                                             use_sample_covariance=False, data_range=255)


def test_identical_images_identity_warp_and_perfect_scores():
  target = _crop(_texture(2))
  aligned = realblur.align(target, target)
  assert aligned.converged
  np.testing.assert_allclose(aligned.warp, np.eye(3), atol=1e-4)
  np.testing.assert_array_equal(aligned.mask, np.ones((H, W, 3), np.float32))
  psnr, ssim = realblur.aligned_psnr_ssim(target, target)
  assert psnr == np.inf or psnr > 80, psnr
  assert ssim == pytest.approx(1.0, abs=1e-6)


def test_intensity_matching_undoes_a_global_gain():
  target = _crop(_texture(3))
  darker = np.round(target * 0.8).astype(np.uint8)
  psnr, ssim = realblur.aligned_psnr_ssim(darker, target)
  assert _unaligned_psnr(darker, target) < 25
  assert psnr > 45 and ssim > 0.999, (psnr, ssim)


def _noisy_shifted_pair(dy: int, dx: int):
  big = _texture(4)
  rng = np.random.default_rng(5)
  target = _crop(big)
  noisy = np.clip(np.round(big + rng.normal(0, 6, big.shape)), 0, 255)
  return target, _crop(noisy, dy=dy, dx=dx), noisy  # pred(y, x) = noisy(y + dy, x + dx)


def test_masked_psnr_against_numpy_over_the_known_valid_region():
  dy, dx = 4, -3
  target, pred, noisy = _noisy_shifted_pair(dy, dx)
  aligned = realblur.align(pred, target)
  assert aligned.converged
  # The warp is a translation by (-dx, -dy): pred has no pixels for the first dy rows of the target, nor
  # for its last -dx columns, and the nearest-neighbour mask marks exactly the rest.
  valid = np.zeros((H, W), bool)
  valid[dy:, :W + dx] = True
  np.testing.assert_array_equal(aligned.mask, np.repeat(valid[..., None], 3, axis=-1).astype(np.float32))
  assert np.all(aligned.pred[~valid] == 0) and np.all(aligned.target[~valid] == 0)

  # Independently: undo the shift by slicing, match intensities in float64, 10·log10(1 / MSE) over `valid`.
  x = target.astype(np.float64) / 255
  z = pred.astype(np.float64) / 255
  gain = np.sum(x * z) / np.sum(z * z)
  unshifted = np.zeros_like(x)
  unshifted[dy:, :W + dx] = z[:H - dy, -dx:]  # target(y, x) ≈ pred(y - dy, x - dx)
  np.testing.assert_array_equal(unshifted[dy:, :W + dx], _crop(noisy)[dy:, :W + dx] / 255)
  expected = 10 * np.log10(1 / np.mean((x[valid] - gain * unshifted[valid]) ** 2))
  assert 25 < expected < 40
  assert realblur.masked_psnr(aligned) == pytest.approx(expected, abs=0.03)


def test_masked_ssim_is_the_mean_of_the_map_over_cropped_valid_pixels():
  target, pred, _ = _noisy_shifted_pair(-3, 4)
  aligned = realblur.align(pred, target)
  assert aligned.converged and aligned.mask.min() == 0
  # ECC only recovers shifts of a few pixels, which leave the invalid border inside SSIM's 5 px crop; cut
  # holes inside the crop as well (a different one per channel) so the mask matters there.
  mask = aligned.mask.copy()
  mask[30:50, 40:70, :] = 0
  mask[60:80, 10:30, 1] = 0
  holed = realblur.Aligned(pred=aligned.pred * mask, target=aligned.target * mask, mask=mask,
                                  warp=aligned.warp, converged=True, ecc=aligned.ecc)
  _, ssim_map = structural_similarity(holed.target.astype(np.float64), holed.pred.astype(np.float64),
                                      channel_axis=-1, gaussian_weights=True, use_sample_covariance=False,
                                      data_range=1.0, full=True)
  inside = np.zeros((H, W), bool)
  inside[5:-5, 5:-5] = True  # the 11-tap window's pad
  per_channel = [ssim_map[..., c][inside & (mask[..., c] == 1)].mean() for c in range(3)]
  assert realblur.masked_ssim(holed) == pytest.approx(np.mean(per_channel), abs=1e-9)
  assert 0.5 < np.mean(per_channel) < 0.99


@pytest.mark.parametrize("pred", [np.full((H, W, 3), 128, np.uint8), np.zeros((H, W, 3), np.uint8)],
                         ids=["constant", "black"])
def test_ecc_failure_falls_back_to_the_identity_warp(pred):
  target = _crop(_texture(6))
  with pytest.warns(RuntimeWarning, match="ECC did not converge"):
    aligned = realblur.align(pred, target)
  assert not aligned.converged and np.isnan(aligned.ecc)
  np.testing.assert_array_equal(aligned.warp, np.eye(3, dtype=np.float32))
  np.testing.assert_array_equal(aligned.mask, np.ones((H, W, 3), np.float32))
  with pytest.warns(RuntimeWarning):
    psnr, ssim = realblur.aligned_psnr_ssim(pred, target)
  assert np.isfinite(psnr) and np.isfinite(ssim)
  # Identity warp over all pixels: the plain PSNR of the intensity-matched prediction.
  x, z = target / 255, pred / 255
  gain = np.sum(x * z) / np.sum(z * z) if z.any() else 1.0
  assert psnr == pytest.approx(10 * np.log10(1 / np.mean((x - gain * z) ** 2)), abs=1e-4)


@pytest.mark.parametrize("pred, target, message", [
    (np.zeros((H, W, 3), np.float32), np.zeros((H, W, 3), np.uint8), "uint8"),
    (np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.uint16), "uint8"),
    (np.zeros((H, W), np.uint8), np.zeros((H, W), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((H, W, 4), np.uint8), np.zeros((H, W, 4), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((1, H, W, 3), np.uint8), np.zeros((1, H, W, 3), np.uint8), r"\[H, W, 3\]"),
    (np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 1, 3), np.uint8), "differs"),
    (np.zeros((10, W, 3), np.uint8), np.zeros((10, W, 3), np.uint8), "at least 11"),
], ids=["float-pred", "uint16-target", "grey", "rgba", "batch", "mismatch", "tiny"])
def test_bad_inputs_raise_value_error(pred, target, message):
  with pytest.raises(ValueError, match=message):
    realblur.align(pred, target)
  with pytest.raises(ValueError, match=message):
    realblur.aligned_psnr_ssim(pred, target)
