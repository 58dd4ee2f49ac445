"""Input pipeline on grain (SPEC §3–4): random aligned crops and flips for training, full frames for evaluation.

Pairs come from a data set built once by `python -m simplenet_jax.data.prepare` (a TFDS builder in `builders`),
read with `tfds.data_source` at random: a crop reads only the records (raw uint8 windows) under it. Everything
leaves the workers as uint8; the conversion to float happens on the device, in the jitted step.

Training order: one global stream of crop regions (frames, or sub-images), shuffled with `config.data.seed` and
reshuffled every epoch. Its positions are dealt to the JAX processes in turn (process p of P takes p, p+P, …),
so together they see every region once per epoch, and each batches its share of the global batch. Crops and
flips are drawn from the seed and the global position, so they do not depend on the number of worker
processes, and the iterator's state (`get_state` / `set_state`) resumes the stream on exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from absl import flags
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from simplenet_jax import paths
from simplenet_jax.data import builders
from simplenet_jax.data import layouts
from simplenet_jax.data.images import DatasetError


def default_tfds_dir(root: str | os.PathLike) -> str:
  """Where a data set built from `root` lives unless `config.data.tfds_dir` says: `<root>_tfds` beside it."""
  return os.fspath(root).rstrip("/") + "_tfds"


def tfds_dir(data: ml_collections.ConfigDict) -> str:
  """The TFDS data folder of the config: an absolute local path, or a bucket URL as it is."""
  return os.fspath(paths.user_path(data.get("tfds_dir") or default_tfds_dir(data.root)))


def storage(data: ml_collections.ConfigDict) -> str:
  return data.get("storage", "tiles")  # a workdir saved before the field existed read PNG frames: same crops


def tfds_name(dataset: str, blur_kind: str = "blur", storage: str = "tiles") -> str:
  """The TFDS name of a built data set, e.g. ``gopro/blur`` or ``deblur_folder/blur_subimages``."""
  if dataset not in builders.BUILDERS:
    raise DatasetError(f"Unknown data set {dataset!r}; use one of {', '.join(builders.BUILDERS)}.")
  builder, config = builders.BUILDERS[dataset], builders.config_name(blur_kind, storage)
  if config not in builder.builder_configs:
    kinds = sorted({c.blur_kind for c in builder.builder_configs.values()})
    raise DatasetError(f"{dataset} has no blur kind {blur_kind!r}; use {' or '.join(kinds)} "
                       "(config.data.blur_kind).")
  return f"{builder.name}/{config}"


def prepare_command(data: ml_collections.ConfigDict) -> str:
  return (f"python -m simplenet_jax.data.prepare --dataset {data.dataset} --source {data.root} --out "
          f"{tfds_dir(data)} --blur-kind {data.blur_kind} --storage {storage(data)}")


class SplitReader:
  """Random access to the frames of a built split: any window of any frame, read from the records under it.

  Pickles small (grain sends it to its worker processes): the TFDS source reopens its files there.
  """

  def __init__(self, source, split: str, description: str):
    metadata = source.dataset_info.metadata
    table = metadata["splits"][split]
    self._source = source
    self._config = builders.PairsConfig(name="", **metadata["storage"])
    self.split, self.description = split, description
    self.frames = [tuple(frame) for frame in table["frames"]]  # (scene, frame, height, width, first record)
    if len(source) != table["num_records"]:
      raise DatasetError(f"{description} holds {len(source)} records but its metadata lists "
                         f"{table['num_records']}; the build is damaged, build it again.")

  def __len__(self) -> int:
    return len(self.frames)

  def name(self, index: int) -> str:
    scene, frame, *_ = self.frames[index]
    return f"{scene}/{frame}"

  def windows(self, index: int) -> list[tuple[int, int, int, int]]:
    _, _, height, width, _ = self.frames[index]
    return builders.windows(height, width, self._config, self.split)

  def regions(self) -> list[tuple[int, int, int, int, int, int]]:
    """Where training crops are drawn: (frame, record or -1, top, left, height, width). Each frame, or with
    `subimages` storage each sub-image (a crop then reads that record only)."""
    if self._config.storage == "subimages" and self.split == "train":
      return [(index, self.frames[index][4] + k, *window)
              for index in range(len(self)) for k, window in enumerate(self.windows(index))]
    return [(index, -1, 0, 0, height, width) for index, (_, _, height, width, _) in enumerate(self.frames)]

  def read(self, index: int, top: int, left: int, height: int, width: int,
           record: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """uint8 blur and sharp [height, width, 3] of a window of frame `index` (from `record` alone if given)."""
    first = self.frames[index][4]
    parts = [(first + k, window) for k, window in enumerate(self.windows(index))
             if record < 0 or first + k == record]
    parts = [(k, (t, l, h, w)) for k, (t, l, h, w) in parts
             if t < top + height and top < t + h and l < left + width and left < l + w]
    out = {key: np.empty((height, width, 3), np.uint8) for key in ("blur", "sharp")}
    for k, (t, l, h, w) in parts:
      example = self._source[k]  # one by one: grain's threads and workers already read in parallel
      rows = slice(max(t, top), min(t + h, top + height))
      cols = slice(max(l, left), min(l + w, left + width))
      for key in out:
        out[key][rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = (
            example[key][rows.start - t:rows.stop - t, cols.start - l:cols.stop - l])
    return out["blur"], out["sharp"]


def open_split(data: ml_collections.ConfigDict, split: str) -> SplitReader:
  """The built split `split` of the data set the config names, or one `DatasetError` sentence saying how to
  build it. A `folder` build is checked against its source folder, when that is present, by file names and
  sizes."""
  name, directory = tfds_name(data.dataset, data.blur_kind, storage(data)), tfds_dir(data)
  description = f"The data set {name} in {directory}"
  paths.check_reachable(directory, "TFDS data folder")
  builder = tfds.builder(name, data_dir=directory)
  if not builder.is_prepared():
    raise DatasetError(f"No data set {name} is built in {directory}; build it with `{prepare_command(data)}`.")
  if split not in builder.info.splits:
    raise DatasetError(f"{description} has no {split} split (it holds {', '.join(builder.info.splits)}).")
  if data.dataset == "folder" and os.path.isdir(data.root):
    pairs = layouts.list_pairs(data.dataset, data.root, split, data.blur_kind)
    if builders.fingerprint(pairs) != builder.info.metadata["splits"][split]["fingerprint"]:
      raise DatasetError(f"{description} was built from other files than those in {data.root}/{split}; build it "
                         f"again with `{prepare_command(data)} --overwrite`.")
  return SplitReader(tfds.data_source(name, split=split, data_dir=directory, download=False), split, description)


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

  reader: SplitReader
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

  reader: SplitReader

  def map(self, index: int) -> dict:
    _, _, height, width, _ = self.reader.frames[index]
    blur, sharp = self.reader.read(index, 0, 0, height, width)
    return {"blur": blur, "sharp": sharp, "name": self.reader.name(index)}


def _read_options(data: ml_collections.ConfigDict) -> grain.ReadOptions:
  # Elements are whole batches or full frames, so a short buffer is plenty and bounds the memory.
  return grain.ReadOptions(num_threads=data.read_threads, prefetch_buffer_size=data.prefetch_buffer_size)


def _check_crop(reader: SplitReader, regions, crop_size: int) -> None:
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
  reader = open_split(data, data.train_split)
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
  iter_dataset = dataset.to_iter_dataset(_read_options(data))
  if data.num_workers > 0 and not flags.FLAGS.is_parsed():
    # grain's worker processes read absl flags; outside an absl app (tests, notebooks) take their defaults.
    flags.FLAGS.mark_as_parsed()
  return iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
      num_workers=data.num_workers, per_worker_buffer_size=data.worker_buffer_size))


def eval_dataset(reader: SplitReader, data: ml_collections.ConfigDict, *, limit: int | None = None) -> grain.MapDataset:
  """Full-resolution pairs {"blur", "sharp": uint8 [H, W, 3], "name": "scene/frame"} of an open split (see
  `open_split`, done once: nothing is checked again), in a fixed order, one pair per element since frames may
  differ in size; `limit` keeps the first pairs only (a quick look during training). Iterate it directly, or
  with `.to_iter_dataset(...)` to read ahead."""
  dataset = grain.MapDataset.range(len(reader))
  if limit is not None:
    dataset = dataset[:limit]
  return dataset.map(ReadFrame(reader))


def eval_iter(reader: SplitReader, data: ml_collections.ConfigDict, *, limit: int | None = None) -> grain.IterDataset:
  """`eval_dataset` read ahead by `data.read_threads` threads; `len(eval_dataset(...))` gives its length."""
  return eval_dataset(reader, data, limit=limit).to_iter_dataset(_read_options(data))
