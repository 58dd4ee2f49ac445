"""A synthesized data set: pairs made from sharp photos, written in the GoPro layout with a meta.json.

Training pairs are random crops of the photos at random scales, turned by a random element of the square's
symmetry group and recoloured (channel order, hue, saturation, white balance, exposure), identically for blur
and sharp, so that a handful of photos yields hundreds of distinct pairs and the model cannot learn their
colours. The built-in test pairs are whole photos from *other* packages than the training photos, so the
demo's figure measures how well the model deblurs photos it never saw.

`synthesize_dataset` writes `DIR/{train,test}/<scene>/{blur,sharp}/NNNNNN.png` (one scene per source photo,
train and test photos disjoint) and `DIR/meta.json`; the same arguments give byte-identical files.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import multiprocessing
import os
import pathlib
import shutil
import sys
from collections.abc import Sequence

import numpy as np
import tqdm

from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data.synthesis import pairs
from simplenet_jax.data.synthesis import sources
from simplenet_jax.data.synthesis.camera_shake import BlurSettings
from simplenet_jax.data.synthesis.pairs import Augmentations

# The training pairs' blur: camera paths of 1–30 px (what hand-held photos show; median about 8 px), no JPEG
# input, and targets that keep their input's noise, so that the network removes blur and never noise. None is
# nearly still: the demo's gate learns what is sharp from the targets themselves (`train.gated_loss`). The test
# split keeps BlurSettings(), the recipe its figures were first measured with. The README gives what each
# change did.
TRAIN_BLUR = BlurSettings(max_length=30.0, length_beta=(1.0, 2.5), jpeg_fraction=0.0, target_noise=True)
DEFAULT_TRAIN_PAIRS = 420
DEFAULT_TEST_PAIRS = 12
DEFAULT_SIZE = (256, 256)
META_FILE = "meta.json"
META_VERSION = 2


@dataclasses.dataclass(frozen=True)
class _Job:
  split: str
  index: int  # pair index within the split; also seeds the pair
  frame: int  # frame number within the scene
  photo: sources.SourcePhoto
  seed: int
  height: int
  width: int
  settings: BlurSettings
  augment: Augmentations | None  # train pairs only
  out_dir: str


def _render_job(job: _Job) -> dict:
  """Makes one pair and writes its two PNGs; runs in a worker process."""
  rng = np.random.default_rng([job.seed, layouts.SPLITS.index(job.split), job.index])
  if job.split == "train":
    pair = pairs.synthesize_pair(sources.load_photo(job.photo.ref), rng, job.height, job.width, job.settings,
                                 augment=job.augment)
  else:  # at the photo's own resolution (scale 1), as a user's photo would be
    pair = pairs.synthesize_pair(sources.test_photo(job.photo.ref), rng, job.height, job.width, job.settings,
                                 min_scale=1.0)
  scene_dir = pathlib.Path(job.out_dir) / job.split / job.photo.scene
  name = f"{job.frame:06d}.png"
  for kind, pixels in (("blur", pair.blur), ("sharp", pair.sharp)):
    (scene_dir / kind).mkdir(parents=True, exist_ok=True)
    (scene_dir / kind / name).write_bytes(images.encode_png(pixels))
  return {"split": job.split, "scene": job.photo.scene, "frame": name, "source_photo": job.photo.ref, **pair.info}


def _jobs(photos: dict[str, list[sources.SourcePhoto]], counts: dict[str, int], seed: int, size: tuple[int, int],
          test_size: tuple[int, int] | None, settings: dict[str, BlurSettings], augment: Augmentations,
          out_dir: pathlib.Path) -> list[_Job]:
  """Pairs go round-robin over a split's photos, so every scene gets about the same number."""
  jobs = []
  for split in layouts.SPLITS:
    split_photos = photos[split]
    for index in range(counts[split]):
      photo = split_photos[index % len(split_photos)]
      if split == "train":
        height, width = size
      else:
        height, width = test_size or sources.whole_photo_size(sources.test_photo(photo.ref))
      jobs.append(_Job(split, index, index // len(split_photos), photo, seed, height, width, settings[split],
                       augment if split == "train" else None, str(out_dir)))
  return jobs


def _psnr_summary(values: Sequence[float]) -> dict[str, float]:
  """Of the finite PSNRs: a still camera without noise records the sharp image itself (inf dB)."""
  count = len(values)
  values = np.asarray([v for v in values if np.isfinite(v)] or [np.nan], dtype=np.float64)
  return {"count": count, "min": round(float(values.min()), 3), "mean": round(float(values.mean()), 3),
          "median": round(float(np.median(values)), 3), "max": round(float(values.max()), 3)}


