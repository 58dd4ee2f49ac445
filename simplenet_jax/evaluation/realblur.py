"""RealBlur's official PSNR / SSIM: the deblurred image is aligned to the ground truth before it is scored.

RealBlur (Rim, Lee, Won & Cho, "Real-World Blur Dataset for Learning and Benchmarking Deblurring
Algorithms", ECCV 2020) pairs each blurred photo with a sharp one taken by a second camera through a beam
splitter, so a restored image and its ground truth may still differ by a small geometric and photometric
misalignment. The authors' evaluation script therefore scores every image after aligning it:

1. **intensity matching**: the prediction ``z`` is scaled by ``Σ x·z / Σ z·z`` (``x`` the ground truth);
2. **ECC homography**: ``cv2.findTransformECC`` (``MOTION_HOMOGRAPHY``, 100 iterations, ε = 0,
   ``gaussFiltSize=5``) between the grey ground truth (template) and the grey scaled prediction (input);
3. **warping**: the scaled prediction by ``cv2.warpPerspective`` (``INTER_CUBIC + WARP_INVERSE_MAP``,
   ``BORDER_REFLECT``), and a ones-mask the same way (``INTER_NEAREST``, constant-0 border) that marks the
   pixels the warp fills from inside the prediction; both images are then multiplied by the mask;
4. **PSNR** over the valid region: ``10·log10(1 / (Σ squared error / Σ mask))`` (data range 1, all three
   channels counted in both sums);
5. **SSIM**: the full map of ``skimage.metrics.structural_similarity(gaussian_weights=True,
   use_sample_covariance=False, data_range=1)`` per channel, multiplied by the mask, cropped by the window's
   pad (5 px), summed per channel and divided by the cropped mask's per-channel sum, then averaged.

Differences from ``simplenet_jax.evaluation.metrics`` (GoPro / HIDE convention, on the accelerator): those compare the
8-bit images exactly as given, over every pixel, with ``data_range=255``; here the prediction is rescaled
and resampled (not re-quantised, not clipped — as in the reference, so aligned values may leave [0, 1]
slightly), border pixels that the warp fills from outside the prediction are excluded, and SSIM averages
the mask-weighted map. Scores from the two modules are not comparable; RealBlur-J / -R numbers in papers
use this one. It runs on the host (NumPy / OpenCV / scikit-image), one image pair at a time.

Faithful to ``image_align``, ``compute_psnr`` and the SSIM lines of ``evaluation_folder`` in
``evaluation_RealBlur_ecc.py`` of https://github.com/rimchang/RealBlur (at its last change, commit 7af5454,
"fix type in eval"; the alignment is unchanged since the first commit), with these departures:

* the reference pins scikit-image 0.17.2, whose SSIM always computes in float64; newer releases keep
  float32 inputs in float32, so the aligned float32 images are cast to float64 for SSIM only;
* where ECC raises ``cv2.error`` (it does not converge: uncorrelated images, a constant prediction) or
  returns a warp that is not finite or leaves no valid pixel inside the SSIM crop, the reference script
  crashes; here the identity warp is used instead, ``Aligned.converged`` is False and a ``RuntimeWarning``
  says so;
* an all-black prediction (``Σ z·z = 0``, where the reference divides 0 by 0) keeps scale 1;
* identical images give PSNR ``inf`` without NumPy's divide-by-zero warning.
"""

from __future__ import annotations

import dataclasses
import warnings

import cv2
import numpy as np
from skimage.metrics import structural_similarity

# ECC as in the reference: homography, 100 iterations with ε = 0 (so all 100 run), 5-tap Gaussian prefilter.
_ECC_ITERATIONS = 100
_ECC_EPS = 0.0
_ECC_GAUSS_FILT_SIZE = 5
# SSIM's Gaussian window (σ = 1.5, truncate 3.5): radius int(3.5·1.5 + 0.5) = 5, so 11 taps and a 5 px crop.
_SSIM_PAD = int(3.5 * 1.5 + 0.5)
_SSIM_WINDOW = 2 * _SSIM_PAD + 1


@dataclasses.dataclass(frozen=True)
class Aligned:
  """A prediction aligned to its ground truth as RealBlur's evaluation does it.

  Attributes:
    pred: float32 [H, W, 3], the intensity-matched prediction warped onto the target, times ``mask``.
    target: float32 [H, W, 3], the ground truth in [0, 1], times ``mask``.
    mask: float32 [H, W, 3] of 0 / 1: 1 where the warp samples inside the prediction.
    warp: float32 [3, 3] homography mapping target pixel (x, y, 1) to prediction coordinates (ECC's output;
      the identity where ECC failed).
    converged: False where ECC failed and the identity warp was used instead.
    ecc: ECC's final correlation coefficient (NaN where it failed).
  """
  pred: np.ndarray
  target: np.ndarray
  mask: np.ndarray
  warp: np.ndarray
  converged: bool
  ecc: float


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
  for name, image in (("pred", pred), ("target", target)):
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
      raise ValueError(f"realblur: {name} must be a uint8 NumPy array (an 8-bit image as saved), "
                       f"got {getattr(image, 'dtype', type(image).__name__)}.")
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"realblur: {name} must be an RGB image [H, W, 3], got shape {image.shape}.")
    if min(image.shape[:2]) <= 2 * _SSIM_PAD:
      raise ValueError(f"realblur: {name} must be at least {_SSIM_WINDOW}×{_SSIM_WINDOW} pixels "
                       f"(the SSIM window), got {image.shape[0]}×{image.shape[1]}.")
  if pred.shape != target.shape:
    raise ValueError(f"realblur: pred shape {pred.shape} differs from target shape {target.shape}.")


