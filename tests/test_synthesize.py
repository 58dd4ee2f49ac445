"""Blur synthesis: linear-light averaging, still and shifting cameras against NumPy references, the demo set's
realism (input PSNR band, no identical pairs), user photos, determinism, and the command line."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from simplenet_jax.data import synthesize
from simplenet_jax.data.images import DatasetError

REPO = pathlib.Path(__file__).resolve().parent.parent


def _photo(seed: int, height: int = 120, width: int = 150) -> Image.Image:
  """A textured RGB test photo: smooth colour gradients plus random blocks, so blur changes it everywhere."""
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, 256, (height // 6 + 1, width // 6 + 1, 3)).repeat(6, 0).repeat(6, 1)[:height, :width]
  ramp = np.linspace(0, 255, width)[None, :, None]
  return Image.fromarray(((blocks + ramp) / 2).astype(np.uint8))


def test_linear_light_average_of_black_and_white_is_188_not_128():
  black, white = np.zeros((2, 3, 3), np.uint8), np.full((2, 3, 3), 255, np.uint8)
  average = synthesize.average_in_linear_light([black, white])
  # Reference: the sRGB curve by hand, 1.055·0.5^(1/2.4) − 0.055 = 0.7354 → 187.5 → 188.
  expected = round((1.055 * 0.5 ** (1 / 2.4) - 0.055) * 255)
  assert expected == 188
  np.testing.assert_array_equal(average, np.full((2, 3, 3), 188, np.uint8))


def test_srgb_conversion_round_trips_every_code():
  codes = np.arange(256, dtype=np.uint8)
  np.testing.assert_array_equal(synthesize.uint8_from_linear(synthesize.linear_from_uint8(codes)), codes)
  # Two published points of the sRGB curve (IEC 61966-2-1): 0.5 → 0.2140, 0.04045 is the linear-segment knee.
  np.testing.assert_allclose(synthesize.srgb_to_linear(np.array([0.5, 0.04045])), [0.21404, 0.04045 / 12.92],
                             rtol=1e-4)


def test_still_camera_gives_blur_equal_to_sharp():
  settings = dataclasses.replace(synthesize.BlurSettings(), noise=0.0)
  pair = synthesize.synthesize_pair(_photo(0), np.random.default_rng(1), 48, 64, settings,
                                    shake=synthesize.Shake.still(15))
  assert pair.blur.shape == pair.sharp.shape == (48, 64, 3)
  np.testing.assert_array_equal(pair.blur, pair.sharp)
  assert pair.info["trajectory_length_px"] == 0 and pair.info["input_psnr_db"] == float("inf")


def test_zero_length_random_shake_is_still():
  shake = synthesize.random_shake(np.random.default_rng(0), 0.0, (32, 32), synthesize.BlurSettings())
  np.testing.assert_array_equal(shake.homographies(), np.broadcast_to(np.eye(3), (shake.num_sub_frames, 3, 3)))


def test_shifting_camera_matches_average_of_shifted_crops():
  """Whole-pixel shifts with an (almost) infinite focal length are pure translations; the reference averages
  the shifted crops of the canvas in linear light with plain NumPy slicing."""
  rng = np.random.default_rng(3)
  canvas = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
  height, width, margin = 20, 24, 5
  shifts = [(-3, 1), (-1, 0), (0, 0), (2, -1), (4, 2)]  # (x, y); the middle one is the sharp pose
  shake = synthesize.Shake(np.array([complex(x, y) for x, y in shifts]), np.zeros(5), focal=1e12)
  got = synthesize.render_blur(canvas, shake, height, width, margin)
  linear = synthesize.srgb_to_linear(canvas / 255.0)
  expected = np.mean([linear[margin + y:margin + y + height, margin + x:margin + x + width] for x, y in shifts],
                     axis=0)
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_random_shake_is_centred_on_the_middle_sub_frame():
  settings = synthesize.BlurSettings()
  for seed, length in ((0, 3.0), (1, 12.0), (2, 30.0)):
    shake = synthesize.random_shake(np.random.default_rng(seed), length, (256, 256), settings)
    middle = shake.num_sub_frames // 2
    assert shake.num_sub_frames % 2 == 1
    assert settings.min_sub_frames <= shake.num_sub_frames <= settings.max_sub_frames
    assert shake.offsets[middle] == 0 and shake.rolls[middle] == 0
    np.testing.assert_array_equal(shake.homographies()[middle], np.eye(3))
    # The sub-frames sample a path of that length; a polyline through samples is at most as long.
    assert 0.5 * length <= shake.path_length <= length + 1e-9
    assert np.abs(shake.rolls).max() <= np.deg2rad(settings.max_roll_deg) + 1e-12


def _tree_files(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_recipe_gives_realistic_pairs(tmp_path):
  """A reduced demo set with the default settings: GoPro layout, train and test photos from different packages,
  whole-photo test pairs, realistic input PSNR, some JPEG inputs."""
  meta = synthesize.synthesize_dataset(tmp_path / "demo", train_pairs=30, test_pairs=6, seed=0, workers=1,
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
    assert not np.array_equal(blur, sharp)
    mse = np.mean((blur.astype(np.float64) - sharp) ** 2)
    psnr = 10 * np.log10(255**2 / mse)
    assert psnr == pytest.approx(record["input_psnr_db"], abs=1e-3)
    psnrs.append(psnr)
  assert len(psnrs) == 36 and len(list(root.rglob("*.png"))) == 72
  assert 22 <= np.mean(psnrs) <= 32
  assert 15 <= min(psnrs) and max(psnrs) <= 50
  lengths = [r["trajectory_length_px"] for r in meta["pairs"]]
  longest = synthesize.BlurSettings().max_length
  assert min(lengths) < 0.2 * longest and max(lengths) > 0.4 * longest  # small and large blurs both occur
  qualities = [r["jpeg_quality"] for r in meta["pairs"]]
  assert 3 <= sum(q > 0 for q in qualities) <= 20 and all(q == 0 or 70 <= q <= 95 for q in qualities)
  assert all("hue_deg" in r for r in meta["pairs"] if r["split"] == "train")
  assert not any("hue_deg" in r for r in meta["pairs"] if r["split"] == "test")  # test photos keep their colours
  assert meta["summary"]["train"]["count"] == 30
  assert meta["summary"]["test"]["mean"] == pytest.approx(np.mean(psnrs[30:]), abs=1e-2)


def test_augmentations_reach_blur_and_sharp_identically():
  """With a still camera, no noise and no JPEG, the blurred image is the recoloured sharp one exactly."""
  settings = dataclasses.replace(synthesize.BlurSettings(), noise=0.0, jpeg_fraction=0.0)
  plain = synthesize.synthesize_pair(_photo(3), np.random.default_rng(4), 40, 64, settings,
                                     shake=synthesize.Shake.still(15))
  changed = synthesize.synthesize_pair(_photo(3), np.random.default_rng(4), 40, 64, settings,
                                       shake=synthesize.Shake.still(15), augment=synthesize.Augmentations())
  assert changed.blur.shape == changed.sharp.shape == (40, 64, 3)
  np.testing.assert_array_equal(changed.blur, changed.sharp)
  assert np.abs(changed.sharp.astype(float) - plain.sharp).mean() > 10  # the augmentation did change the crop


@pytest.mark.parametrize("height,width", [(40, 64), (64, 40), (33, 33)])
def test_dihedral_canvas_has_the_requested_shape_for_every_turn(height, width):
  photo = _photo(1, 120, 150)
  turns = set()
  for seed in range(12):
    canvas, _ = synthesize.random_canvas(photo, np.random.default_rng(seed), height, width, dihedral=True)
    assert canvas.shape == (height, width, 3)
    turns.add(int(np.random.default_rng(seed).integers(4)))
  assert turns == {0, 1, 2, 3}


def test_hue_rotation_is_scipys_rotation_about_the_gray_axis():
  from scipy.spatial.transform import Rotation  # pylint: disable=g-import-not-at-top
  for angle in (0.3, -2.0, np.pi):
    expected = Rotation.from_rotvec(angle * np.ones(3) / np.sqrt(3)).as_matrix()
    np.testing.assert_allclose(synthesize.hue_rotation(angle), expected, atol=1e-12)


def _only(**fields) -> synthesize.Augmentations:
  off = dict(dihedral=False, permute_channels=False, max_hue_deg=0.0, saturation=1.0, white_balance=1.0,
             exposure=1.0)
  return synthesize.Augmentations(**{**off, **fields})


def test_each_colour_change_matches_its_formula():
  """Each change alone, on random linear colours, against a direct NumPy formula of what it means."""
  colours = np.random.default_rng(0).random((50, 3))
  rng = np.random.default_rng(7)
  matrix, info = synthesize.colour_transform(rng, _only())
  np.testing.assert_allclose(matrix, np.eye(3), atol=1e-12)

  matrix, info = synthesize.colour_transform(rng, _only(permute_channels=True))
  order = ["RGB".index(c) for c in info["channel_order"]]
  np.testing.assert_allclose(colours @ matrix, colours[:, order], atol=1e-12)

  matrix, info = synthesize.colour_transform(rng, _only(saturation=2.0))
  s = info["saturation"]
  mean = colours.mean(axis=1, keepdims=True)
  np.testing.assert_allclose(colours @ matrix, mean + s * (colours - mean), atol=1e-3)
  assert 0.5 <= s <= 2.0 and abs(s - 1) > 1e-3

  matrix, info = synthesize.colour_transform(rng, _only(white_balance=1.3, exposure=1.5))
  gains = np.array(info["white_balance"]) * info["exposure"]
  np.testing.assert_allclose(colours @ matrix, colours * gains, atol=1e-2)
  assert all(1 / 1.3 - 1e-3 <= g <= 1.3 + 1e-3 for g in info["white_balance"])

  matrix, info = synthesize.colour_transform(rng, _only(max_hue_deg=90.0))
  gray = np.full((1, 3), 0.4)
  np.testing.assert_allclose(gray @ matrix, gray, atol=1e-12)  # gray stays gray
  np.testing.assert_allclose(np.linalg.norm(colours @ matrix, axis=1), np.linalg.norm(colours, axis=1), atol=1e-12)
  assert abs(info["hue_deg"]) <= 90


def test_jpeg_inputs_are_lossy_but_close_and_targets_stay_lossless():
  """The camera's JPEG reaches the input only; it matches OpenCV's JPEG at the same quality closely."""
  import cv2  # pylint: disable=g-import-not-at-top  (an independent JPEG encoder)
  settings = dataclasses.replace(synthesize.BlurSettings(), noise=0.0, jpeg_quality=(80, 80))
  pairs = {fraction: synthesize.synthesize_pair(_photo(5), np.random.default_rng(0), 48, 64,
                                                dataclasses.replace(settings, jpeg_fraction=fraction))
           for fraction in (0.0, 1.0)}
  plain, jpeg = pairs[0.0], pairs[1.0]
  assert plain.info["jpeg_quality"] == 0 and jpeg.info["jpeg_quality"] == 80
  np.testing.assert_array_equal(jpeg.sharp, plain.sharp)
  assert not np.array_equal(jpeg.blur, plain.blur)
  assert 25 < synthesize.psnr(jpeg.blur, plain.blur) < 45
  _, encoded = cv2.imencode(".jpg", plain.blur[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
  reference = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
  assert synthesize.psnr(jpeg.blur, reference) > synthesize.psnr(jpeg.blur, plain.blur) + 5


def test_same_command_gives_identical_bytes_with_any_worker_count(tmp_path):
  kwargs = dict(train_pairs=6, test_pairs=3, size=(40, 48), seed=5, progress=False)
  synthesize.synthesize_dataset(tmp_path / "a", workers=1, **kwargs)
  synthesize.synthesize_dataset(tmp_path / "b", workers=2, **kwargs)
  first, second = _tree_files(tmp_path / "a"), _tree_files(tmp_path / "b")
  assert len(first) == 2 * 9 + 1 and first == second
  synthesize.synthesize_dataset(tmp_path / "c", workers=1, **{**kwargs, "seed": 6})
  other = _tree_files(tmp_path / "c")
  assert other.keys() == first.keys() and other != first


def test_user_photos_skip_small_ones_and_split_disjointly(tmp_path, caplog):
  photos = tmp_path / "photos"
  (photos / "trip").mkdir(parents=True)
  for i in range(5):
    _photo(i).save(photos / "trip" / f"img {i}.jpg", quality=95)
  _photo(9).convert("L").save(photos / "gray.png")  # gray photos are used as RGB
  _photo(10, 30, 30).save(photos / "tiny.png")
  meta = synthesize.synthesize_dataset(tmp_path / "out", photos_dir=photos, train_pairs=5, test_pairs=2,
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
  _photo(0, 30, 30).save(tmp_path / "photos" / "small.png")
  with pytest.raises(DatasetError, match=r"has 0 usable photos \(1 jpg/png files, 1 smaller than 48×40\)"):
    synthesize.synthesize_dataset(tmp_path / "out", photos_dir=tmp_path / "photos", size=(40, 48), workers=1)
  assert not (tmp_path / "out").exists()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "simplenet_jax.data.synthesize", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


def test_command_line_builds_then_reruns_as_no_op_and_reports_errors_without_traceback(tmp_path):
  out = tmp_path / "demo"
  args = ["--out", str(out), "--train-pairs", "4", "--test-pairs", "2", "--size", "32", "40", "--seed", "1",
          "--max-blur", "8", "--noise", "0", "--workers", "1"]
  done = _run_cli(*args)
  assert done.returncode == 0, done.stderr
  assert "train: 4 pairs, input PSNR" in done.stdout and f"Wrote the data set to {out}" in done.stdout
  meta = json.loads((out / "meta.json").read_text())
  assert meta["recipe"]["blur"]["max_length"] == 8 and meta["recipe"]["blur"]["noise"] == 0
  assert all(p["noise_sigma"] == 0 and p["trajectory_length_px"] <= 8 for p in meta["pairs"])
  assert not out.with_name("demo.partial").exists()
  before = _tree_files(out)

  again = _run_cli(*args)
  assert again.returncode == 0 and "already holds this data set; nothing to do" in again.stdout
  assert _tree_files(out) == before

  other = _run_cli(*args[:-4], "--seed", "2")
  assert other.returncode == 1
  assert other.stderr.strip() == (f"error: {out} already holds a synthesized data set made with other settings; "
                                  "delete it or choose another --out.")

  missing = _run_cli("--out", str(tmp_path / "x"), "--photos", str(tmp_path / "nowhere"))
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert missing.stderr.strip() == (f"error: Photo folder {tmp_path / 'nowhere'} does not exist; pass --photos a "
                                    "folder of jpg/png photos.")
