"""Where the blurred/sharp pairs of each data set live (SPEC §4), checked before any work starts.

* ``gopro``: ``GOPRO_Large/{train,test}/<scene>/{blur,blur_gamma,sharp}/<frame>.png`` (Nah et al. 2017).
* ``realblur_j``: ``RealBlur_J_{train,test}_list.txt`` in the data set root, one ``gt_path blur_path`` per line,
  both relative to the root (Rim et al. 2020).
* ``folder``: any folder in the GoPro layout, such as the one ``simplenet_jax.data.synthesize`` writes.

A bad data set is answered with one `DatasetError` sentence naming the problem and the path, so that a user
mistake never surfaces as a stack trace from a worker process or from inside XLA.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Sequence

import tqdm

from simplenet_jax.data import images
from simplenet_jax.data.images import DatasetError

DATASETS = ("gopro", "realblur_j", "folder")
SPLITS = ("train", "test")
BLUR_KINDS = ("blur", "blur_gamma")

# Published pair counts, to warn when a copy is incomplete.
GOPRO_PAIRS = {"train": 2103, "test": 1111}
REALBLUR_J_PAIRS = {"train": 3758, "test": 980}

# How many offending files an error message lists.
EXAMPLES_SHOWN = 3

_log = logging.getLogger(__name__)

_HINTS = {
    "gopro": "pass the GOPRO_Large folder (the one holding train/ and test/)",
    "folder": ("pass a folder holding train/ and test/ in the GoPro layout, such as one made by "
               "`python -m simplenet_jax.data.synthesize`"),
    "realblur_j": "pass the RealBlur folder that holds RealBlur_J_train_list.txt and RealBlur_J_test_list.txt",
}
_NAMES = {"gopro": "GoPro folder", "folder": "Data set folder", "realblur_j": "RealBlur-J folder"}


@dataclasses.dataclass(frozen=True)
class Pair:
  """One blurred image and its sharp ground truth."""

  blur: pathlib.Path
  sharp: pathlib.Path
  scene: str
  frame: str  # file stem of the blurred image

  @property
  def name(self) -> str:
    """`scene/frame`, unique within a split; the row name in evaluation tables."""
    return f"{self.scene}/{self.frame}"


def _examples(items: Sequence[object]) -> str:
  shown = ", ".join(str(item) for item in items[:EXAMPLES_SHOWN])
  return shown + (", …" if len(items) > EXAMPLES_SHOWN else "")


def _check_root(dataset: str, root: pathlib.Path) -> None:
  if not root.is_dir():
    state = "is not a folder" if root.exists() else "does not exist"
    raise DatasetError(f"{_NAMES[dataset]} {root} {state}; {_HINTS[dataset]}.")


def _visible(paths) -> list[pathlib.Path]:
  return sorted(p for p in paths if not p.name.startswith("."))


def gopro_layout_pairs(root: str | pathlib.Path, split: str, blur_kind: str = "blur", *,
                       dataset: str = "folder") -> list[Pair]:
  """Pairs of `root/split/<scene>/{blur_kind,sharp}/`, matched by file name (stem), sorted by scene and frame."""
  root = pathlib.Path(root)
  if blur_kind not in BLUR_KINDS:
    raise DatasetError(f"blur_kind {blur_kind!r} is not one of {', '.join(BLUR_KINDS)}; GoPro has those two inputs.")
  _check_root(dataset, root)
  split_dir = root / split
  if not split_dir.is_dir():
    raise DatasetError(f"{_NAMES[dataset]} {root} has no {split}/ folder; the layout is "
                       f"{root}/{split}/<scene>/{{{blur_kind},sharp}}/<frame>.png.")
  pairs, unpaired = [], []
  for scene_dir in _visible(p for p in split_dir.iterdir() if p.is_dir()):
    blur_dir, sharp_dir = scene_dir / blur_kind, scene_dir / "sharp"
    for needed in (blur_dir, sharp_dir):
      if not needed.is_dir():
        fix = ("use blur kind 'blur', or restore it" if needed.name == "blur_gamma" else
               "restore it, or remove the scene")
        raise DatasetError(f"Scene {scene_dir} has no {needed.name}/ folder; every scene needs {blur_kind}/ and "
                           f"sharp/ ({fix}).")
    sharp_by_stem = {p.stem: p for p in _visible(sharp_dir.iterdir()) if images.is_image_file(p)}
    for blur in _visible(blur_dir.iterdir()):
      if not images.is_image_file(blur):
        continue
      sharp = sharp_by_stem.get(blur.stem)
      if sharp is None:
        unpaired.append(blur.relative_to(split_dir))
      else:
        pairs.append(Pair(blur, sharp, scene_dir.name, blur.stem))
  if unpaired:
    raise DatasetError(f"{len(unpaired)} blurred images in {split_dir} have no sharp image of the same name, e.g. "
                       f"{_examples(unpaired)}; restore them under <scene>/sharp/ or remove the blurred ones.")
  if not pairs:
    raise DatasetError(f"No blurred/sharp pairs found in {split_dir}; expected <scene>/{blur_kind}/<frame>.png "
                       "with an image of the same name in <scene>/sharp/.")
  return pairs


def gopro_pairs(root: str | pathlib.Path, split: str, blur_kind: str = "blur") -> list[Pair]:
  """GoPro (Nah et al. 2017); warns when the split does not have the published number of pairs."""
  pairs = gopro_layout_pairs(root, split, blur_kind, dataset="gopro")
  if split in GOPRO_PAIRS and len(pairs) != GOPRO_PAIRS[split]:
    _log.warning("GoPro %s split in %s has %d pairs, the published one %d; scores will not be comparable "
                    "with the paper's.", split, root, len(pairs), GOPRO_PAIRS[split])
  return pairs


def realblur_j_pairs(root: str | pathlib.Path, split: str) -> list[Pair]:
  """RealBlur-J (Rim et al. 2020) from its list file; scene is the folder above gt/ (e.g. scene230)."""
  root = pathlib.Path(root)
  _check_root("realblur_j", root)
  list_path = root / f"RealBlur_J_{split}_list.txt"
  if not list_path.is_file():
    raise DatasetError(f"RealBlur-J list {list_path} does not exist; {_HINTS['realblur_j']}.")
  pairs, missing_blur, missing_sharp = [], [], []
  for number, line in enumerate(list_path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split()
    if len(fields) < 2:
      raise DatasetError(f"Line {number} of {list_path} should read 'gt_path blur_path', got {line.strip()!r}.")
    sharp, blur = root / fields[0], root / fields[1]
    if not blur.is_file():
      missing_blur.append(fields[1])
    elif not sharp.is_file():
      missing_sharp.append(fields[0])
    else:
      pairs.append(Pair(blur, sharp, sharp.parent.parent.name, blur.stem))
  if missing_blur:
    raise DatasetError(f"{len(missing_blur)} blurred images listed in {list_path} are missing under {root}, e.g. "
                       f"{_examples(missing_blur)}; restore them or remove their lines.")
  if missing_sharp:
    raise DatasetError(f"{len(missing_sharp)} sharp (gt) images listed in {list_path} are missing under {root}, so "
                       f"their blurred images have no ground truth, e.g. {_examples(missing_sharp)}; restore them "
                       "or remove their lines.")
  if not pairs:
    raise DatasetError(f"No blurred/sharp pairs listed in {list_path}; each line should read 'gt_path blur_path'.")
  if split in REALBLUR_J_PAIRS and len(pairs) != REALBLUR_J_PAIRS[split]:
    _log.warning("RealBlur-J %s list %s has %d pairs, the published one %d; scores will not be comparable "
                    "with published ones.", split, list_path, len(pairs), REALBLUR_J_PAIRS[split])
  return pairs


def has_split(dataset: str, root: str | pathlib.Path, split: str) -> bool:
  """Whether the data set in `root` has the split (its folder, or for RealBlur-J its list file)."""
  root = pathlib.Path(root)
  return (root / f"RealBlur_J_{split}_list.txt").is_file() if dataset == "realblur_j" else (root / split).is_dir()


def list_pairs(dataset: str, root: str | pathlib.Path, split: str, blur_kind: str = "blur") -> list[Pair]:
  """The pairs of a split in a data set's published layout, without opening any image."""
  if dataset == "gopro":
    return gopro_pairs(root, split, blur_kind)
  if dataset == "folder":
    return gopro_layout_pairs(root, split, blur_kind)
  if dataset == "realblur_j":
    if blur_kind != "blur":
      raise DatasetError(f"RealBlur-J has one kind of blurred image; use blur_kind 'blur', not {blur_kind!r}.")
    return realblur_j_pairs(root, split)
  raise DatasetError(f"Unknown data set {dataset!r}; use one of {', '.join(DATASETS)}.")


