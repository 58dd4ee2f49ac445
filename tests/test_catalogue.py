"""The catalogue of built sets: where a build lives, and a split opened once: with `build_if_needed` a folder is
built on first use, reused after, listed and fingerprinted once per opening, and refused when it has changed."""

import numpy as np
import pytest
from PIL import Image

from configs import default
from simplenet_jax.data import builders
from simplenet_jax.data import catalogue
from simplenet_jax.data.images import DatasetError
from test_layouts import make_gopro


def _data(root, **overrides):
  data = default.get_config().data
  data.dataset, data.root = "folder", str(root)
  for key, value in overrides.items():
    data[key] = value
  return data


def test_a_build_lives_beside_its_source_unless_the_config_says():
  assert catalogue.default_tfds_dir("/data/pairs/") == "/data/pairs_tfds"
  assert catalogue.tfds_dir(_data("/data/pairs")) == "/data/pairs_tfds"
  assert catalogue.tfds_dir(_data("/data/pairs", tfds_dir="gs://bucket/tfds")) == "gs://bucket/tfds"
  assert catalogue.tfds_name("gopro", "blur_gamma", "subimages") == "gopro/blur_gamma_subimages"
  assert catalogue.prepare_command(_data("/data/pairs", storage="frames")) == (
      "python -m simplenet_jax.data.prepare --dataset folder --source /data/pairs --out /data/pairs_tfds "
      "--blur-kind blur --storage frames")


def test_build_if_needed_builds_once_and_fingerprints_once_per_opening(tmp_path, monkeypatch):
  root = make_gopro(tmp_path / "pairs", splits=("test",))  # what `eval.py --data` is given
  data = _data(root)
  with pytest.raises(DatasetError, match=r"^No data set deblur_folder/blur is built in .*/pairs_tfds; build it"):
    catalogue.open_split(data, "test")
  fingerprinted = []
  fingerprint = builders.fingerprint
  monkeypatch.setattr(builders, "fingerprint", lambda pairs: fingerprinted.append(len(pairs)) or fingerprint(pairs))

  reader = catalogue.open_split(data, "test", build_if_needed=True)  # builds it
  assert len(reader) == 4 and reader.name(0) == "GOPR0001_00_00/000001"
  blur, sharp = reader.read(0, 0, 0, 40, 48)
  np.testing.assert_array_equal(blur, np.asarray(Image.open(root / "test/GOPR0001_00_00/blur/000001.png")))
  np.testing.assert_array_equal(sharp, np.asarray(Image.open(root / "test/GOPR0001_00_00/sharp/000001.png")))
  built = next((tmp_path / "pairs_tfds").rglob("*test.array_record*")).stat().st_mtime_ns
  assert fingerprinted == [4]  # written into the build's metadata

  fingerprinted.clear()
  assert len(catalogue.open_split(data, "test", build_if_needed=True)) == 4  # reuses it
  assert next((tmp_path / "pairs_tfds").rglob("*test.array_record*")).stat().st_mtime_ns == built
  assert fingerprinted == [4]  # checked against the folder once, not once to build and once to open
  fingerprinted.clear()
  assert len(catalogue.open_split(data, "test")) == 4
  assert fingerprinted == [4]


def test_a_folder_changed_since_its_build_is_refused(tmp_path):
  root = make_gopro(tmp_path / "pairs", splits=("test",))
  data = _data(root)
  catalogue.open_split(data, "test", build_if_needed=True)
  Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(root / "test/GOPR0001_00_00/blur/000001.png")
  with pytest.raises(DatasetError, match=r"already holds deblur_folder/blur built from other files than those in "):
    catalogue.open_split(data, "test", build_if_needed=True)
  with pytest.raises(DatasetError, match=r"was built from other files than those in .*/test; build it again with "
                                         r"`python -m simplenet_jax.data.prepare .* --overwrite`\.$"):
    catalogue.open_split(data, "test")
  with pytest.raises(DatasetError, match=r"^The data set deblur_folder/blur in .* has no train split \(it holds "
                                         r"test\)\.$"):
    catalogue.open_split(data, "train")
