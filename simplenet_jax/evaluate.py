"""Full-resolution evaluation: deblur each test pair, compare with its sharp image (SPEC §5).

Images are reflect-padded to a multiple of 4 (the network's two stride-2 down-samplings must round-trip)
and cropped back; predictions are clipped and rounded to uint8, as a saved PNG would be, before PSNR/SSIM.
The scores are computed on the device in float32, one jitted call per batch (`metrics` is accurate to
1e-6 of MATLAB's / scikit-image's float64 definitions; no float64 reaches the device, which a TPU lacks).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import heapq
import io
import json
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from etils import epath
from flax import nnx
from PIL import Image

from simplenet_jax import checkpointing
from simplenet_jax import inference
from simplenet_jax import metrics
from simplenet_jax import paths
from simplenet_jax.data import pipeline
from simplenet_jax.data import prepare
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


def _as_uint8(image: np.ndarray | jax.Array) -> np.ndarray:
  return np.asarray(image if image.dtype == np.uint8 else metrics.to_uint8(jnp.asarray(image)))


def side_by_side(blur, output, sharp) -> np.ndarray:
  """blur | output | sharp as one uint8 ``[H, 3W, 3]`` picture; [0, 1] floats are rounded as a PNG holds them."""
  return np.concatenate([_as_uint8(image) for image in (blur, output, sharp)], axis=1)


def same_shape_batches(pairs: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
  """Runs of consecutive pairs of one image size, at most `batch_size` long, in the pairs' order."""
  batch = []
  for pair in pairs:
    if batch and (len(batch) == batch_size or np.shape(pair["blur"]) != np.shape(batch[0]["blur"])):
      yield batch
      batch = []
    batch.append(pair)
  if batch:
    yield batch


def deblur_batch(apply_fn: ApplyFn, blurs: list[np.ndarray], batch_size: int) -> np.ndarray:
  """uint8 outputs of same-sized uint8 (or [0, 1]) images, as a saved PNG would hold them; uint8 goes to the
  device as it is.

  A short batch (the end of a run of one size) is filled up with copies of its last image, so that the
  network sees one shape per image size and compiles once for it.
  """
  filled = np.stack(list(blurs) + [blurs[-1]] * (batch_size - len(blurs)))
  return np.asarray(metrics.to_uint8(deblur(apply_fn, metrics.to_float(filled))))[:len(blurs)]


@functools.partial(jax.jit, static_argnames="conventions")
def batch_scores(blur: jax.Array, output: jax.Array, sharp: jax.Array,
                 conventions: tuple[str, ...] = metrics.CONVENTIONS) -> dict[str, jax.Array]:
  """PSNR and SSIM of uint8 ``[N, H, W, 3]`` outputs and blurred inputs against the sharp images, in one
  device program: ``{"psnr", "input_psnr", "ssim_<c>", "input_ssim_<c>": [N]}``."""
  scores = {"psnr": metrics.psnr(output, sharp), "input_psnr": metrics.psnr(blur, sharp)}
  for convention in conventions:
    scores[f"ssim_{convention}"] = metrics.ssim(output, sharp, convention)
    scores[f"input_ssim_{convention}"] = metrics.ssim(blur, sharp, convention)
  return scores


def score(names: list[str], blur: np.ndarray, output: np.ndarray, sharp: np.ndarray, seconds: float,
          conventions=metrics.CONVENTIONS) -> list[ImageResult]:
  """An `ImageResult` per image of uint8 ``[N, H, W, 3]`` outputs and inputs against the sharp images."""
  scores = jax.device_get(batch_scores(blur, output, sharp, tuple(conventions)))
  return [ImageResult(name=name, input_psnr=float(scores["input_psnr"][i]),
                      input_ssim={c: float(scores[f"input_ssim_{c}"][i]) for c in conventions},
                      psnr=float(scores["psnr"][i]), ssim={c: float(scores[f"ssim_{c}"][i]) for c in conventions},
                      seconds=seconds) for i, name in enumerate(names)]


