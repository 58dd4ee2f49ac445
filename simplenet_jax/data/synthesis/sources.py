"""The sharp photos pairs are made from: the built-in ones, which ship inside installed wheels (no download),
or a folder of the user's own, split into train and test scenes.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image
from skimage import data as skimage_data

from simplenet_jax.data import images

# The built-in photos: real photos that ship inside wheels the project installs (no download).
# Train: scikit-image's photos. The two motorcycle views show one scene; the gray ones (cameraman, coins and
# three close-up textures) are used as RGB and get colour from the augmentations. Left out: `retina` (a fundus
# image, nearly flat at any crop), `cat` (the same photo as `chelsea`), `moon` (nearly flat), `cell` (a
# microscope field), `page` and `text` (too small to crop without upscaling), and the drawn images.
BUILTIN_TRAIN_PHOTOS = ("skimage.data:astronaut", "skimage.data:rocket", "skimage.data:motorcycle_left",
                        "skimage.data:motorcycle_right", "skimage.data:hubble_deep_field",
                        "skimage.data:immunohistochemistry", "skimage.data:chelsea", "skimage.data:coffee",
                        "skimage.data:camera", "skimage.data:coins", "skimage.data:brick", "skimage.data:grass",
                        "skimage.data:gravel")
# Test: the photos of two other packages (a building, a flower, a portrait), whole.
BUILTIN_TEST_PHOTOS = ("sklearn.datasets:china.jpg", "sklearn.datasets:flower.jpg",
                       "matplotlib:grace_hopper.jpg")
BUILTIN_SOURCE = "built-in"

# Whole-photo test pairs: the photo scaled so that its longer side is at most this (GoPro's frame width), less a
# border from which the shake draws the content that moves into view.
MAX_TEST_SIDE = 1280
TEST_BORDER = 40
# The smallest side of a pair, in either split.
MIN_SIDE = 16

# Share of a user's photos that become test scenes.
USER_TEST_FRACTION = 0.2
# Seeds the draw of those scenes as [seed, USER_SPLIT_STREAM]: the pairs of split k draw from [seed, k, pair]
# with k = 0 (train) or 1 (test), so this draw stays independent of them.
USER_SPLIT_STREAM = 2


@dataclasses.dataclass(frozen=True)
class SourcePhoto:
  """A photo that pairs are made from, and the scene they form."""

  scene: str  # folder name of the scene made from this photo
  ref: str  # "<package>:<name>" for a built-in photo (BUILTIN_*_PHOTOS), or a file path


@functools.lru_cache(maxsize=16)
def load_photo(ref: str) -> Image.Image:
  """The photo behind `ref` as an RGB PIL image; cached, since every pair of a scene reads it."""
  if ref in BUILTIN_TRAIN_PHOTOS + BUILTIN_TEST_PHOTOS:
    return Image.fromarray(_builtin_pixels(*ref.split(":", 1))).convert("RGB")  # gray ones too
  return Image.fromarray(images.read_rgb(ref, apply_exif_orientation=True))


def _builtin_pixels(package: str, name: str) -> np.ndarray:
  """A photo that ships inside an installed wheel, through that package's own API."""
  if package == "skimage.data":
    if name in ("motorcycle_left", "motorcycle_right"):
      left, right, _ = skimage_data.stereo_motorcycle()
      return left if name == "motorcycle_left" else right
    return getattr(skimage_data, name)()
  if package == "sklearn.datasets":
    from sklearn import datasets  # pylint: disable=g-import-not-at-top  (only the test photos need it)
    return datasets.load_sample_image(name)
  from matplotlib import cbook  # pylint: disable=g-import-not-at-top
  with cbook.get_sample_data(name) as file:
    return np.asarray(Image.open(file).convert("RGB"))


def builtin_photos() -> dict[str, list[SourcePhoto]]:
  """The built-in photos of each split, one scene per photo, named after it."""

  def scene(ref: str) -> str:
    return pathlib.PurePath(ref.split(":", 1)[1]).stem
  return {"train": [SourcePhoto(scene(r), r) for r in BUILTIN_TRAIN_PHOTOS],
          "test": [SourcePhoto(scene(r), r) for r in BUILTIN_TEST_PHOTOS]}


def test_photo(ref: str) -> Image.Image:
  """A test photo at the resolution its pairs keep: its longer side at most MAX_TEST_SIDE."""
  photo = load_photo(ref)
  shrink = MAX_TEST_SIDE / max(photo.size)
  if shrink >= 1:
    return photo
  return photo.resize((round(photo.width * shrink), round(photo.height * shrink)), Image.Resampling.LANCZOS)


def whole_photo_size(photo: Image.Image) -> tuple[int, int]:
  """Height and width of a whole-photo test pair: the photo less TEST_BORDER on every side, rounded to even."""
  return tuple(max(MIN_SIDE, side - 2 * TEST_BORDER) & ~1 for side in (photo.height, photo.width))


def user_photos(folder: pathlib.Path, height: int, width: int,
                seed: int) -> tuple[dict[str, list[SourcePhoto]], int]:
  """The user's photos split into train and test scenes, and how many were too small to use.

  A seeded draw puts about a fifth of the photos (at least one) in the test split.
  """
  if not folder.is_dir():
    raise images.DatasetError(f"Photo folder {folder} does not exist; pass --photos a folder of jpg/png photos.")
  files = sorted(p for p in folder.rglob("*") if images.is_image_file(p))
  usable, too_small, not_rgb = [], 0, []
  for path in files:
    info = images.inspect_image(path, verify=False)
    if info.height < height or info.width < width:
      too_small += 1
    else:
      usable.append(path)
      not_rgb += [info] if not info.is_rgb else []
  if not_rgb:
    logging.getLogger(__name__).warning(
        "%d of %d photos are not RGB (e.g. %s is %s); they are converted to RGB.", len(not_rgb), len(usable),
        not_rgb[0].path, not_rgb[0].mode)
  if len(usable) < 2:
    raise images.DatasetError(
        f"Photo folder {folder} has {len(usable)} usable photos ({len(files)} jpg/png files, {too_small} smaller "
        f"than {width}×{height}); add at least 2 photos of that size, one for train and one for test.")
  scenes = _scene_names([p.relative_to(folder) for p in usable])
  photos = [SourcePhoto(scene, str(path)) for scene, path in zip(scenes, usable)]
  num_test = max(1, round(USER_TEST_FRACTION * len(photos)))
  test_ids = set(np.random.default_rng([seed, USER_SPLIT_STREAM]).permutation(len(photos))[:num_test].tolist())
  split = {"train": [p for i, p in enumerate(photos) if i not in test_ids],
           "test": [p for i, p in enumerate(photos) if i in test_ids]}
  return split, too_small


def _scene_names(relative_paths: Sequence[pathlib.Path]) -> list[str]:
  """Folder-safe, unique scene names from photo paths."""
  names, seen = [], set()
  for path in relative_paths:
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", str(path.with_suffix(""))).strip("_") or "photo"
    name, k = base, 1
    while name in seen:
      k += 1
      name = f"{base}_{k}"
    seen.add(name)
    names.append(name)
  return names
