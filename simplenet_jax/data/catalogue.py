"""The catalogue of built data sets (SPEC §4): what a build is called, where it lives, how it is built and opened.

A data set in its published layout (`layouts`) is built once by its TFDS builder (`builders`) into a TFDS data
folder, `<root>_tfds` unless `config.data.tfds_dir` says, under a name such as ``gopro/blur``. Training and
evaluation open a split of it here, checked against its source folder, and read it through a `SplitReader`.
The build command (`python -m simplenet_jax.data.prepare`) calls `build`; the grain pipeline (`pipeline`) reads
the splits opened here.
"""

from __future__ import annotations

import os

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
  """The command that builds the data set the config names, for the sentences that ask for it."""
  return (f"python -m simplenet_jax.data.prepare --dataset {data.dataset} --source {data.root} --out "
          f"{tfds_dir(data)} --blur-kind {data.blur_kind} --storage {storage(data)}")


def build(dataset: str, source: str | os.PathLike, out: str | os.PathLike | None = None, *, blur_kind: str = "blur",
          storage: str = "tiles", overwrite: bool = False) -> tuple[tfds.core.DatasetBuilder, bool]:
  """Builds (or finds built) the data set in `out` (default `<source>_tfds`); returns its builder and whether
  it was already built. Every pair is checked before anything is written (one `DatasetError` sentence)."""
  source = os.path.abspath(os.fspath(source))
  out = os.fspath(out) if out else default_tfds_dir(source)
  name = tfds_name(dataset, blur_kind, storage)
  splits = builders.list_splits(dataset, source, blur_kind)  # a missing folder or file: its sentence, now
  builder = tfds.builder(name, data_dir=out)
  if builder.is_prepared() and not overwrite:
    built = builder.info.metadata["splits"]
    for split, pairs in splits.items():
      if split not in built or builders.fingerprint(pairs) != built[split]["fingerprint"]:
        raise DatasetError(f"{out} already holds {name} built from other files than those in {source}; pass "
                           "--overwrite to build it again, or choose another --out.")
    return builder, True
  modes = tfds.download.GenerateMode
  mode = modes.FORCE_REDOWNLOAD if overwrite else modes.REUSE_DATASET_IF_EXISTS
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=source, download_mode=mode))
  return builder, False


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


def open_split(data: ml_collections.ConfigDict, split: str, *, build_if_needed: bool = False) -> SplitReader:
  """The built split `split` of the data set the config names, or one `DatasetError` sentence saying how to
  build it. A `folder` build is checked against its source folder, when that is present, by file names and
  sizes.

  With `build_if_needed`, a data set not built yet is built from `data.root` first (`build`, which also does
  that check on a finished build), so that evaluating a folder lists and fingerprints it once.
  """
  name, directory = tfds_name(data.dataset, data.blur_kind, storage(data)), tfds_dir(data)
  description = f"The data set {name} in {directory}"
  paths.check_reachable(directory, "TFDS data folder")
  if build_if_needed:
    builder, _ = build(data.dataset, data.root, directory, blur_kind=data.blur_kind, storage=storage(data))
  else:
    builder = tfds.builder(name, data_dir=directory)
    if not builder.is_prepared():
      raise DatasetError(f"No data set {name} is built in {directory}; build it with `{prepare_command(data)}`.")
  if split not in builder.info.splits:
    raise DatasetError(f"{description} has no {split} split (it holds {', '.join(builder.info.splits)}).")
  if not build_if_needed and data.dataset == "folder" and os.path.isdir(data.root):
    pairs = layouts.list_pairs(data.dataset, data.root, split, data.blur_kind)
    if builders.fingerprint(pairs) != builder.info.metadata["splits"][split]["fingerprint"]:
      raise DatasetError(f"{description} was built from other files than those in {data.root}/{split}; build it "
                         f"again with `{prepare_command(data)} --overwrite`.")
  return SplitReader(tfds.data_source(name, split=split, data_dir=directory, download=False), split, description)
