"""Readers of GoPro, RealBlur-J and GoPro-layout folders: good trees list the right pairs; each bad data set
is answered with its one-sentence error, also through the prepare command line, which
builds the TFDS data set (no traceback)."""

import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data import prepare
from simplenet_jax.data.images import DatasetError

REPO = pathlib.Path(__file__).resolve().parent.parent
HEIGHT, WIDTH = 40, 48


def save_image(path: pathlib.Path, height: int = HEIGHT, width: int = WIDTH, seed: int = 0, mode: str = "RGB") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  Image.fromarray(pixels).convert(mode).save(path)


def make_gopro(root: pathlib.Path, scenes=("GOPR0001_00_00", "GOPR0002_00_00"), frames=("000001", "000002"),
               splits=("train", "test")) -> pathlib.Path:
  """A tiny GOPRO_Large tree with blur, blur_gamma and sharp for every frame."""
  for split in splits:
    for s, scene in enumerate(scenes):
      for f, frame in enumerate(frames):
        for k, kind in enumerate(("blur", "blur_gamma", "sharp")):
          save_image(root / split / scene / kind / f"{frame}.png", seed=100 * s + 10 * f + k)
  return root


def make_realblur(root: pathlib.Path, split: str = "test", num_pairs: int = 3, pair=None) -> pathlib.Path:
  """RealBlur-J's layout and list file; `pair(i)` → (gt, blur) uint8 images, random noise by default."""
  lines = []
  for i in range(1, num_pairs + 1):
    scene = f"RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene{(200 if split == 'test' else 300) + i:03d}"
    if pair is None:
      save_image(root / scene / "gt" / f"gt_{i}.png", seed=i)
      save_image(root / scene / "blur" / f"blur_{i}.png", seed=50 + i)
    else:
      for kind, pixels in zip(("gt", "blur"), pair(i)):
        (root / scene / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / scene / kind / f"{kind}_{i}.png")
    lines.append(f"{scene}/gt/gt_{i}.png {scene}/blur/blur_{i}.png")
  (root / f"RealBlur_J_{split}_list.txt").write_text("\n".join(lines) + "\n")
  return root


def _checked_pairs(dataset: str, root: pathlib.Path, split: str) -> list[layouts.Pair]:
  """What a build does before writing anything: list the pairs, then check every image."""
  pairs = layouts.list_pairs(dataset, root, split)
  layouts.check_pairs(pairs)
  return pairs


def test_gopro_pairs_in_order_with_either_blur_kind(tmp_path):
  root = make_gopro(tmp_path / "GOPRO_Large")
  pairs = layouts.list_pairs("gopro", root, "train")
  assert [p.name for p in pairs] == ["GOPR0001_00_00/000001", "GOPR0001_00_00/000002", "GOPR0002_00_00/000001",
                                     "GOPR0002_00_00/000002"]
  assert pairs[1].blur == root / "train/GOPR0001_00_00/blur/000002.png"
  assert pairs[1].sharp == root / "train/GOPR0001_00_00/sharp/000002.png"
  gamma = layouts.list_pairs("gopro", root, "test", "blur_gamma")
  assert gamma[0].blur == root / "test/GOPR0001_00_00/blur_gamma/000001.png"
  assert layouts.check_pairs(pairs) == [(HEIGHT, WIDTH)] * 4


def test_folder_layout_ignores_hidden_and_non_image_files(tmp_path):
  root = make_gopro(tmp_path / "set", scenes=("a",), frames=("1",), splits=("train",))
  (root / "train" / "a" / "blur" / "notes.txt").write_text("x")
  (root / "train" / "a" / "blur" / ".DS_Store").write_text("x")
  (root / "train" / ".cache").mkdir()
  (root / "train" / "README").write_text("x")
  assert [p.name for p in _checked_pairs("folder", root, "train")] == ["a/1"]


def test_realblur_j_pairs_from_the_list(tmp_path):
  root = make_realblur(tmp_path / "RealBlur")
  pairs = _checked_pairs("realblur_j", root, "test")
  assert [p.name for p in pairs] == ["scene201/blur_1", "scene202/blur_2", "scene203/blur_3"]
  assert pairs[0].sharp == root / "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene201/gt/gt_1.png"
  assert pairs[0].blur == root / "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene201/blur/blur_1.png"


