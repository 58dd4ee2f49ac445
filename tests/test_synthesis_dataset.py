"""The synthesized data set: the demo recipe's realism (GoPro layout, input PSNR band, no identical pairs) and
byte-identical files for the same arguments with any worker count."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from simplenet_jax.data.synthesis import camera_shake
from simplenet_jax.data.synthesis import dataset


def tree_files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_recipe_gives_realistic_pairs(tmp_path):
  """A reduced demo set with the default settings: GoPro layout, train and test photos from different packages,
  whole-photo test pairs, realistic input PSNR, some JPEG inputs."""
  meta = dataset.synthesize_dataset(tmp_path / "demo", train_pairs=30, test_pairs=6, seed=0, workers=1,
                                    progress=False)
  root = tmp_path / "demo"
  train_scenes = {p.name for p in (root / "train").iterdir()}
  test_scenes = {p.name for p in (root / "test").iterdir()}
  assert train_scenes == {"astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
                          "immunohistochemistry", "chelsea", "coffee", "camera", "coins", "brick", "grass", "gravel"}
  assert test_scenes == {"china", "flower", "grace_hopper"}
  sources = {split: {r["source_photo"].split(":")[0] for r in meta["pairs"] if r["split"] == split}
             for split in ("train", "test")}
  assert sources == {"train": {"skimage.data"}, "test": {"sklearn.datasets", "matplotlib"}}
  # Whole photos (china and flower are 640×427, grace_hopper 512×600) less 40 px on every side.
  whole = {"china": (346, 560, 3), "flower": (346, 560, 3), "grace_hopper": (520, 432, 3)}
  psnrs = []
  for record in meta["pairs"]:
    scene = root / record["split"] / record["scene"]
    blur = np.asarray(Image.open(scene / "blur" / record["frame"]))
    sharp = np.asarray(Image.open(scene / "sharp" / record["frame"]))
    expected = (256, 256, 3) if record["split"] == "train" else whole[record["scene"]]
    assert blur.shape == sharp.shape == expected and blur.dtype == np.uint8
    mse = np.mean((blur.astype(np.float64) - sharp) ** 2)
    psnr = 10 * np.log10(255**2 / mse) if mse else np.inf
    assert psnr == pytest.approx(record["input_psnr_db"], abs=1e-3)
    if record["trajectory_length_px"] > 1.0:  # a nearly sharp pair differs by its noise alone
      psnrs.append(psnr)
  assert len(list(root.rglob("*.png"))) == 72
  assert 22 <= np.mean(psnrs) <= 32
  assert 15 <= min(psnrs) and max(psnrs) <= 50
  train = [r for r in meta["pairs"] if r["split"] == "train"]
  lengths = [r["trajectory_length_px"] for r in train]
  # Every training pair blurred, from TRAIN_BLUR's 1 px to its 30 px, small and large both (the demo's gate
  # learns what is sharp from the targets), and every target keeps its input's noise.
  assert min(lengths) >= dataset.TRAIN_BLUR.min_length and sum(length < 5 for length in lengths) >= 5
  assert max(lengths) > 0.4 * dataset.TRAIN_BLUR.max_length
  assert meta["recipe"]["blur"]["target_noise"] and not meta["recipe"]["test_blur"]["target_noise"]
  assert all(r["jpeg_quality"] == 0 for r in train)  # no JPEG in training inputs
  test = [r for r in meta["pairs"] if r["split"] == "test"]
  assert all(camera_shake.BlurSettings().min_length <= r["trajectory_length_px"] for r in test)
  assert all("hue_deg" in r for r in meta["pairs"] if r["split"] == "train")
  assert not any("hue_deg" in r for r in meta["pairs"] if r["split"] == "test")  # test photos keep their colours
  assert meta["summary"]["train"]["count"] == 30
  assert meta["summary"]["test"]["mean"] == pytest.approx(np.mean([r["input_psnr_db"] for r in test]), abs=1e-2)


def test_the_test_split_does_not_depend_on_the_training_blur(tmp_path):
  """The test split keeps its recipe (BlurSettings()) whatever the training pairs' blur: its figures compare
  across training recipes."""
  kwargs = dict(train_pairs=4, test_pairs=3, size=(40, 48), test_size=(40, 48), seed=2, workers=1, progress=False)
  dataset.synthesize_dataset(tmp_path / "a", **kwargs)
  dataset.synthesize_dataset(tmp_path / "b", settings=camera_shake.BlurSettings(), **kwargs)
  first, second = tree_files(tmp_path / "a" / "test"), tree_files(tmp_path / "b" / "test")
  assert len(first) == 6 and first == second
  assert tree_files(tmp_path / "a" / "train") != tree_files(tmp_path / "b" / "train")


def test_same_command_gives_identical_bytes_with_any_worker_count(tmp_path):
  kwargs = dict(train_pairs=6, test_pairs=3, size=(40, 48), seed=5, progress=False)
  dataset.synthesize_dataset(tmp_path / "a", workers=1, **kwargs)
  dataset.synthesize_dataset(tmp_path / "b", workers=2, **kwargs)
  first, second = tree_files(tmp_path / "a"), tree_files(tmp_path / "b")
  assert len(first) == 2 * 9 + 1 and first == second
  dataset.synthesize_dataset(tmp_path / "c", workers=1, **{**kwargs, "seed": 6})
  other = tree_files(tmp_path / "c")
  assert other.keys() == first.keys() and other != first
