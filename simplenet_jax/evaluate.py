"""Full-resolution evaluation: deblur each test pair, compare with its sharp image (SPEC §5).

Images are reflect-padded to a multiple of 4 (the network's two stride-2 down-samplings must round-trip)
and cropped back; predictions are clipped and rounded to uint8, as a saved PNG would be, before PSNR/SSIM.
SSIM runs in float64 (`jax.enable_x64`), so the numbers equal MATLAB's / scikit-image's definitions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from simplenet_jax import metrics
from simplenet_jax.models.simplenet import SIZE_MULTIPLE

ApplyFn = Callable[[jax.Array], jax.Array]  # [N, H, W, 3] float in [0, 1] → same


@dataclasses.dataclass
class ImageResult:
  name: str  # "scene/frame"
  input_psnr: float
  input_ssim: dict[str, float]
  psnr: float
  ssim: dict[str, float]
  seconds: float


def pad_to_multiple(image: jax.Array, multiple: int = SIZE_MULTIPLE) -> tuple[jax.Array, tuple[int, int]]:
  """Reflect-pads the H and W of ``[N, H, W, C]`` up to a multiple; returns the padded batch and (H, W)."""
  height, width = image.shape[1:3]
  pad_h, pad_w = -height % multiple, -width % multiple
  if pad_h > height - 1 or pad_w > width - 1:  # reflection needs at least pad + 1 pixels
    raise ValueError(f"image of {height}×{width} pixels is too small to deblur; it needs at least "
                     f"{multiple}×{multiple}.")
  padded = jnp.pad(image, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
  return padded, (height, width)


def deblur(apply_fn: ApplyFn, image: jax.Array) -> jax.Array:
  """Runs the network on a batch of any H×W: pad by reflection, apply, crop back."""
  padded, (height, width) = pad_to_multiple(image)
  return apply_fn(padded)[:, :height, :width]


def _ssims(pred: np.ndarray, target: np.ndarray, conventions) -> dict[str, float]:
  with jax.enable_x64(True):
    return {c: float(metrics.ssim(jnp.asarray(pred), jnp.asarray(target), c)) for c in conventions}


def evaluate_pairs(apply_fn: ApplyFn, pairs: Iterable[dict], conventions=metrics.CONVENTIONS,
                   on_image: Callable[[dict, np.ndarray], None] | None = None) -> list[ImageResult]:
  """Deblurs every pair ``{"blur", "sharp": float32 [H, W, 3] in [0, 1], "name"}`` and scores it.

  The pairs come from 8-bit files, so ``to_uint8`` recovers their exact pixel values. `on_image(pair,
  output_uint8)` is called for each image (to save it, or to draw a grid).
  """
  results = []
  for pair in pairs:
    start = time.perf_counter()
    output = np.asarray(metrics.to_uint8(deblur(apply_fn, jnp.asarray(pair["blur"])[None]))[0])
    seconds = time.perf_counter() - start
    blur = np.asarray(metrics.to_uint8(jnp.asarray(pair["blur"])))
    sharp = np.asarray(metrics.to_uint8(jnp.asarray(pair["sharp"])))
    results.append(ImageResult(
        name=str(pair["name"]),
        input_psnr=float(metrics.psnr(jnp.asarray(blur), jnp.asarray(sharp))),
        input_ssim=_ssims(blur, sharp, conventions),
        psnr=float(metrics.psnr(jnp.asarray(output), jnp.asarray(sharp))),
        ssim=_ssims(output, sharp, conventions), seconds=seconds))
    if on_image is not None:
      on_image(pair, output)
  return results


def mean_metrics(results: list[ImageResult]) -> dict[str, float]:
  """Means over images: psnr, input_psnr, ssim_<convention>, input_ssim_<convention>."""
  if not results:
    return {}
  means = {"psnr": float(np.mean([r.psnr for r in results])),
           "input_psnr": float(np.mean([r.input_psnr for r in results]))}
  for convention in results[0].ssim:
    means[f"ssim_{convention}"] = float(np.mean([r.ssim[convention] for r in results]))
    means[f"input_ssim_{convention}"] = float(np.mean([r.input_ssim[convention] for r in results]))
  return means
