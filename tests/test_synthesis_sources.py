"""Photo sources: a user's photos, the small ones skipped, split into disjoint train and test scenes; too few
usable photos is one sentence."""

import numpy as np
import pytest
from PIL import Image

from simplenet_jax.data.images import DatasetError
from simplenet_jax.data.synthesis import dataset
from test_synthesis_pairs import textured_photo


def test_user_photos_skip_small_ones_and_split_disjointly(tmp_path, caplog):
  photos = tmp_path / "photos"
  (photos / "trip").mkdir(parents=True)
  for i in range(5):
    textured_photo(i).save(photos / "trip" / f"img {i}.jpg", quality=95)
  textured_photo(9).convert("L").save(photos / "gray.png")  # gray photos are used as RGB
  textured_photo(10, 30, 30).save(photos / "tiny.png")
  meta = dataset.synthesize_dataset(tmp_path / "out", photos_dir=photos, train_pairs=5, test_pairs=2,
                                    size=(40, 48), test_size=(40, 48), workers=1, progress=False)
  assert [r.getMessage() for r in caplog.records] == [
      f"1 of 6 photos are not RGB (e.g. {photos / 'gray.png'} is L); they are converted to RGB."]
  assert meta["recipe"]["photos_too_small"] == 1
  train = {p["scene"] for p in meta["recipe"]["photos"]["train"]}
  test = {p["scene"] for p in meta["recipe"]["photos"]["test"]}
  assert len(train) == 5 and len(test) == 1 and not train & test
  assert train | test == {"trip_img_0", "trip_img_1", "trip_img_2", "trip_img_3", "trip_img_4", "gray"}
  sharp = np.asarray(Image.open(next((tmp_path / "out" / "test").rglob("sharp/*.png"))))
  assert sharp.shape == (40, 48, 3)


def test_too_few_usable_photos_is_one_sentence(tmp_path):
  (tmp_path / "photos").mkdir()
  textured_photo(0, 30, 30).save(tmp_path / "photos" / "small.png")
  with pytest.raises(DatasetError, match=r"has 0 usable photos \(1 jpg/png files, 1 smaller than 48×40\)"):
    dataset.synthesize_dataset(tmp_path / "out", photos_dir=tmp_path / "photos", size=(40, 48), workers=1)
  assert not (tmp_path / "out").exists()