def _warp(scaled: np.ndarray, warp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The scaled prediction and a ones-mask resampled onto the target grid (dst(p) = src(warp·p))."""
  size = (scaled.shape[1], scaled.shape[0])
  warped = cv2.warpPerspective(scaled, warp, size, flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)
  mask = cv2.warpPerspective(np.ones_like(scaled, dtype=np.float32), warp, size,
                             flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return warped, mask


def align(pred: np.ndarray, target: np.ndarray) -> Aligned:
  """Intensity-match ``pred`` to ``target``, estimate an ECC homography and warp ``pred`` (and a mask) onto it.

  Args:
    pred: uint8 [H, W, 3] RGB, the restored image.
    target: uint8 [H, W, 3] RGB, the ground truth.

  Returns:
    An ``Aligned``; where ECC fails it holds the identity warp, ``converged=False`` and a RuntimeWarning is
    issued.
  """
  _check_pair(pred, target)
  x = np.ascontiguousarray(target).astype(np.float32) / 255  # float32 in [0, 1], as the reference reads PNGs
  z = np.ascontiguousarray(pred).astype(np.float32) / 255
  energy = np.sum(z * z)
  scaled = (np.sum(x * z) / energy) * z if energy > 0 else z  # simple intensity matching
  criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, _ECC_ITERATIONS, _ECC_EPS)
  reason = None
  try:
    ecc, warp = cv2.findTransformECC(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(scaled, cv2.COLOR_RGB2GRAY),
                                     np.eye(3, dtype=np.float32), cv2.MOTION_HOMOGRAPHY, criteria, None,
                                     _ECC_GAUSS_FILT_SIZE)
  except cv2.error as error:
    reason = str(error).strip().splitlines()[-1]
  else:
    if not np.all(np.isfinite(warp)):
      reason = f"the estimated warp is not finite: {warp.tolist()}"
  if reason is None:
    warped, mask = _warp(scaled, warp)
    if not mask[_SSIM_PAD:-_SSIM_PAD, _SSIM_PAD:-_SSIM_PAD].any():
      reason = f"the estimated warp {warp.tolist()} leaves no valid pixel inside the SSIM crop"
  if reason is not None:
    warnings.warn(f"realblur.align: ECC did not converge ({reason}); scoring with the identity warp.",
                  RuntimeWarning, stacklevel=2)
    ecc, warp = float("nan"), np.eye(3, dtype=np.float32)
    warped, mask = _warp(scaled, warp)
  return Aligned(pred=warped * mask, target=x * mask, mask=mask, warp=np.asarray(warp, dtype=np.float32),
                 converged=reason is None, ecc=float(ecc))


def masked_psnr(aligned: Aligned) -> float:
  """PSNR (data range 1) over the valid region: squared error summed over H·W·3, divided by Σ mask."""
  error = np.sum((aligned.target - aligned.pred) ** 2, dtype=np.float64) / np.sum(aligned.mask, dtype=np.float64)
  return float("inf") if error == 0 else float(10 * np.log10(1.0 / error))


def masked_ssim(aligned: Aligned) -> float:
  """Per-channel Gaussian SSIM map × mask, cropped by the window's pad, normalised by the cropped mask; mean."""
  _, ssim_map = structural_similarity(aligned.target.astype(np.float64), aligned.pred.astype(np.float64),
                                      channel_axis=-1, gaussian_weights=True, use_sample_covariance=False,
                                      data_range=1.0, full=True)
  p = _SSIM_PAD
  weighted = (ssim_map * aligned.mask)[p:-p, p:-p, :]
  mask = aligned.mask[p:-p, p:-p, :]
  return float(np.mean(weighted.sum(axis=(0, 1)) / mask.sum(axis=(0, 1), dtype=np.float64)))


def masked_psnr_ssim(aligned: Aligned) -> tuple[float, float]:
  """RealBlur's (PSNR, SSIM) of an already aligned pair."""
  return masked_psnr(aligned), masked_ssim(aligned)


def aligned_psnr_ssim(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
  """RealBlur's official (PSNR, SSIM) of uint8 [H, W, 3] images: ``align`` then the masked metrics.

  To know whether ECC converged, call ``align`` and ``masked_psnr_ssim`` and read ``Aligned.converged``
  (a failed alignment also issues a RuntimeWarning here).
  """
  return masked_psnr_ssim(align(pred, target))