def check_pairs(pairs: Sequence[Pair]) -> list[tuple[int, int]]:
  """Checks that every image of a split is whole (`images.inspect_image`) before anything is built from it.

  Raises a `DatasetError` for the first unreadable image or size mismatch within a pair; warns once if some
  images are not RGB (they are converted on read). Returns the (height, width) of each pair. Whether the images
  are large enough for the training crop is checked when training opens the build (`pipeline`), since a build
  knows no crop size.
  """
  sizes: list[tuple[int, int]] = []
  not_rgb: list[images.ImageInfo] = []
  for pair in tqdm.tqdm(pairs, desc="checking images", unit="pair", disable=None):  # None: on a terminal only
    blur = images.inspect_image(pair.blur)
    sharp = images.inspect_image(pair.sharp)
    if (blur.width, blur.height) != (sharp.width, sharp.height):
      raise DatasetError(f"Pair size mismatch: {pair.blur} is {blur.size_text} but {pair.sharp} is "
                         f"{sharp.size_text}; a blurred image and its sharp image must have the same size.")
    not_rgb += [info for info in (blur, sharp) if not info.is_rgb]
    sizes.append((blur.height, blur.width))
  if not_rgb:
    _log.warning("%d of %d images are not RGB (e.g. %s is %s); they are converted to RGB when read.",
                    len(not_rgb), 2 * len(pairs), not_rgb[0].path, not_rgb[0].mode)
  return sizes
