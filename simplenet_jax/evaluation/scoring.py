"""Scoring: PSNR and SSIM of deblurred images against their sharp images, per image and as means (SPEC §5).

Scores are computed on the device in float32, one jitted call per batch of uint8 images (`metrics` is
accurate to 1e-6 of MATLAB's / scikit-image's float64 definitions; no float64 reaches the device, which a TPU
lacks). RealBlur-J's own protocol first aligns each output to its sharp image (`realblur`); those
"aligned" scores are computed on the host and reported beside the unaligned ones.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from simplenet_jax.evaluation import metrics

ALIGNED = "aligned"  # the key of RealBlur's ECC-aligned scores in `ImageResult.aligned` and the summaries


@dataclasses.dataclass
class ImageResult:
  name: str  # "scene/frame"
  input_psnr: float
  input_ssim: dict[str, float]
  psnr: float
  ssim: dict[str, float]
  seconds: float
  # Largest channel-mean offset from the sharp image, in 8-bit levels (`metrics.colour_shift`): a colour cast.
  colour_shift: float
  input_colour_shift: float
  # RealBlur's protocol (ECC-aligned, valid region), when asked for: psnr, ssim, input_psnr, input_ssim
  aligned: dict[str, float] | None = None
  # The output is the input, byte for byte: the demo's gate (`ModelConfig.residual_gate`) called it sharp.
  unchanged: bool = False


@functools.partial(jax.jit, static_argnames="conventions")
def batch_scores(blur: jax.Array, output: jax.Array, sharp: jax.Array,
                 conventions: tuple[str, ...] = metrics.CONVENTIONS) -> dict[str, jax.Array]:
  """PSNR, SSIM and colour shift of uint8 ``[N, H, W, 3]`` outputs and blurred inputs against the sharp
  images, in one device program: ``{"psnr", "input_psnr", "ssim_<c>", "input_ssim_<c>", "colour_shift",
  "input_colour_shift": [N]}``."""
  scores = {"psnr": metrics.psnr(output, sharp), "input_psnr": metrics.psnr(blur, sharp),
            "colour_shift": metrics.colour_shift(output, sharp),
            "input_colour_shift": metrics.colour_shift(blur, sharp)}
  for convention in conventions:
    scores[f"ssim_{convention}"] = metrics.ssim(output, sharp, convention)
    scores[f"input_ssim_{convention}"] = metrics.ssim(blur, sharp, convention)
  return scores


def aligned_scores(blur: np.ndarray, output: np.ndarray, sharp: np.ndarray) -> dict[str, float]:
  """RealBlur's official PSNR and SSIM of one uint8 output, and of its blurred input, each aligned to the
  sharp image first (`realblur`)."""
  from simplenet_jax.evaluation import realblur  # OpenCV is loaded only when RealBlur's protocol is asked for
  psnr, ssim = realblur.aligned_psnr_ssim(output, sharp)
  input_psnr, input_ssim = realblur.aligned_psnr_ssim(blur, sharp)
  return {"psnr": psnr, "ssim": ssim, "input_psnr": input_psnr, "input_ssim": input_ssim}


def score(names: list[str], blur: np.ndarray, output: np.ndarray, sharp: np.ndarray, seconds: float,
          conventions=metrics.CONVENTIONS, aligned: bool = False) -> list[ImageResult]:
  """An `ImageResult` per image of uint8 ``[N, H, W, 3]`` outputs and inputs against the sharp images
  (`aligned`: RealBlur's ECC-aligned scores too)."""
  scores = jax.device_get(batch_scores(blur, output, sharp, tuple(conventions)))
  return [ImageResult(name=name, input_psnr=float(scores["input_psnr"][i]),
                      input_ssim={c: float(scores[f"input_ssim_{c}"][i]) for c in conventions},
                      psnr=float(scores["psnr"][i]), ssim={c: float(scores[f"ssim_{c}"][i]) for c in conventions},
                      seconds=seconds, colour_shift=float(scores["colour_shift"][i]),
                      input_colour_shift=float(scores["input_colour_shift"][i]),
                      aligned=aligned_scores(blur[i], output[i], sharp[i]) if aligned else None,
                      unchanged=bool(np.array_equal(output[i], blur[i])))
          for i, name in enumerate(names)]


def mean_metrics(results: list[ImageResult]) -> dict[str, float]:
  """Means over images: psnr, input_psnr, ssim_<convention>, input_ssim_<convention>, colour_shift,
  input_colour_shift, and with RealBlur's protocol psnr_aligned, input_psnr_aligned, ssim_aligned,
  input_ssim_aligned."""
  if not results:
    return {}
  means = {key: float(np.mean([getattr(r, key) for r in results]))
           for key in ("psnr", "input_psnr", "colour_shift", "input_colour_shift")}
  for convention in results[0].ssim:
    means[f"ssim_{convention}"] = float(np.mean([r.ssim[convention] for r in results]))
    means[f"input_ssim_{convention}"] = float(np.mean([r.input_ssim[convention] for r in results]))
  if results[0].aligned is not None:
    for key in results[0].aligned:
      means[f"{key}_{ALIGNED}"] = float(np.mean([r.aligned[key] for r in results]))
  return means


def worst_cases(results: list[ImageResult]) -> dict[str, float]:
  """The images furthest from helping: the lowest PSNR gain over the input, and the largest colour shift
  beyond the input's (in levels); and how many images came back unchanged."""
  if not results:
    return {}
  return {"worst_psnr_gain": float(min(r.psnr - r.input_psnr for r in results)),
          "worst_colour_shift_excess": float(max(r.colour_shift - r.input_colour_shift for r in results)),
          "unchanged": sum(r.unchanged for r in results)}
