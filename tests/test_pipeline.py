"""The grain pipeline on TFDS builds: aligned crops and flips (assembled from tiles, or cut from sub-images),
batch shapes, the per-process split, determinism, restoring the iterator state (also with worker processes),
tiles == whole frames, and full-resolution evaluation in order.

Every pair has sharp = blur + a constant that identifies the pair, so each crop tells which pair it came from
and whether blur and sharp were cut and flipped alike (random blur content makes any misalignment visible).
"""

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import default
from simplenet_jax.data import builders
from simplenet_jax.data import catalogue
from simplenet_jax.data import pipeline
from simplenet_jax.data.images import DatasetError
from test_layouts import make_gopro
from test_layouts import save_image

NUM_PAIRS = 8
HEIGHT, WIDTH = 30, 41
CROP = 12
STEP = 5  # pair k has sharp = blur + STEP·(k + 1)
# Small tiles and sub-images, so that a 12² crop spans up to 3×3 tiles and a 30×41 frame has 2×3 sub-images.
SIZES = {"tile_size": 5, "subimage_size": 20, "subimage_stride": 8}


def _write_pair(root: pathlib.Path, split: str, scene: str, frame: str, blur: np.ndarray, offset: int) -> None:
  for kind, pixels in (("blur", blur), ("sharp", blur + offset)):
    path = root / split / scene / kind / f"{frame}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture(name="dataset")
def _dataset(tmp_path) -> tuple[pathlib.Path, list[np.ndarray]]:
  """A GoPro-layout folder: 8 train pairs (pair k is scene s{k // 4}, frame k % 4) and 3 test pairs of
  different sizes. Returns the root and the blurred images of the train pairs in listing order."""
  rng = np.random.default_rng(0)
  root, blurs = tmp_path / "set", []
  for k in range(NUM_PAIRS):
    blur = rng.integers(0, 100, (HEIGHT, WIDTH, 3))
    _write_pair(root, "train", f"s{k // 4}", f"{k % 4:06d}", blur, STEP * (k + 1))
    blurs.append(blur.astype(np.uint8))
  for k, (height, width) in enumerate(((30, 41), (17, 23), (40, 36))):
    _write_pair(root, "test", "t", f"{k:06d}", rng.integers(0, 100, (height, width, 3)), 1)
  for storage in ("tiles", "subimages", "frames"):
    build_with_sizes(root, storage, SIZES)
  return root, blurs


def build_with_sizes(root: pathlib.Path, storage: str, sizes: dict[str, int], *, dataset: str = "folder",
                     blur_kind: str = "blur") -> None:
  """`catalogue.build` with other tile / sub-image sizes than the builder config's (readers take them from the
  build's metadata)."""
  config = builders.BUILDERS[dataset].builder_configs[builders.config_name(blur_kind, storage)]
  with pytest.MonkeyPatch.context() as patch:
    for field, value in sizes.items():
      patch.setattr(config, field, value)
    catalogue.build(dataset, root, blur_kind=blur_kind, storage=storage)


def _config(root: pathlib.Path, **overrides):
  data = default.get_config().data
  data.dataset, data.root, data.crop_size, data.num_workers = "folder", str(root), CROP, 0
  for key, value in overrides.items():
    data[key] = value
  return data


def _to_uint8(crop: np.ndarray) -> np.ndarray:
  assert crop.dtype == np.uint8  # the float conversion happens on the device, in the jitted step
  return crop


def _batches(data, batch_size: int, count: int, **process) -> list[dict]:
  iterator = iter(pipeline.train_dataset(data, batch_size, **process))
  try:
    return [{k: np.array(v) for k, v in next(iterator).items()} for _ in range(count)]
  finally:
    iterator.close()