def test_gray_and_rgba_images_are_converted_with_one_warning(tmp_path, caplog):
  root = make_gopro(tmp_path / "set", scenes=("a",), splits=("train",))
  save_image(root / "train/a/blur/000001.png", mode="L")
  save_image(root / "train/a/sharp/000002.png", mode="RGBA")
  with caplog.at_level(logging.WARNING):
    pairs = _checked_pairs("folder", root, "train")
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert warnings == [f"2 of 4 images are not RGB (e.g. {root / 'train/a/blur/000001.png'} is L); they are "
                      "converted to RGB when read."]
  gray = images.read_rgb(pairs[0].blur)
  assert gray.shape == (HEIGHT, WIDTH, 3) and np.array_equal(gray[..., 0], gray[..., 2])
  rgba = images.read_rgb(pairs[1].sharp)
  expected = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
  np.testing.assert_array_equal(rgba, expected)  # alpha dropped, colours untouched


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
  path = tmp_path / "deep.png"
  Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16)).save(path)
  np.testing.assert_array_equal(images.read_rgb(path)[0, :, 0], [0, 100, 255])


# Each bad case: (dataset, how to break a good tree, split, expected message with {root}). An image smaller
# than the training crop is refused when training opens the build (test_pipeline): a build knows no crop size.
def _missing_root(root):
  return root / "nowhere"


def _no_test_split(root):
  for path in sorted((root / "test").rglob("*"), reverse=True):
    path.unlink() if path.is_file() else path.rmdir()
  (root / "test").rmdir()
  return root


def _no_sharp_folder(root):
  for path in (root / "train/GOPR0002_00_00/sharp").iterdir():
    path.unlink()
  (root / "train/GOPR0002_00_00/sharp").rmdir()
  return root


def _no_pairs(root):
  for path in (root / "train").rglob("*.png"):
    path.unlink()
  return root


def _blur_without_sharp(root):
  for scene in ("GOPR0001_00_00", "GOPR0002_00_00"):
    for frame in ("000003", "000004"):
      save_image(root / "train" / scene / "blur" / f"{frame}.png")
  return root


def _size_mismatch(root):
  save_image(root / "train/GOPR0002_00_00/sharp/000001.png", width=WIDTH - 1)
  return root


def _truncated_png(root):
  path = root / "train/GOPR0001_00_00/sharp/000002.png"
  path.write_bytes(path.read_bytes()[:-40])
  return root


def _not_an_image(root):
  (root / "train/GOPR0001_00_00/blur/000001.png").write_bytes(b"this is not a PNG file")
  return root


def _realblur_no_list(root):
  (root / "RealBlur_J_test_list.txt").unlink()
  return root


def _realblur_bad_line(root):
  path = root / "RealBlur_J_test_list.txt"
  lines = path.read_text().splitlines()
  path.write_text("\n".join([lines[0], "only_one_path.png", *lines[1:]]) + "\n")
  return root


def _realblur_missing_gt(root):
  (root / "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene202/gt/gt_2.png").unlink()
  return root


