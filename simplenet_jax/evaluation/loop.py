"""Evaluation: deblur each test pair at full resolution and score it against its sharp image (SPEC §5).

The loop is here; the network's application is `inference`, the scores are `scoring`, the files are
`reports`. Images are reflect-padded to a multiple of 4 and cropped back; predictions are clipped and rounded
to uint8, as a saved PNG would be, before PSNR/SSIM.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import time
from collections.abc import Callable, Iterable

import jax
import numpy as np
import tqdm

from simplenet_jax import extras
from simplenet_jax import inference
from simplenet_jax import paths
from simplenet_jax import photos
from simplenet_jax import tiling
from simplenet_jax.data import catalogue
from simplenet_jax.data import pipeline
from simplenet_jax.evaluation import bands
from simplenet_jax.evaluation import metrics
from simplenet_jax.evaluation import reports
from simplenet_jax.evaluation import scoring

# Data sets whose published protocol aligns each output to its ground truth before scoring (Rim et al. 2020).
ALIGNED_BY_DEFAULT = ("realblur_j",)


def evaluate_pairs(deblur_fn: inference.ApplyFn, pairs: Iterable[dict], conventions=metrics.CONVENTIONS,
                   on_image: Callable[[dict, np.ndarray, scoring.ImageResult], None] | None = None, *,
                   batch_size: int = 1, aligned: bool = False) -> list[scoring.ImageResult]:
  """Deblurs every pair ``{"blur", "sharp": uint8 [H, W, 3] (or [0, 1] floats), "name"}`` and scores it.

  `deblur_fn` maps ``[N, H, W, 3]`` of any size (`inference.make_deblur_fn`). Consecutive pairs of the same
  size go through it `batch_size` at a time (the results equal one at a time; an image's `seconds` is its
  batch's time over the batch's length). The pairs come from 8-bit files, so ``to_uint8`` recovers their exact
  pixel values. `on_image(pair, output_uint8, result)` is called for each image in order (to save it, or to
  draw a grid); only one batch of pairs is held at a time. `aligned` adds RealBlur's ECC-aligned scores.
  """
  if batch_size < 1:
    raise ValueError(f"the batch size must be at least 1, got {batch_size}.")
  results = []
  for batch in inference.same_shape_batches(pairs, batch_size):
    start = time.perf_counter()
    outputs = inference.run_batch(deblur_fn, [pair["blur"] for pair in batch], batch_size)
    seconds = (time.perf_counter() - start) / len(batch)
    blurs, sharps = (np.stack([photos.as_uint8(pair[key]) for pair in batch]) for key in ("blur", "sharp"))
    scored = scoring.score([str(pair["name"]) for pair in batch], blurs, outputs, sharps, seconds, conventions,
                           aligned=aligned)
    for pair, output, result in zip(batch, outputs, scored):
      results.append(result)
      if on_image is not None:
        on_image(pair, output, result)
  return results


def evaluate_workdir(workdir: str | os.PathLike, *, data_root: str | None = None, dataset: str | None = None,
                     out: str | os.PathLike | None = None, conventions=metrics.CONVENTIONS,
                     checkpoint: str = "latest", save_images: bool = False, worst_best: int = 3,
                     batch_size: int = 1, ensemble: bool = False, tile: int = 0, overlap: int = tiling.DEFAULT_OVERLAP,
                     aligned: bool | None = None, overwrite: bool = False, gate: bool = True) -> dict:
  """Evaluates a workdir's checkpoint on its config's test split (or on `data_root`), writes the files.

  `save_images` writes each output to OUT/images/<scene>/<frame>.png and blur | output | sharp pictures of
  the `worst_best` images of the lowest and of the highest PSNR gain over their input to OUT/worst/ and
  OUT/best/. `batch_size` images of one size run through the network at a time. `ensemble` averages the ×8
  flips/rotations; `tile` > 0 runs overlapping tiles (see `inference`). `aligned` adds RealBlur's ECC-aligned
  scores (None: for the data sets of `ALIGNED_BY_DEFAULT`); the summary's "headline" names the protocol.
  `gate=False` applies a gated network's residual to every image (`inference.load_model`).

  The default `out` is WORKDIR/eval/step_N for the config's own test split and WORKDIR/eval/step_N-<name of
  data_root> for other data, so that scoring other data never replaces the model's own results (each with
  the suffix "-no-gate" without the gate). A given `out` that holds an earlier evaluation is refused unless
  `overwrite`; what an evaluation writes there (scores, images) is cleared before it is written again, so no
  stale image stands beside new scores.
  """
  if batch_size < 1 or worst_best < 0:
    raise ValueError(f"the batch size must be at least 1 and the worst/best count at least 0, got {batch_size} "
                     f"and {worst_best}.")
  tiling.check_tiling(tile, overlap)
  config, network, step = inference.load_model(workdir, checkpoint, gate=gate)
  deblur_fn = inference.make_deblur_fn(network, ensemble=ensemble, tile=tile, overlap=overlap)
  data = config.data
  if data_root is not None:  # a folder of pairs: built (once, beside it) and read like any data set
    data.root, data.tfds_dir, data.dataset = _test_root(data_root), "", dataset or "folder"
    data.tfds_dir = _writable_build_dir(data.root, workdir)
  elif dataset is not None:
    data.dataset = dataset
  if aligned is None:
    aligned = data.dataset in ALIGNED_BY_DEFAULT
  if aligned:
    extras.require("realblur", "RealBlur's protocol (eval.py --align)", "cv2", "skimage")
  if out is not None:
    out = paths.user_path(out)
    if _holds_results(out) and not overwrite:
      raise ValueError(f"--out {out} holds an earlier evaluation; pass --overwrite to replace it, or another "
                       "--out.")
  else:
    name = f"step_{step}" if data_root is None else f"step_{step}-{pathlib.Path(_test_root(data_root)).name}"
    name += "" if gate else "-no-gate"
    out = paths.user_path(workdir) / "eval" / name
  split = catalogue.open_split(data, data.eval_split, build_if_needed=data_root is not None)
  paths.check_writable(out, "output folder", "--out")  # before the work, not after it
  _clear_results(out)
  extremes = reports.Extremes(worst_best if save_images else 0)
  progress = tqdm.tqdm(desc="evaluating", unit="image", total=len(split))  # counts scored images
  batch_size = max(1, min(batch_size, len(split)))  # a short batch is filled up to this: never past the data
  pairs = pipeline.eval_iter(split, data)

  def on_image(pair, output, result):
    progress.update()
    if save_images:
      with _writing(out):
        photos.write_png(out / "images" / f"{result.name}.png", output)
      gain = result.psnr - result.input_psnr
      if extremes.wants(gain):
        extremes.add(gain, (result.name, reports.side_by_side(pair["blur"], output, pair["sharp"])))

  with progress:
    results = evaluate_pairs(deblur_fn, pairs, conventions, on_image=on_image, batch_size=batch_size,
                             aligned=aligned)
  with _writing(out):
    if save_images:
      reports.write_extremes(out, extremes)
    return reports.write_results(results, out, {
        "checkpoint_step": step, "config": config.get("name", ""), "dataset": data.dataset,
        "headline": scoring.ALIGNED if aligned else "unaligned", "ensemble": ensemble, "tile": tile,
        "batch_size": batch_size, "gate": gate, "data": split.description, "device": jax.devices()[0].device_kind,
        "out": str(out), "bands": bands.band_summary(results, bands.pair_bands(data.root))})


@contextlib.contextmanager
def _writing(out):
  """A write into `out` that fails (a disk that filled up, a folder gone read-only) is one sentence; each file
  is written whole or not at all, so what was written before stays complete."""
  try:
    yield
  except OSError as error:
    raise ValueError(f"cannot write to the output folder {out} ({error.strerror or paths.first_line(error)}); "
                     "free some space and rerun with --overwrite, which replaces what this run wrote.") from None


RESULT_FILES = ("results.csv", "summary.json")
RESULT_FOLDERS = ("images", "worst", "best")


def _holds_results(out) -> bool:
  return any((out / name).exists() for name in RESULT_FILES + RESULT_FOLDERS)


def _clear_results(out) -> None:
  """Removes what an evaluation writes in `out` (and nothing else there)."""
  for name in RESULT_FILES:
    if (out / name).exists():
      (out / name).unlink()
  for name in RESULT_FOLDERS:
    if (out / name).exists():
      (out / name).rmtree()


def _writable_build_dir(root: str, workdir) -> str:
  """Where --data's build goes: beside it (`<root>_tfds`, where `prepare` puts it) when it is there or can be
  made there; else (read-only media) in WORKDIR/data/<name>_tfds."""
  beside = catalogue.default_tfds_dir(root)
  if paths.is_url(beside) or os.path.exists(beside) or os.access(os.path.dirname(os.path.abspath(beside)), os.W_OK):
    return ""
  return os.fspath(paths.user_path(workdir) / "data" / os.path.basename(beside))


def _test_root(path: str) -> str:
  """`--data` may be a data set root (holding test/) or its test/ folder itself."""
  folder = pathlib.Path(path)
  return str(folder.parent) if folder.name == "test" and not (folder / "test").is_dir() else str(folder)