def evaluate_pairs(apply_fn: ApplyFn, pairs: Iterable[dict], conventions=metrics.CONVENTIONS,
                   on_image: Callable[[dict, np.ndarray, ImageResult], None] | None = None, *,
                   batch_size: int = 1) -> list[ImageResult]:
  """Deblurs every pair ``{"blur", "sharp": uint8 [H, W, 3] (or [0, 1] floats), "name"}`` and scores it.

  Consecutive pairs of the same size go through the network `batch_size` at a time (the results equal one
  at a time; an image's `seconds` is its batch's time over the batch's length). The pairs come from 8-bit
  files, so ``to_uint8`` recovers their exact pixel values. `on_image(pair, output_uint8, result)` is called
  for each image in order (to save it, or to draw a grid); only one batch of pairs is held at a time.
  """
  if batch_size < 1:
    raise ValueError(f"the batch size must be at least 1, got {batch_size}.")
  results = []
  for batch in same_shape_batches(pairs, batch_size):
    start = time.perf_counter()
    outputs = deblur_batch(apply_fn, [pair["blur"] for pair in batch], batch_size)
    seconds = (time.perf_counter() - start) / len(batch)
    blurs, sharps = (np.stack([_as_uint8(pair[key]) for pair in batch]) for key in ("blur", "sharp"))
    scored = score([str(pair["name"]) for pair in batch], blurs, outputs, sharps, seconds, conventions)
    for pair, output, result in zip(batch, outputs, scored):
      results.append(result)
      if on_image is not None:
        on_image(pair, output, result)
  return results


class Extremes:
  """The `count` lowest- and highest-scored items seen so far (a running bottom-k and top-k).

  Only 2·`count` items are held however many are offered; of equal scores the earliest is kept.
  """

  def __init__(self, count: int):
    self.count = count
    self._low = []  # (-score, -order, item): heapq pops the highest score, of equal ones the latest
    self._high = []  # (score, -order, item): heapq pops the lowest score, of equal ones the latest
    self._offered = 0

  def wants(self, value: float) -> bool:
    """Whether an item of this score would be kept (so that it is only built when needed)."""
    return self.count > 0 and (len(self._low) < self.count or value < -self._low[0][0] or
                               len(self._high) < self.count or value > self._high[0][0])

  def add(self, value: float, item) -> None:
    self._offered += 1
    for heap, entry in ((self._low, (-value, -self._offered, item)), (self._high, (value, -self._offered, item))):
      if len(heap) < self.count:
        heapq.heappush(heap, entry)
      elif self.count:
        heapq.heappushpop(heap, entry)

  def lowest(self) -> list:
    """The kept items of the lowest scores, lowest first."""
    return [item for *_, item in sorted(self._low, reverse=True)]  # orders are unique: items never compared

  def highest(self) -> list:
    """The kept items of the highest scores, highest first."""
    return [item for *_, item in sorted(self._high, reverse=True)]


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


def load_model(workdir: str | os.PathLike, checkpoint: str = "latest"
               ) -> tuple[ml_collections.ConfigDict, ApplyFn, int]:
  """(the config it was trained with, a jitted apply function, the checkpoint's step) from a workdir.

  `checkpoint` is "latest", "best" (by evaluation PSNR) or a step number. Only the parameters are read.
  """
  paths.check_reachable(workdir, "workdir")
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
  except (FileNotFoundError, KeyError, ValueError) as error:  # tensorstore reports damaged files as ValueError
    raise ValueError(f"the checkpoint of step {step} in {workdir} is incomplete or corrupt "
                     f"({paths.first_line(error)}); pass --checkpoint with another step.") from None
  forward = jax.jit(lambda params, image: nnx.merge(graphdef, params)(image))
  return config, functools.partial(forward, params), step


