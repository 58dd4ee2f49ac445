"""TFDS builders of the deblurring data sets (SPEC §4 "Shards"), written once as ArrayRecord, read at random.

* ``gopro``: `manual_dir` = ``GOPRO_Large``; configs ``blur`` (the default) and ``blur_gamma`` (SPEC §4).
* ``realblur_j``: `manual_dir` = the RealBlur folder holding ``RealBlur_J_{train,test}_list.txt``.
* ``deblur_folder``: `manual_dir` = any folder in the GoPro layout, e.g. the synthesized demo set.

Build with the project's command or with TFDS's (both write the same files)::

    python -m simplenet_jax.data.prepare --dataset gopro --source /data/GOPRO_Large --out data/tfds
    tfds build gopro/blur --imports simplenet_jax.data.builders --manual_dir /data/GOPRO_Large --data_dir data/tfds

**Records.** A record is a window of one frame as raw uint8 (``blur``, ``sharp`` [h, w, 3], ``scene``,
``frame``, ``top``, ``left``), so that a training crop decodes only the pixels near it; the `storage` of a
config chooses the windows (`benchmarks/input_pipeline.py` measured them):

* ``tiles`` (default): a grid of `tile_size`² tiles in every split. A 256² crop anywhere in a frame reads the
  2×2 tiles under it; crops are drawn from the whole frame, as with full-frame decodes.
* ``subimages``: BasicSR's GoPro convention: the train split as overlapping `subimage_size`² sub-images
  `subimage_stride` apart, the test split as whole frames. A crop is drawn inside one sub-image.
* ``frames``: one record per frame (the most compact; a crop decodes the whole frame).

The frames of each split (name, size, first record) are in the data set's metadata, so a reader finds the
records of any window without reading others. Records are written in that order (`disable_shuffling`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data.images import DatasetError

STORAGES = ("tiles", "subimages", "frames")
TILE_SIZE = 256
# Restormer's (BasicSR's) GoPro patches: 512² with 256 overlap. The stride is the size less the 256² crop, so
# the crops inside consecutive sub-images abut: every crop position of a frame lies in about one sub-image.
SUBIMAGE_SIZE = 512
SUBIMAGE_STRIDE = 256
DATA_VERSION = "1.0.0"


@dataclasses.dataclass(eq=False)
class PairsConfig(tfds.core.BuilderConfig):
  """A builder config: the blurred images to take and how each frame is cut into records."""

  blur_kind: str = "blur"
  storage: str = "tiles"
  tile_size: int = TILE_SIZE
  subimage_size: int = SUBIMAGE_SIZE
  subimage_stride: int = SUBIMAGE_STRIDE


STORAGE_FIELDS = ("blur_kind", "storage", "tile_size", "subimage_size", "subimage_stride")


def config_name(blur_kind: str = "blur", storage: str = "tiles") -> str:
  """``blur``, ``blur_gamma``, ``blur_subimages``, ``blur_gamma_frames``, …: the blur kind, then a non-default
  storage."""
  if storage not in STORAGES:
    raise DatasetError(f"storage {storage!r} is not one of {', '.join(STORAGES)}.")
  return blur_kind if storage == "tiles" else f"{blur_kind}_{storage}"


def _configs(blur_kinds: Sequence[str]) -> list[PairsConfig]:
  return [PairsConfig(name=config_name(kind, storage), version=DATA_VERSION, blur_kind=kind, storage=storage,
                      description=f"{kind} inputs, stored as {storage}")
          for kind in blur_kinds for storage in STORAGES]


# --- Windows ---------------------------------------------------------------------------------------------------


def _starts(length: int, size: int, stride: int) -> list[int]:
  """Starts of `size`-long windows `stride` apart whose last one ends at `length` (BasicSR's extraction)."""
  size = min(size, length)
  starts = list(range(0, length - size + 1, stride))
  if starts[-1] != length - size:
    starts.append(length - size)
  return starts


def windows(height: int, width: int, config: PairsConfig, split: str) -> list[tuple[int, int, int, int]]:
  """(top, left, height, width) of the records of one frame, in record order."""
  if config.storage == "tiles":
    size = config.tile_size
    return [(top, left, min(size, height - top), min(size, width - left))
            for top in range(0, height, size) for left in range(0, width, size)]
  if config.storage == "subimages" and split == "train":
    rows = _starts(height, config.subimage_size, config.subimage_stride)
    cols = _starts(width, config.subimage_size, config.subimage_stride)
    size_h, size_w = min(config.subimage_size, height), min(config.subimage_size, width)
    return [(top, left, size_h, size_w) for top in rows for left in cols]
  return [(0, 0, height, width)]


def fingerprint(pairs: Sequence[layouts.Pair]) -> str:
  """Identifies a split's files by names and sizes, cheaply (no file is read)."""
  digest = hashlib.sha256()
  for pair in pairs:
    digest.update(f"{pair.name}\0{pair.blur.stat().st_size}\0{pair.sharp.stat().st_size}\n".encode())
  return digest.hexdigest()


def list_splits(dataset: str, root, blur_kind: str = "blur") -> dict[str, list[layouts.Pair]]:
  """The pairs of each split a build holds, listed without opening an image: GoPro and RealBlur-J need both
  splits; a folder has those present (a folder of pairs to evaluate may have no train/)."""
  splits = layouts.SPLITS
  if dataset == "folder":
    splits = [split for split in layouts.SPLITS if layouts.has_split(dataset, root, split)] or layouts.SPLITS
  return {split: layouts.list_pairs(dataset, root, split, blur_kind) for split in splits}


# --- Builders --------------------------------------------------------------------------------------------------


class _PairsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Blurred/sharp pairs of one data set in its published layout (`manual_dir`), as raw uint8 windows."""

  VERSION = tfds.core.Version(DATA_VERSION)
  RELEASE_NOTES = {DATA_VERSION: "Raw uint8 windows (tiles, sub-images or frames) with a frame table in metadata."}
  DATASET = ""  # the `layouts` name of the layout in manual_dir
  HOMEPAGE = ""
  CITATION = ""

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)  # random access, for grain

  def _info(self) -> tfds.core.DatasetInfo:
    image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{self.DATASET} blurred/sharp pairs as raw uint8 windows (simplenet_jax.data.builders).",
        features=tfds.features.FeaturesDict({
            "blur": image, "sharp": image, "scene": tfds.features.Text(), "frame": tfds.features.Text(),
            "top": tfds.features.Scalar(np.int32), "left": tfds.features.Scalar(np.int32)}),
        homepage=self.HOMEPAGE or None, citation=self.CITATION or None, disable_shuffling=True,
        metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = dl_manager.manual_dir
    config = self.builder_config
    generators, tables = {}, {}
    for split, pairs in list_splits(self.DATASET, root, config.blur_kind).items():
      # Every pair is checked (one sentence naming a bad file) before anything is written.
      sizes = layouts.check_pairs(pairs)
      frames, first = [], 0
      for pair, (height, width) in zip(pairs, sizes):
        frames.append([pair.scene, pair.frame, height, width, first])
        first += len(windows(height, width, config, split))
      tables[split] = {"frames": frames, "num_records": first, "fingerprint": fingerprint(pairs)}
      generators[split] = self._generate_examples(pairs, sizes, split)
    storage = {field: getattr(config, field) for field in STORAGE_FIELDS}
    self.info.metadata.update({"dataset": self.DATASET, "source": str(root), "storage": storage, "splits": tables})
    return generators

  def _generate_examples(self, pairs: Sequence[layouts.Pair], sizes: Sequence[tuple[int, int]],
                         split: str) -> Iterator[tuple[str, dict]]:
    for pair, (height, width) in zip(pairs, sizes):
      blur, sharp = images.read_rgb(pair.blur), images.read_rgb(pair.sharp)
      for top, left, h, w in windows(height, width, self.builder_config, split):
        window = (slice(top, top + h), slice(left, left + w))
        yield f"{pair.name}/{top:05d}_{left:05d}", {
            "blur": np.ascontiguousarray(blur[window]), "sharp": np.ascontiguousarray(sharp[window]),
            "scene": pair.scene, "frame": pair.frame, "top": top, "left": left}


class Gopro(_PairsBuilder):
  """GoPro (Nah et al. 2017): 2,103 train and 1,111 test pairs of 1280×720."""

  BUILDER_CONFIGS = _configs(layouts.BLUR_KINDS)
  DATASET = "gopro"
  HOMEPAGE = "https://seungjunnah.github.io/Datasets/gopro"
  CITATION = "Nah, Kim, Lee. Deep Multi-scale Convolutional Neural Network for Dynamic Scene Deblurring. CVPR 2017."
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Unzip GOPRO_Large.zip and pass the GOPRO_Large folder (holding train/, test/)."


class RealblurJ(_PairsBuilder):
  """RealBlur-J (Rim et al. 2020): 3,758 train and 980 test pairs listed in RealBlur_J_{train,test}_list.txt."""

  BUILDER_CONFIGS = _configs(("blur",))
  DATASET = "realblur_j"
  HOMEPAGE = "http://cg.postech.ac.kr/research/realblur/"
  CITATION = ("Rim, Lee, Won, Cho. Real-World Blur Dataset for Learning and Benchmarking Deblurring Algorithms. "
              "ECCV 2020.")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Unzip RealBlur.tar.gz and pass the folder holding RealBlur_J_*_list.txt."


class DeblurFolder(_PairsBuilder):
  """Any folder in the GoPro layout, `<root>/{train,test}/<scene>/{blur,blur_gamma,sharp}/<frame>.png`."""

  BUILDER_CONFIGS = _configs(layouts.BLUR_KINDS)
  DATASET = "folder"
  MANUAL_DOWNLOAD_INSTRUCTIONS = ("Pass a folder in the GoPro layout, such as one written by "
                                  "`python -m simplenet_jax.data.synthesize`.")


BUILDERS = {"gopro": Gopro, "realblur_j": RealblurJ, "folder": DeblurFolder}