def synthesize_dataset(out: str | os.PathLike, *, photos_dir: str | os.PathLike | None = None,
                       train_pairs: int = DEFAULT_TRAIN_PAIRS, test_pairs: int = DEFAULT_TEST_PAIRS,
                       size: tuple[int, int] = DEFAULT_SIZE, test_size: tuple[int, int] | None = None,
                       seed: int = 0, workers: int | None = None, settings: BlurSettings = TRAIN_BLUR,
                       test_settings: BlurSettings = BlurSettings(), augment: Augmentations = Augmentations(),
                       progress: bool = True) -> dict:
  """Writes the GoPro-layout data set to `out` and returns its meta.json content.

  Train pairs are `size` crops blurred with `settings`; test pairs are `test_size` crops, or whole photos
  (less a border, scaled down to `sources.MAX_TEST_SIDE`) when it is None, blurred with `test_settings`.

  The set is built in `<out>.partial` and renamed when complete, so an interrupted run never leaves a folder
  that looks finished; rerunning the same command on a finished folder does nothing.
  """
  out = pathlib.Path(out)
  height, width = size
  for flag, shape in (("--size", size), ("--test-size", test_size or size)):
    if min(shape) < sources.MIN_SIDE:
      raise images.DatasetError(f"{flag} {shape[0]} {shape[1]} is too small; use at least {sources.MIN_SIDE} "
                                f"{sources.MIN_SIDE}.")
  if train_pairs < 1 or test_pairs < 1:
    raise images.DatasetError(f"--train-pairs and --test-pairs must be at least 1, got {train_pairs}, {test_pairs}.")
  if photos_dir is None:
    photos, too_small, source = sources.builtin_photos(), 0, sources.BUILTIN_SOURCE
  else:
    photos, too_small = sources.user_photos(pathlib.Path(photos_dir), height, width, seed)
    source = str(photos_dir)
  recipe = {"version": META_VERSION, "source": source, "seed": seed, "size": [height, width],
            "test_size": list(test_size) if test_size else "whole photos", "train_pairs": train_pairs,
            "test_pairs": test_pairs, "blur": dataclasses.asdict(settings), "test_blur": dataclasses.asdict(test_settings), "augment": dataclasses.asdict(augment),
            "photos": {split: [dataclasses.asdict(p) for p in photos[split]] for split in layouts.SPLITS},
            "photos_too_small": too_small}
  recipe = json.loads(json.dumps(recipe))  # tuples → lists, as they will read back
  existing = existing_build(out, recipe)
  if existing is not None:
    return existing
  partial = start_build(out)
  jobs = _jobs(photos, {"train": train_pairs, "test": test_pairs}, seed, size, test_size,
               {"train": settings, "test": test_settings}, augment, partial)
  records = _run_jobs(jobs, workers, progress)
  meta = {"recipe": recipe,
          "summary": {split: _psnr_summary([r["input_psnr_db"] for r in records if r["split"] == split])
                      for split in layouts.SPLITS},
          "pairs": records}
  finish_build(partial, out, meta)
  return meta


def existing_build(out: pathlib.Path, recipe: dict) -> dict | None:
  """The meta.json of the set at `out` if it was made with `recipe`; None if `out` is absent or empty;
  images.DatasetError if it holds anything else."""
  if (out / META_FILE).is_file():
    existing = json.loads((out / META_FILE).read_text())
    if existing.get("recipe") == recipe:
      return existing
    raise images.DatasetError(
        f"{out} already holds a synthesized data set made with other settings; delete it or choose another --out.")
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise images.DatasetError(f"{out} exists and is not empty; delete it or choose another --out.")
  return None


def start_build(out: pathlib.Path) -> pathlib.Path:
  """A fresh `<out>.partial` folder to build the set in: an interrupted build never looks finished."""
  partial = out.with_name(out.name + ".partial")
  shutil.rmtree(partial, ignore_errors=True)
  partial.mkdir(parents=True)
  return partial


def finish_build(partial: pathlib.Path, out: pathlib.Path, meta: dict) -> None:
  """Writes meta.json last and renames the finished `partial` folder to `out`."""
  (partial / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
  if out.exists():
    out.rmdir()
  partial.rename(out)


def _run_jobs(jobs: list[_Job], workers: int | None, progress: bool) -> list[dict]:
  """Runs the jobs in order, in worker processes when there is more than one core to use."""
  workers = min(workers or os.cpu_count() or 1, len(jobs))
  bar = functools.partial(tqdm.tqdm, total=len(jobs), unit="pair", disable=not progress, file=sys.stderr)
  if workers <= 1:
    return [_render_job(job) for job in bar(jobs)]
  # spawn, not fork: a caller may already run JAX's threads, which fork would copy mid-flight.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    return list(bar(pool.map(_render_job, jobs, chunksize=4)))