SCENE1 = "train/GOPR0001_00_00"
BAD_CASES = {
    "missing folder": ("gopro", _missing_root, "train",
                       "GoPro folder {root}/nowhere does not exist; pass the GOPRO_Large folder (the one holding "
                       "train/ and test/)."),
    "missing split": ("gopro", _no_test_split, "test",
                      "GoPro folder {root} has no test/ folder; the layout is "
                      "{root}/test/<scene>/{{blur,sharp}}/<frame>.png."),
    "missing sharp folder": ("folder", _no_sharp_folder, "train",
                             "Scene {root}/train/GOPR0002_00_00 has no sharp/ folder; every scene needs blur/ and "
                             "sharp/ (restore it, or remove the scene)."),
    "no pairs": ("gopro", _no_pairs, "train",
                 "No blurred/sharp pairs found in {root}/train; expected <scene>/blur/<frame>.png with an image of "
                 "the same name in <scene>/sharp/."),
    "blur without sharp": ("gopro", _blur_without_sharp, "train",
                           "4 blurred images in {root}/train have no sharp image of the same name, e.g. "
                           "GOPR0001_00_00/blur/000003.png, GOPR0001_00_00/blur/000004.png, "
                           "GOPR0002_00_00/blur/000003.png, …; restore them under <scene>/sharp/ or remove the "
                           "blurred ones."),
    "size mismatch": ("gopro", _size_mismatch, "train",
                      "Pair size mismatch: {root}/train/GOPR0002_00_00/blur/000001.png is 48×40 but "
                      "{root}/train/GOPR0002_00_00/sharp/000001.png is 47×40; a blurred image and its sharp image "
                      "must have the same size."),
    "truncated image": ("gopro", _truncated_png, "train",
                        "Cannot read image {root}/" + SCENE1 + "/sharp/000002.png ("),
    "not an image": ("folder", _not_an_image, "train",
                     "Cannot read image {root}/" + SCENE1 + "/blur/000001.png (cannot identify image file "),
    "realblur list missing": ("realblur_j", _realblur_no_list, "test",
                              "RealBlur-J list {root}/RealBlur_J_test_list.txt does not exist; pass the RealBlur "
                              "folder that holds RealBlur_J_train_list.txt and RealBlur_J_test_list.txt."),
    "realblur bad line": ("realblur_j", _realblur_bad_line, "test",
                          "Line 2 of {root}/RealBlur_J_test_list.txt should read 'gt_path blur_path', got "
                          "'only_one_path.png'."),
    "realblur missing gt": ("realblur_j", _realblur_missing_gt, "test",
                            "1 sharp (gt) images listed in {root}/RealBlur_J_test_list.txt are missing under {root}, "
                            "so their blurred images have no ground truth, e.g. "
                            "RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene202/gt/gt_2.png; restore them or "
                            "remove their lines."),
}


def _bad_tree(tmp_path, case):
  dataset, breaker, split, expected = BAD_CASES[case]
  if dataset == "realblur_j":
    good = make_realblur(make_realblur(tmp_path / "data", "train"))  # a build needs both splits
  else:
    good = make_gopro(tmp_path / "data")
  root = breaker(good)
  return dataset, root, split, expected.format(root=tmp_path / "data")


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_set_gives_its_one_sentence(tmp_path, case):
  dataset, root, split, expected = _bad_tree(tmp_path, case)
  with pytest.raises(DatasetError) as caught:
    _checked_pairs(dataset, root, split)
  message = str(caught.value)
  assert message.startswith(expected)
  assert "\n" not in message and message.endswith(".")


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_prepare_command_prints_the_sentence_without_traceback(tmp_path, capsys, case):
  dataset, root, split, expected = _bad_tree(tmp_path, case)
  code = prepare.main(["--dataset", dataset, "--source", str(root), "--out", str(tmp_path / "built")])
  captured = capsys.readouterr()
  assert code == 1 and "Traceback" not in captured.out + captured.err
  assert captured.err.startswith("error: " + expected) and captured.err.count("\n") == 1
  assert not list((tmp_path / "built").rglob("*.array_record*"))  # nothing written: the data set was bad


@pytest.mark.slow
@pytest.mark.parametrize("case", ["blur without sharp", "truncated image"])
def test_prepare_subprocess_exits_non_zero_without_traceback(tmp_path, case):
  dataset, root, split, expected = _bad_tree(tmp_path, case)
  done = subprocess.run([sys.executable, "-m", "simplenet_jax.data.prepare", "--dataset", dataset, "--source",
                         str(root), "--out", str(tmp_path / "built")],
                        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 1
  assert "Traceback" not in done.stderr
  assert done.stderr.splitlines()[-1].startswith("error: " + expected)


def test_unknown_blur_kind_and_data_set(tmp_path):
  root = make_gopro(tmp_path / "g", splits=("train",))
  with pytest.raises(DatasetError, match=r"^blur_kind 'gamma' is not one of blur, blur_gamma"):
    layouts.list_pairs("gopro", root, "train", "gamma")
  with pytest.raises(DatasetError, match=r"^Unknown data set 'gopro2'; use one of gopro, realblur_j, folder\.$"):
    layouts.list_pairs("gopro2", root, "train")
  with pytest.raises(DatasetError, match=r"^RealBlur-J has one kind of blurred image"):
    layouts.list_pairs("realblur_j", root, "train", "blur_gamma")


def test_incomplete_gopro_copy_warns(tmp_path, caplog):
  root = make_gopro(tmp_path / "GOPRO_Large", splits=("test",))
  with caplog.at_level(logging.WARNING):
    layouts.list_pairs("gopro", root, "test")
  assert any("has 4 pairs, the published one 1111" in r.getMessage() for r in caplog.records)
