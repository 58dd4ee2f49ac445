"""The TFDS builders: GoPro (both blur kinds), RealBlur-J and a folder build through `catalogue.build` and `tfds
build`'s own code; what `tfds.data_source` and grain read back equals the source PNGs, pixel for pixel; tiles and
sub-images cover every pixel of a frame; a finished build is reused, refused when its files changed, rebuilt
with --overwrite."""

import pathlib

import numpy as np
import pytest
import simple_parsing
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.scripts.cli import build as tfds_build

from configs import default
from simplenet_jax.data import builders
from simplenet_jax.data import catalogue
from simplenet_jax.data import pipeline
from simplenet_jax.data import prepare
from test_layouts import make_gopro
from test_layouts import make_realblur
from test_pipeline import build_with_sizes

SMALL = {"tile_size": 16, "subimage_size": 24, "subimage_stride": 12}  # the test frames are 40×48


def _data(dataset: str, root: pathlib.Path, **overrides):
  data = default.get_config().data
  data.dataset, data.root = dataset, str(root)
  for key, value in overrides.items():
    data[key] = value
  return data


def _read_back(data, split: str) -> dict[str, dict[str, np.ndarray]]:
  reader = catalogue.open_split(data, split)
  return {pair["name"]: pair for pair in pipeline.eval_iter(reader, data)}


def _assert_equals_files(read: dict, expected: dict[str, tuple[pathlib.Path, pathlib.Path]]) -> None:
  assert sorted(read) == sorted(expected)
  for name, (blur_path, sharp_path) in expected.items():
    np.testing.assert_array_equal(read[name]["blur"], np.asarray(Image.open(blur_path)))
    np.testing.assert_array_equal(read[name]["sharp"], np.asarray(Image.open(sharp_path)))


@pytest.mark.parametrize("blur_kind", ["blur", "blur_gamma"])
def test_gopro_builds_and_reads_back_the_source_pixels(tmp_path, blur_kind):
  root = make_gopro(tmp_path / "GOPRO_Large")
  build_with_sizes(root, "tiles", SMALL, dataset="gopro", blur_kind=blur_kind)  # 3×3 tiles a frame
  data = _data("gopro", root, blur_kind=blur_kind)
  for split in ("train", "test"):
    expected = {f"{scene.name}/{png.stem}": (png, scene / "sharp" / png.name)
                for scene in sorted((root / split).iterdir()) for png in sorted((scene / blur_kind).iterdir())}
    _assert_equals_files(_read_back(data, split), expected)
  source = tfds.data_source(f"gopro/{blur_kind}", split="train", data_dir=str(root) + "_tfds", download=False)
  assert len(source) == 4 * 3 * 3 and source[0]["blur"].shape == (16, 16, 3)  # 4 frames of 3×3 tiles


def test_realblur_j_builds_from_its_lists(tmp_path):
  root = make_realblur(make_realblur(tmp_path / "RealBlur", "train"), "test")
  catalogue.build("realblur_j", root)
  for split in ("train", "test"):
    expected = {}
    for line in (root / f"RealBlur_J_{split}_list.txt").read_text().split("\n"):
      if line:
        sharp, blur = (root / field for field in line.split())
        expected[f"{sharp.parent.parent.name}/{blur.stem}"] = (blur, sharp)
    _assert_equals_files(_read_back(_data("realblur_j", root), split), expected)


@pytest.mark.parametrize("storage", builders.STORAGES)
def test_folder_builds_through_tfds_build_and_reads_back(tmp_path, storage):
  """`tfds build deblur_folder/<config> --imports simplenet_jax.data.builders` (its own code, run in-process:
  tfds 4.9.10's `tfds` launcher also imports apache-beam, which this project does not install)."""
  root = make_gopro(tmp_path / "pairs", splits=("test",))
  name = catalogue.tfds_name("folder", "blur", storage)
  args = simple_parsing.parse(tfds_build.Args, args=[name, "--imports", "simplenet_jax.data.builders",
                                                     "--manual_dir", str(root), "--data_dir", str(tmp_path / "tfds")])
  args.execute()
  data = _data("folder", root, storage=storage, tfds_dir=str(tmp_path / "tfds"))
  expected = {f"{scene.name}/{png.stem}": (png, scene / "sharp" / png.name)
              for scene in sorted((root / "test").iterdir()) for png in sorted((scene / "blur").iterdir())}
  _assert_equals_files(_read_back(data, "test"), expected)
  assert list(tfds.builder(name, data_dir=str(tmp_path / "tfds")).info.splits) == ["test"]  # no train/ folder


@pytest.mark.parametrize("height,width", [(720, 1280), (37, 53), (16, 16), (23, 16)])
def test_tiles_cover_every_pixel_once_and_subimages_every_pixel_and_crop(height, width):
  tiles = builders.PairsConfig(name="t", storage="tiles", tile_size=16)
  count = np.zeros((height, width), int)
  for top, left, h, w in builders.windows(height, width, tiles, "train"):
    count[top:top + h, left:left + w] += 1
  assert np.all(count == 1)

  crop = 8
  sub = builders.PairsConfig(name="s", storage="subimages", subimage_size=16, subimage_stride=16 - crop)
  if (height, width) == (720, 1280):  # the GoPro convention on a GoPro frame: 2 rows of 4 sub-images
    sub, crop = builders.PairsConfig(name="s", storage="subimages"), 256
  subimages = builders.windows(height, width, sub, "train")
  covered, crop_positions = np.zeros((height, width), bool), np.zeros((height - crop + 1, width - crop + 1), bool)
  for top, left, h, w in subimages:
    assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
    covered[top:top + h, left:left + w] = True
    crop_positions[top:top + h - crop + 1, left:left + w - crop + 1] = True
  assert covered.all()  # every pixel of the frame is in a sub-image
  assert crop_positions.all()  # and every crop of the frame lies inside one
  if (height, width) == (720, 1280):
    assert len(subimages) == 8 and {(h, w) for *_, h, w in subimages} == {(512, 512)}
  assert builders.windows(height, width, sub, "test") == [(0, 0, height, width)]  # test frames stay whole


def test_a_finished_build_is_reused_refused_when_changed_and_rebuilt_with_overwrite(tmp_path, capsys):
  root = make_gopro(tmp_path / "pairs")
  args = ["--dataset", "folder", "--source", str(root), "--out", str(tmp_path / "tfds")]
  assert prepare.main(args) == 0
  assert "train: 4 pairs in 4 records" in capsys.readouterr().out
  built = next((tmp_path / "tfds").rglob("*train.array_record*")).stat().st_mtime_ns
  assert prepare.main(args) == 0
  assert "already holds this build; nothing to do." in capsys.readouterr().out
  assert next((tmp_path / "tfds").rglob("*train.array_record*")).stat().st_mtime_ns == built

  changed = root / "train" / "GOPR0001_00_00" / "blur" / "000001.png"
  Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(changed)
  assert prepare.main(args) == 1
  assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'tfds'} already holds deblur_folder/blur built from "
                                            "other files than those in ")
  assert prepare.main(args + ["--overwrite"]) == 0
  capsys.readouterr()
  pair = _read_back(_data("folder", root, tfds_dir=str(tmp_path / "tfds")), "train")["GOPR0001_00_00/000001"]
  assert not pair["blur"].any()
