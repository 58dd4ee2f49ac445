"""Full-resolution evaluation: deblur each test pair, compare with its sharp image (SPEC §5).

Images are reflect-padded to a multiple of 4 (the network's two stride-2 down-samplings must round-trip)
and cropped back; predictions are clipped and rounded to uint8, as a saved PNG would be, before PSNR/SSIM.
SSIM runs in float64 (`jax.enable_x64`), so the numbers equal MATLAB's / scikit-image's definitions.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import pathlib
import time
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from flax import nnx
from PIL import Image

from simplenet_jax import checkpointing
from simplenet_jax import inference
from simplenet_jax import metrics
from simplenet_jax.data import pipeline
from simplenet_jax.models import SimpleNet
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


def load_model(workdir: str | pathlib.Path, checkpoint: str = "latest"
               ) -> tuple[ml_collections.ConfigDict, ApplyFn, int]:
  """(the config it was trained with, a jitted apply function, the checkpoint's step) from a workdir.

  `checkpoint` is "latest", "best" (by evaluation PSNR) or a step number. Only the parameters are read.
  """
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise ValueError(f"workdir {workdir} has no checkpoint in {checkpointing.checkpoint_dir(workdir)}; train "
                     "first (python train.py --config ... --workdir ...) or pass the workdir you trained in.")
  if checkpoint == "latest":
    step = manager.latest_step()
  elif checkpoint == "best":
    step = manager.best_step() if manager.best_step() is not None else manager.latest_step()
  elif checkpoint.isdigit() and int(checkpoint) in steps:
    step = int(checkpoint)
  else:
    raise ValueError(f"checkpoint {checkpoint!r} is not in {workdir}; use latest, best or one of the saved "
                     f"steps {sorted(steps)}.")
  try:
    config = ml_collections.ConfigDict(checkpointing.saved_meta(manager, step)["config"])
    model = nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0)))
    graphdef, abstract_params = nnx.split(model)
    params = checkpointing.restore_params(manager, step, abstract_params)
  except (FileNotFoundError, KeyError, ValueError) as error:
    raise ValueError(f"the checkpoint of step {step} in {workdir} is incomplete or corrupt ({error}); pass "
                     "--checkpoint with another step.") from None
  forward = jax.jit(lambda params, image: nnx.merge(graphdef, params)(image))
  return config, functools.partial(forward, params), step


def write_results(results: list[ImageResult], out: pathlib.Path, extra: dict) -> dict:
  """`results.csv` (one row per image) and `summary.json` (means and the run's facts) in `out`."""
  out.mkdir(parents=True, exist_ok=True)
  conventions = list(results[0].ssim) if results else []
  with open(out / "results.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["scene", "name", "input_psnr"] + [f"input_ssim_{c}" for c in conventions] + ["psnr"] +
                    [f"ssim_{c}" for c in conventions] + ["seconds"])
    for r in results:
      scene, name = r.name.split("/", 1) if "/" in r.name else ("", r.name)
      writer.writerow([scene, name, f"{r.input_psnr:.6f}"] + [f"{r.input_ssim[c]:.8f}" for c in conventions] +
                      [f"{r.psnr:.6f}"] + [f"{r.ssim[c]:.8f}" for c in conventions] + [f"{r.seconds:.4f}"])
  summary = {**mean_metrics(results), "seconds": float(np.mean([r.seconds for r in results])) if results else 0,
             "images": len(results), "conventions": conventions, **extra}
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def evaluate_workdir(workdir: str | pathlib.Path, *, data_root: str | None = None, dataset: str | None = None,
                     out: str | pathlib.Path | None = None, conventions=metrics.CONVENTIONS,
                     checkpoint: str = "latest", save_images: bool = False, ensemble: bool = False,
                     tile: int = 0, overlap: int = 32) -> dict:
  """Evaluates a workdir's checkpoint on its config's test split (or on `data_root`), writes the files.

  `ensemble` averages the ×8 flips/rotations; `tile` > 0 runs overlapping tiles (see `inference`).
  """
  config, network, step = load_model(workdir, checkpoint)
  if ensemble or tile:
    def apply_fn(image):  # `evaluate_pairs` pads for `network`; the ensemble and tiles are padded themselves
      return inference.deblur_image(lambda x: deblur(network, x), image, tile=tile, overlap=overlap,
                                    ensemble=ensemble)
  else:
    apply_fn = network
  data = config.data
  if data_root is not None:
    data.root, data.shards_dir = _test_root(data_root), ""
    data.dataset = dataset or "folder"
  elif dataset is not None:
    data.dataset = dataset
  out = pathlib.Path(out) if out is not None else pathlib.Path(workdir) / "eval" / f"step_{step}"
  images_dir = out / "images"

  def save(pair, output):
    path = images_dir / f"{pair['name']}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(output).save(path)

  pairs = list(pipeline.eval_dataset(data))
  results = evaluate_pairs(apply_fn, tqdm.tqdm(pairs, desc="evaluating", unit="image"), conventions,
                           on_image=save if save_images else None)
  return write_results(results, out, {"checkpoint_step": step, "config": config.get("name", ""),
                                      "ensemble": ensemble, "tile": tile,
                                      "data": str(data.shards_dir or data.root), "device": jax.devices()[0].device_kind,
                                      "out": str(out)})


def _test_root(path: str) -> str:
  """`--data` may be a data set root (holding test/) or its test/ folder itself."""
  folder = pathlib.Path(path)
  return str(folder.parent) if folder.name == "test" and not (folder / "test").is_dir() else str(folder)
