"""Input pipeline on grain (SPEC §3–4): random aligned crops and flips for training, full frames for evaluation.

Pairs come from a split of a built data set (`catalogue.open_split`), read at random: a crop reads only the
records (raw uint8 windows) under it. Everything leaves the workers as uint8; the conversion to float happens
on the device, in the jitted step.

Training order: one global stream of crop regions (frames, or sub-images), shuffled with `config.data.seed` and
reshuffled every epoch. Its positions are dealt to the JAX processes in turn (process p of P takes p, p+P, …),
so together they see every region once per epoch, and each batches its share of the global batch. Crops and
flips are drawn from the seed and the global position, so they do not depend on the number of worker
processes, and the iterator's state (`get_state` / `set_state`) resumes the stream on exactly the next batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from absl import flags
import grain
import jax
import ml_collections
import numpy as np

from simplenet_jax.data import catalogue
from simplenet_jax.data.images import DatasetError


def process_layout(process_index: int | None = None, process_count: int | None = None) -> tuple[int, int]:
  """(index, count) of this JAX process; explicit values let tests simulate several processes."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside 0…{process_count - 1}.")
  return process_index, process_count


@dataclasses.dataclass(frozen=True)
class DrawCrop(grain.transforms.RandomMap):
  """Region index → a random `size`² window inside it and random flips (SPEC §3); no pixels are read."""

  regions: Sequence[tuple[int, int, int, int, int, int]]
  size: int
  hflip: bool = True
  vflip: bool = True

  def random_map(self, region: int, rng: np.random.Generator) -> dict:
    index, record, top, left, height, width = self.regions[region]
    return {"index": index, "record": record, "top": top + int(rng.integers(0, height - self.size + 1)),
            "left": left + int(rng.integers(0, width - self.size + 1)),
            "flip_h": self.hflip and rng.random() < 0.5, "flip_v": self.vflip and rng.random() < 0.5}


@dataclasses.dataclass(frozen=True)
class ReadCrop(grain.transforms.Map):
  """A drawn window → the same uint8 crop of blur and sharp, flipped alike."""

  reader: catalogue.SplitReader
  size: int

  def map(self, crop: dict) -> dict:
    pair = self.reader.read(crop["index"], crop["top"], crop["left"], self.size, self.size, crop["record"])
    out = {}
    for key, image in zip(("blur", "sharp"), pair):
      if crop["flip_h"]:
        image = image[:, ::-1]
      if crop["flip_v"]:
        image = image[::-1]
      out[key] = np.ascontiguousarray(image)
    return out


@dataclasses.dataclass(frozen=True)
class ReadFrame(grain.transforms.Map):
  """Frame index → {"blur", "sharp": uint8 [H, W, 3], "name": "scene/frame"}."""

  reader: catalogue.SplitReader

  def map(self, index: int) -> dict:
    _, _, height, width, _ = self.reader.frames[index]
    blur, sharp = self.reader.read(index, 0, 0, height, width)
    return {"blur": blur, "sharp": sharp, "name": self.reader.name(index)}


def _read_options(data: ml_collections.ConfigDict) -> grain.ReadOptions:
  # Elements are whole batches or full frames, so a short buffer is plenty and bounds the memory.
  return grain.ReadOptions(num_threads=data.read_threads, prefetch_buffer_size=data.prefetch_buffer_size)


def _check_crop(reader: catalogue.SplitReader, regions, crop_size: int) -> None:
  smallest = min(regions, key=lambda region: min(region[4:]))
  if min(smallest[4:]) < crop_size:
    what = "sub-images" if smallest[1] >= 0 else "images"
    raise DatasetError(f"{reader.description} holds {reader.split} {what} as small as {smallest[5]}×{smallest[4]} "
                       f"({reader.name(smallest[0])}), smaller than the {crop_size}×{crop_size} training crop; lower "
                       "the crop size (config.data.crop_size)" + (" or use storage 'tiles'." if what == "sub-images"
                                                                 else " or remove the pair."))


def train_dataset(data: ml_collections.ConfigDict, batch_size: int, *, process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
  """Endless batches {"blur", "sharp": uint8 [batch_size / P, crop, crop, 3]} for this process.

  `batch_size` is the global batch (`config.batch_size`); it must divide evenly among the P processes. Iterate
  with `iter(...)`; the iterator's `get_state()` / `set_state()` checkpoint the position (a state restores
  into a pipeline with the same `num_workers` and process count: grain's state records each worker's
  position), and `close()` stops the worker processes.
  """
  index, count = process_layout(process_index, process_count)
  if batch_size % count:
    raise ValueError(f"The global batch size {batch_size} does not split evenly among {count} processes; "
                     "use a multiple of the process count.")
  reader = catalogue.open_split(data, data.train_split)
  regions = reader.regions()
  _check_crop(reader, regions, data.crop_size)
  dataset = (grain.MapDataset.range(len(regions))
             .seed(data.seed)
             .shuffle()
             .repeat()  # shuffle before repeat: every epoch gets its own order
             .random_map(DrawCrop(regions, data.crop_size, data.hflip, data.vflip))  # draws follow the global position
             [index::count]
             .map(ReadCrop(reader, data.crop_size))
             .batch(batch_size // count, drop_remainder=True))
  if data.num_workers > 0:
    _let_grain_start_workers()
  return dataset.to_iter_dataset(_read_options(data)).mp_prefetch(grain.MultiprocessingOptions(
      num_workers=data.num_workers, per_worker_buffer_size=data.worker_buffer_size))


def _let_grain_start_workers() -> None:
  """grain reads its absl flag --grain_enable_multiprocess_worker_profiling when it starts worker processes,
  which raises unless absl has parsed the command line. An absl app (train.py, eval.py) has; elsewhere (tests,
  notebooks, benchmarks) the flags are marked parsed, so that every flag keeps its default."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def eval_dataset(reader: catalogue.SplitReader, data: ml_collections.ConfigDict, *,
                 limit: int | None = None) -> grain.MapDataset:
  """Full-resolution pairs {"blur", "sharp": uint8 [H, W, 3], "name": "scene/frame"} of an open split (see
  `catalogue.open_split`, done once: nothing is checked again), in a fixed order, one pair per element since
  frames may differ in size; `limit` keeps the first pairs only (a quick look during training). Iterate it
  directly, or with `.to_iter_dataset(...)` to read ahead."""
  dataset = grain.MapDataset.range(len(reader))
  if limit is not None:
    dataset = dataset[:limit]
  return dataset.map(ReadFrame(reader))


def eval_iter(reader: catalogue.SplitReader, data: ml_collections.ConfigDict, *,
              limit: int | None = None) -> grain.IterDataset:
  """`eval_dataset` read ahead by `data.read_threads` threads; `len(eval_dataset(...))` gives its length."""
  return eval_dataset(reader, data, limit=limit).to_iter_dataset(_read_options(data))
