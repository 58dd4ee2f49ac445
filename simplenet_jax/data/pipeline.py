"""Input pipeline on grain (SPEC §3–4): random aligned crops and flips for training, full frames for evaluation.

Pairs come from ArrayRecord shards written by `python -m simplenet_jax.data.prepare` (`config.data.shards_dir`)
or, for small sets such as the demo, straight from the data set folder (`config.data.root`); both give the
same record maps, which worker processes decode and crop.

Training order: one global stream of the pairs, shuffled with `config.data.seed` and reshuffled every epoch.
Its positions are dealt to the JAX processes in turn (process p of P takes p, p+P, …), so together they see
every pair once per epoch, and each batches its share of the global batch. Crops and flips are drawn from the
seed and the global position, so they do not depend on the number of worker processes, and the iterator's
state (`get_state` / `set_state`) resumes the stream on exactly the next batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from absl import flags
import grain
import jax
import ml_collections
import numpy as np

from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data import shards


class FolderSource:
  """Random access to the pairs of a data set folder: element i is the record map of pair i (encoded images)."""

  def __init__(self, pairs: Sequence[layouts.Pair]):
    self._pairs = list(pairs)

  def __len__(self) -> int:
    return len(self._pairs)

  def __getitem__(self, index: int) -> dict:
    pair = self._pairs[index]
    return {"blur": pair.blur.read_bytes(), "sharp": pair.sharp.read_bytes(), "scene": pair.scene,
            "frame": pair.frame}

  def __repr__(self) -> str:
    return f"FolderSource({len(self._pairs)} pairs)"


@dataclasses.dataclass(frozen=True)
class DecodePair(grain.transforms.Map):
  """Record (a shard's bytes or a folder's map) → uint8 `blur`, `sharp` [H, W, 3] and `name` (scene/frame)."""

  def map(self, record: bytes | dict) -> dict:
    if isinstance(record, bytes):
      record = shards.decode_record(record)
    name = f"{record['scene']}/{record['frame']}"
    return {"blur": images.decode_rgb(record["blur"], f"{name} (blurred)"),
            "sharp": images.decode_rgb(record["sharp"], f"{name} (sharp)"), "name": name}


@dataclasses.dataclass(frozen=True)
class RandomAlignedCrop(grain.transforms.RandomMap):
  """The same random `size`×`size` window of blur and sharp, then the same random flips (SPEC §3)."""

  size: int
  hflip: bool = True
  vflip: bool = True

  def random_map(self, pair: dict, rng: np.random.Generator) -> dict:
    height, width = pair["blur"].shape[:2]
    top = rng.integers(0, height - self.size + 1)
    left = rng.integers(0, width - self.size + 1)
    window = (slice(top, top + self.size), slice(left, left + self.size))
    flip_h = self.hflip and rng.random() < 0.5
    flip_v = self.vflip and rng.random() < 0.5
    out = {}
    for key in ("blur", "sharp"):
      crop = pair[key][window]
      if flip_h:
        crop = crop[:, ::-1]
      if flip_v:
        crop = crop[::-1]
      out[key] = np.ascontiguousarray(crop)
    return out


@dataclasses.dataclass(frozen=True)
class ToFloat(grain.transforms.Map):
  """uint8 images → float32 in [0, 1] (the model's input range, SPEC §1); other fields pass through."""

  def map(self, pair: dict) -> dict:
    return {key: (value.astype(np.float32) / 255.0 if key in ("blur", "sharp") else value)
            for key, value in pair.items()}


def pair_source(data: ml_collections.ConfigDict, split: str, *, min_size: int = 0):
  """The records of a split, checked before any work starts: shards if `data.shards_dir` is set, else the
  data set folder `data.root` in the layout `data.dataset` (every image header is checked; see `layouts`)."""
  if data.shards_dir:
    return shards.open_split(data.shards_dir, split, dataset=data.dataset, blur_kind=data.blur_kind,
                             min_size=min_size)
  pairs = layouts.load_pairs(data.dataset, data.root, split, blur_kind=data.blur_kind, min_size=min_size)
  return FolderSource(pairs)


def process_layout(process_index: int | None = None, process_count: int | None = None) -> tuple[int, int]:
  """(index, count) of this JAX process; explicit values let tests simulate several processes."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is outside 0…{process_count - 1}.")
  return process_index, process_count


def _read_options(data: ml_collections.ConfigDict) -> grain.ReadOptions:
  # Elements are whole batches or full frames, so a short buffer is plenty and bounds the memory.
  return grain.ReadOptions(num_threads=data.read_threads, prefetch_buffer_size=data.prefetch_buffer_size)


def train_dataset(data: ml_collections.ConfigDict, batch_size: int, *, process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
  """Endless batches {"blur", "sharp": float32 [batch_size / P, crop, crop, 3]} for this process.

  `batch_size` is the global batch (`config.batch_size`); it must divide evenly among the P processes. Iterate
  with `iter(...)`; the iterator's `get_state()` / `set_state()` checkpoint the position (a state restores
  into a pipeline with the same `num_workers` and process count: grain's state records each worker's
  position), and `close()` stops the worker processes.
  """
  index, count = process_layout(process_index, process_count)
  if batch_size % count:
    raise ValueError(f"The global batch size {batch_size} does not split evenly among {count} processes; "
                     "use a multiple of the process count.")
  source = pair_source(data, data.train_split, min_size=data.crop_size)
  crop = RandomAlignedCrop(size=data.crop_size, hflip=data.hflip, vflip=data.vflip)
  dataset = (grain.MapDataset.source(source)
             .seed(data.seed)
             .shuffle()
             .repeat()  # shuffle before repeat: every epoch gets its own order
             .map(DecodePair())
             .random_map(crop)  # before the process slice, so draws follow the global position
             [index::count]
             .map(ToFloat())
             .batch(batch_size // count, drop_remainder=True))
  iter_dataset = dataset.to_iter_dataset(_read_options(data))
  if data.num_workers > 0 and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags; outside an absl app (tests, notebooks) take their defaults.
    flags.FLAGS.mark_as_parsed()
  return iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=data.num_workers, per_worker_buffer_size=data.worker_buffer_size))


def eval_dataset(data: ml_collections.ConfigDict, split: str | None = None, *,
                 limit: int | None = None) -> grain.IterDataset:
  """Full-resolution pairs {"blur", "sharp": float32 [H, W, 3], "name": "scene/frame"} in a fixed order.

  One pair per element, since GoPro and RealBlur frames differ in size; `split` defaults to
  `data.eval_split`, `limit` keeps the first pairs only (a quick look during training).
  """
  source = pair_source(data, split or data.eval_split)
  dataset = grain.MapDataset.source(source).map(DecodePair()).map(ToFloat())
  if limit is not None:
    dataset = dataset[:limit]
  return dataset.to_iter_dataset(_read_options(data))