def _pair_ids(batch: dict) -> list[int]:
  """The pair each crop came from, after checking that sharp − blur is its constant everywhere in the crop."""
  ids = []
  for blur, sharp in zip(batch["blur"], batch["sharp"]):
    offset = sharp.astype(int) - blur
    assert np.all(offset == offset.flat[0]), "blur and sharp crops are not the same window"
    ids.append(int(offset.flat[0]) // STEP - 1)
  return ids


def _find_window(crop: np.ndarray, source: np.ndarray) -> set[tuple[bool, bool]]:
  """The flips (horizontal, vertical) under which `crop` is a window of `source`."""
  found = set()
  for flip_h in (False, True):
    for flip_v in (False, True):
      unflipped = crop[:, ::-1] if flip_h else crop
      unflipped = unflipped[::-1] if flip_v else unflipped
      windows = np.lib.stride_tricks.sliding_window_view(source, unflipped.shape)
      if np.all(windows == unflipped, axis=(-3, -2, -1)).any():
        found.add((flip_h, flip_v))
  return found


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("storage,flips", [("tiles", True), ("tiles", False), ("subimages", True),
                                           ("frames", True)])
def test_crops_are_aligned_windows_with_random_flips(dataset, storage, flips):
  root, blurs = dataset
  batches = _batches(_config(root, hflip=flips, vflip=flips, storage=storage), 4, 8)
  seen_flips, seen_windows = set(), set()
  for batch in batches:
    assert batch["blur"].shape == batch["sharp"].shape == (4, CROP, CROP, 3)
    for crop, pair in zip(batch["blur"], _pair_ids(batch)):
      crop_u8 = _to_uint8(crop)
      flips_found = _find_window(crop_u8, blurs[pair])
      assert len(flips_found) == 1, "the crop is not a window of its pair's blurred image"
      seen_flips |= flips_found
      seen_windows.add(crop_u8.tobytes())
  assert seen_flips == ({(h, v) for h in (False, True) for v in (False, True)} if flips else {(False, False)})
  assert len(seen_windows) >= 30  # fresh windows every time (of 19·30 positions, two may meet by chance)


def test_global_batch_is_split_among_processes(dataset):
  root, _ = dataset
  batch = _batches(_config(root), 6, 1, process_index=1, process_count=3)[0]
  assert batch["blur"].shape == (2, CROP, CROP, 3)
  with pytest.raises(ValueError, match=r"^The global batch size 5 does not split evenly among 2 processes"):
    pipeline.train_dataset(_config(root), 5, process_index=0, process_count=2)


def test_processes_together_see_every_pair_once_per_epoch(dataset):
  root, _ = dataset
  data = _config(root)
  stream = [i for b in _batches(data, 1, 2 * NUM_PAIRS) for i in _pair_ids(b)]  # one process, two epochs
  per_process = [[i for b in _batches(data, 2, NUM_PAIRS, process_index=p, process_count=2) for i in _pair_ids(b)]
                 for p in range(2)]
  for p in range(2):
    assert per_process[p] == stream[p::2]  # process p takes every other position of the global stream
  for epoch in range(2):
    seen = per_process[0][4 * epoch:4 * epoch + 4] + per_process[1][4 * epoch:4 * epoch + 4]
    assert sorted(seen) == list(range(NUM_PAIRS))
  assert stream[:NUM_PAIRS] != stream[NUM_PAIRS:]  # reshuffled every epoch


def test_same_seed_same_batches_and_restore_resumes_on_the_next_batch(dataset):
  root, _ = dataset
  data = _config(root)
  reference = _batches(data, 2, 5)
  assert_same_batches(_batches(data, 2, 5), reference)
  other_seed = _batches(_config(root, seed=1), 2, 1)[0]
  assert not np.array_equal(other_seed["blur"], reference[0]["blur"])

  iterator = iter(pipeline.train_dataset(data, 2))
  assert_same_batches([next(iterator), next(iterator)], reference[:2])
  state = iterator.get_state()
  assert_same_batches([next(iterator)], reference[2:3])
  restored = iter(pipeline.train_dataset(data, 2))
  restored.set_state(state)
  assert_same_batches([next(restored), next(restored)], reference[2:4])


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_restore(dataset):
  root, _ = dataset
  reference = _batches(_config(root), 2, 5)
  data = _config(root, num_workers=2)
  iterator = iter(pipeline.train_dataset(data, 2))
  try:
    assert_same_batches([{k: np.array(v) for k, v in next(iterator).items()} for _ in range(3)], reference[:3])
    state = iterator.get_state()
  finally:
    iterator.close()
  restored = iter(pipeline.train_dataset(data, 2))
  try:
    restored.set_state(state)
    assert_same_batches([{k: np.array(v) for k, v in next(restored).items()} for _ in range(2)], reference[3:5])
  finally:
    restored.close()


def test_tiles_give_the_same_batches_as_whole_frames(dataset):
  """The same draws read from 5² tiles (a crop pasted from up to 3×3 of them) and from whole-frame records."""
  root, _ = dataset
  assert_same_batches(_batches(_config(root, storage="tiles"), 4, 6), _batches(_config(root, storage="frames"), 4, 6))


def test_subimage_crops_stay_inside_one_subimage(dataset):
  """With sub-images 20² at stride 8 of 30×41 frames (starts 0, 8, 10 down and 0, 8, 16, 21 across), a region
  is one sub-image and every crop lies inside its region."""
  root, _ = dataset
  reader = catalogue.open_split(_config(root, storage="subimages"), "train")
  regions = reader.regions()
  assert len(regions) == NUM_PAIRS * 3 * 4
  assert sorted({(top, left) for _, _, top, left, _, _ in regions}) == [
      (top, left) for top in (0, 8, 10) for left in (0, 8, 16, 21)]
  draw = pipeline.DrawCrop(regions, CROP)
  rng = np.random.default_rng(0)
  for region in range(len(regions)):
    crop = draw.random_map(region, rng)
    _, record, top, left, height, width = regions[region]
    assert crop["record"] == record
    assert top <= crop["top"] <= top + height - CROP and left <= crop["left"] <= left + width - CROP


@pytest.mark.parametrize("storage", ["tiles", "subimages", "frames"])
def test_eval_reads_full_frames_in_a_fixed_order(dataset, storage):
  root, _ = dataset
  data = _config(root, storage=storage)
  reader = catalogue.open_split(data, "test")
  pairs = list(pipeline.eval_iter(reader, data))
  assert len(pipeline.eval_dataset(reader, data)) == 3
  assert [p["name"] for p in pairs] == ["t/000000", "t/000001", "t/000002"]
  for pair in pairs:
    frame = pair["name"].split("/")[1]
    for kind in ("blur", "sharp"):
      expected = np.asarray(Image.open(root / "test" / "t" / kind / f"{frame}.png"))
      assert pair[kind].dtype == np.uint8 and pair[kind].shape == expected.shape
      np.testing.assert_array_equal(pair[kind], expected)
  assert [p["name"] for p in pipeline.eval_dataset(reader, data, limit=2)] == ["t/000000", "t/000001"]
  train = catalogue.open_split(data, "train")  # sub-images are put back together into whole frames
  train_pairs = list(pipeline.eval_dataset(train, data))
  assert [p["name"] for p in train_pairs] == sorted(p["name"] for p in train_pairs) and len(train_pairs) == NUM_PAIRS
  for k, pair in enumerate(train_pairs):
    np.testing.assert_array_equal(pair["sharp"].astype(int) - pair["blur"], STEP * (k + 1))


def test_data_is_checked_before_any_batch(dataset, tmp_path):
  root, _ = dataset
  with pytest.raises(DatasetError, match=r"holds train images as small as 41×30 \(s0/000000\), smaller than the "
                                         r"32×32 training crop; lower the crop size"):
    pipeline.train_dataset(_config(root, crop_size=32), 2)
  with pytest.raises(DatasetError, match=r"holds train sub-images as small as 20×20 .*; lower the crop size "
                                         r"\(config.data.crop_size\) or use storage 'tiles'\.$"):
    pipeline.train_dataset(_config(root, crop_size=24, storage="subimages"), 2)
  with pytest.raises(DatasetError, match=r"^No data set deblur_folder/blur is built in .*/nowhere_tfds; build it with "
                                         r"`python -m simplenet_jax.data.prepare --dataset folder --source "):
    pipeline.train_dataset(_config(tmp_path / "nowhere"), 2)
  with pytest.raises(DatasetError, match=r"^No data set deblur_folder/blur_gamma is built"):
    pipeline.train_dataset(_config(root, blur_kind="blur_gamma"), 2)
  with pytest.raises(DatasetError, match=r"^realblur_j has no blur kind 'blur_gamma'; use blur \(config"):
    pipeline.train_dataset(_config(root, dataset="realblur_j", blur_kind="blur_gamma"), 2)
  with pytest.raises(DatasetError, match=r"^storage 'strips' is not one of tiles, subimages, frames\.$"):
    pipeline.train_dataset(_config(root, storage="strips"), 2)
  (root / "train" / "s0" / "blur" / "000000.png").write_bytes(b"changed")  # the folder changed after the build
  with pytest.raises(DatasetError, match=r"was built from other files than those in .*/train; build it again with "
                                         r"`python -m simplenet_jax.data.prepare .* --overwrite`\.$"):
    pipeline.train_dataset(_config(root), 2)


def test_an_image_smaller_than_the_crop_is_named(tmp_path):
  """The one crop-size check, at the start of training: the smallest frame of the built split, by name."""
  root = make_gopro(tmp_path / "GOPRO_Large")
  for kind in ("blur", "sharp"):
    save_image(root / "train/GOPR0001_00_00" / kind / "000002.png", height=30, width=36)
  catalogue.build("gopro", root)
  with pytest.raises(DatasetError, match=r"^The data set gopro/blur in .* holds train images as small as 36×30 "
                                         r"\(GOPR0001_00_00/000002\), smaller than the 32×32 training crop; lower the "
                                         r"crop size \(config\.data\.crop_size\) or remove the pair\.$"):
    pipeline.train_dataset(_config(root, dataset="gopro", crop_size=32), 2)


def test_data_package_imports_no_model_code():
  """`data` knows no model (STYLE); blur synthesis, whose spawned workers import it, does not even load JAX,
  nor does the build command, which knows nothing of the grain pipeline."""
  probe = ("import sys\n"
           "from simplenet_jax.data import synthesize\n"
           "from simplenet_jax.data.synthesis import camera_shake, dataset, linear_light, pairs, sources\n"
           "print('jax' in sys.modules)\n"
           "from simplenet_jax.data import prepare\n"
           "print(sorted(m for m in sys.modules if m.startswith(('jax', 'grain', 'simplenet_jax.data.pipeline'))))\n"
           "from simplenet_jax.data import builders, catalogue, images, layouts, pipeline\n"
           "print(sorted(m for m in sys.modules if m.startswith(('simplenet_jax.models', 'simplenet_jax.ops', "
           "'flax'))))\n")
  done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
  assert done.stdout.split("\n")[:3] == ["False", "[]", "[]"]