def write_results(results: list[ImageResult], out: epath.Path, extra: dict) -> dict:
  """`results.csv` (one row per image) and `summary.json` (means and the run's facts) in `out`."""
  out.mkdir(parents=True, exist_ok=True)
  conventions = list(results[0].ssim) if results else []
  table = io.StringIO()
  writer = csv.writer(table)
  writer.writerow(["scene", "name", "input_psnr"] + [f"input_ssim_{c}" for c in conventions] + ["psnr"] +
                  [f"ssim_{c}" for c in conventions] + ["seconds"])
  for r in results:
    scene, name = r.name.split("/", 1) if "/" in r.name else ("", r.name)
    writer.writerow([scene, name, f"{r.input_psnr:.6f}"] + [f"{r.input_ssim[c]:.8f}" for c in conventions] +
                    [f"{r.psnr:.6f}"] + [f"{r.ssim[c]:.8f}" for c in conventions] + [f"{r.seconds:.4f}"])
  (out / "results.csv").write_text(table.getvalue())
  summary = {**mean_metrics(results), "seconds": float(np.mean([r.seconds for r in results])) if results else 0,
             "images": len(results), "conventions": conventions, **extra}
  (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
  return summary


def evaluate_workdir(workdir: str | os.PathLike, *, data_root: str | None = None, dataset: str | None = None,
                     out: str | os.PathLike | None = None, conventions=metrics.CONVENTIONS,
                     checkpoint: str = "latest", save_images: bool = False, worst_best: int = 3,
                     batch_size: int = 1, ensemble: bool = False, tile: int = 0, overlap: int = 32) -> dict:
  """Evaluates a workdir's checkpoint on its config's test split (or on `data_root`), writes the files.

  `save_images` writes each output to OUT/images/<scene>/<frame>.png and blur | output | sharp pictures of
  the `worst_best` images of the lowest and of the highest PSNR gain over their input to OUT/worst/ and
  OUT/best/. `batch_size` images of one size run through the network at a time. `ensemble` averages the ×8
  flips/rotations; `tile` > 0 runs overlapping tiles (see `inference`).
  """
  if batch_size < 1 or worst_best < 0:
    raise ValueError(f"the batch size must be at least 1 and the worst/best count at least 0, got {batch_size} "
                     f"and {worst_best}.")
  config, network, step = load_model(workdir, checkpoint)
  apply_fn = _inference_fn(network, ensemble=ensemble, tile=tile, overlap=overlap)
  data = config.data
  if data_root is not None:  # a folder of pairs: built (once, beside it) and read like any data set
    data.root, data.tfds_dir, data.dataset = _test_root(data_root), "", dataset or "folder"
    prepare.build(data.dataset, data.root, blur_kind=data.blur_kind, storage=pipeline.storage(data))
  elif dataset is not None:
    data.dataset = dataset
  out = paths.user_path(out) if out is not None else paths.user_path(workdir) / "eval" / f"step_{step}"
  split = pipeline.open_split(data, data.eval_split)
  paths.check_writable(out, "output folder", "--out")  # before the work, not after it
  extremes = Extremes(worst_best if save_images else 0)
  progress = tqdm.tqdm(desc="evaluating", unit="image", total=len(split))  # counts scored images
  pairs = pipeline.eval_iter(split, data)

  def on_image(pair, output, result):
    progress.update()
    if save_images:
      write_png(out / "images" / f"{result.name}.png", output)
      gain = result.psnr - result.input_psnr
      if extremes.wants(gain):
        extremes.add(gain, (result.name, side_by_side(pair["blur"], output, pair["sharp"])))

  with progress:
    results = evaluate_pairs(apply_fn, pairs, conventions, on_image=on_image, batch_size=batch_size)
  if save_images:
    write_extremes(out, extremes)
  return write_results(results, out, {"checkpoint_step": step, "config": config.get("name", ""),
                                      "ensemble": ensemble, "tile": tile, "batch_size": batch_size,
                                      "data": split.description, "device": jax.devices()[0].device_kind,
                                      "out": str(out)})


def _inference_fn(network: ApplyFn, *, ensemble: bool, tile: int, overlap: int) -> ApplyFn:
  """The network, or its ×8 self-ensemble and/or tiled application (image by image: tiles take one)."""
  if not (ensemble or tile):
    return network

  def one(image):  # `evaluate_pairs` pads for `network`; the ensemble and tiles are padded themselves
    return inference.deblur_image(lambda x: deblur(network, x), image, tile=tile, overlap=overlap, ensemble=ensemble)

  return lambda images: jnp.concatenate([one(images[i:i + 1]) for i in range(images.shape[0])])


def write_png(path: epath.Path, pixels: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("wb") as f:  # a local file or an object in a bucket
    Image.fromarray(pixels).save(f, format="PNG")


def write_extremes(out: epath.Path, extremes: Extremes) -> None:
  """OUT/worst/NN_<scene>_<frame>.png and OUT/best/NN_…png (rank NN from 01), replacing an earlier run's."""
  for folder, items in (("worst", extremes.lowest()), ("best", extremes.highest())):
    for old in (out / folder).glob("[0-9][0-9]_*.png"):
      old.unlink()
    for rank, (name, picture) in enumerate(items, 1):
      write_png(out / folder / f"{rank:02d}_{name.replace('/', '_')}.png", picture)


def _test_root(path: str) -> str:
  """`--data` may be a data set root (holding test/) or its test/ folder itself."""
  folder = pathlib.Path(path)
  return str(folder.parent) if folder.name == "test" and not (folder / "test").is_dir() else str(folder)
