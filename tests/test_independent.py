"""The independent test set (`synthesis.independent`): its photos, its kernels, its bands, its files."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from simplenet_jax.data import synthesize
from simplenet_jax.data.synthesis import independent
from simplenet_jax.data.synthesis import sources
from simplenet_jax.evaluation import bands


def test_a_line_kernel_has_the_moments_of_a_uniform_segment():
  """A path of length L at constant speed is a uniform segment: mean at the centre, variance L²/12 along it,
  none across it (up to the bilinear splat's own spread, at most 1/4 px² per axis)."""
  rng = np.random.default_rng(3)
  for length in (0.0, 0.7, 9.3, 29.0):
    path = independent.motion_path(rng, length, "line", num_points=4001)
    kernel = independent.kernel_from_path(path)
    ys, xs = np.mgrid[:independent.KERNEL_SIZE, :independent.KERNEL_SIZE] - (independent.KERNEL_SIZE - 1) / 2
    assert kernel.sum() == pytest.approx(1.0)
    mean = np.array([(kernel * xs).sum(), (kernel * ys).sum()])
    np.testing.assert_allclose(mean, 0.0, atol=1e-6)
    cov = np.array([[(kernel * xs * xs).sum(), (kernel * xs * ys).sum()],
                    [(kernel * xs * ys).sum(), (kernel * ys * ys).sum()]])
    along, across = np.linalg.eigvalsh(cov)[::-1]
    assert length**2 / 12 <= along <= length**2 / 12 + 0.25 + 1e-9
    assert across <= 0.25 + 1e-9


def test_a_curve_is_as_long_as_asked_travelled_at_constant_speed_and_centred_on_its_middle_instant():
  rng = np.random.default_rng(5)
  for length in (0.5, 7.0, 30.0):
    path = independent.motion_path(rng, length, "curve", num_points=1001)
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    assert steps.sum() == pytest.approx(length, rel=1e-3)
    np.testing.assert_allclose(steps, length / 1000, rtol=0.05)  # a chord of a tight bend is a little shorter
    np.testing.assert_array_equal(path[500], [0.0, 0.0])
    assert np.abs(path).max() <= length / 2 + 1e-9  # within half its length of the middle: fits the kernel


def test_a_pair_is_the_photo_convolved_in_linear_light_against_a_naive_loop(monkeypatch):
  """make_pair's blur, noise aside, equals a direct sum over the kernel (an independent reference)."""
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, size=(independent.KERNEL_SIZE + 6, independent.KERNEL_SIZE + 3, 3), dtype=np.uint8)
  draws = np.random.default_rng(9)
  shape = "line" if draws.random() < 0.5 else "curve"
  kernel = independent.kernel_from_path(independent.motion_path(draws, 4.5, shape))
  monkeypatch.setattr(independent, "READ_NOISE", 0.0)
  monkeypatch.setattr(independent, "SHOT_NOISE", (0.0, 0.0))
  blur, sharp, info = independent.make_pair(photo, np.random.default_rng(9), 4.5)
  linear = ((photo / 255.0 + 0.055) / 1.055) ** 2.4
  linear = np.where(photo / 255.0 <= 0.04045, photo / 255.0 / 12.92, linear)
  m, k = independent.MARGIN, independent.KERNEL_SIZE
  expected = np.zeros(sharp.shape)
  for y in range(sharp.shape[0]):
    for x in range(sharp.shape[1]):  # convolution: the kernel flipped over the window around (y + m, x + m)
      window = linear[y:y + k, x:x + k]
      expected[y, x] = (window * kernel[::-1, ::-1, None]).sum(axis=(0, 1))
  srgb = np.where(expected <= 0.0031308, expected * 12.92, 1.055 * np.clip(expected, 0, 1) ** (1 / 2.4) - 0.055)
  np.testing.assert_array_equal(sharp, photo[m:-m, m:-m])
  assert np.abs(blur.astype(int) - np.round(srgb * 255)).max() <= 1  # rounding of float sums only
  assert info["shape"] == shape


def test_noise_has_the_stated_std_in_linear_light():
  rng = np.random.default_rng(1)
  linear = np.full((400, 400), 0.5)
  std, shot = independent.noise_std(rng, linear)
  assert independent.SHOT_NOISE[0] <= shot <= independent.SHOT_NOISE[1]
  np.testing.assert_allclose(std, np.sqrt(shot**2 * 0.5 + independent.READ_NOISE**2))


@pytest.fixture(scope="module")
def independent_set(tmp_path_factory):
  out = tmp_path_factory.mktemp("independent") / "set"
  assert synthesize.main(["--independent", "--out", str(out)]) == 0
  return out


def test_the_set_has_every_photo_in_every_band_with_lengths_in_the_band(independent_set):
  meta = json.loads((independent_set / "meta.json").read_text())
  pairs = meta["pairs"]
  assert len(pairs) == 3 * len(independent.PHOTOS) >= 24
  for pair in pairs:
    low, high = independent.BAND_LENGTHS[pair["band"]]
    assert low <= pair["trajectory_length_px"] <= high + 1e-3
    assert bands.band_of(pair["trajectory_length_px"]) == pair["band"]  # the evaluation names it the same
    assert pair["frame"] == f"{list(independent.BAND_LENGTHS).index(pair['band']):06d}.png"
  assert {p["shape"] for p in pairs} == {"line", "curve"}
  for band, (low, high) in independent.BAND_LENGTHS.items():
    assert sorted(p["scene"] for p in pairs if p["band"] == band) == sorted(p.name for p in independent.PHOTOS)
  # No JPEG, no other resampling: the sharp image is the photo itself, less the margin.
  photo = independent.load_photo(independent.PHOTOS[2])
  sharp = np.asarray(Image.open(independent_set / "test" / independent.PHOTOS[2].name / "sharp" / "000001.png"))
  np.testing.assert_array_equal(sharp, photo[independent.MARGIN:-independent.MARGIN,
                                             independent.MARGIN:-independent.MARGIN])
  means = {band: stats["mean_input_psnr_db"] for band, stats in meta["summary"].items()}
  assert means["nearly sharp"] > means["mild"] > means["heavy"]


def test_the_set_is_deterministic(independent_set, tmp_path):
  again = tmp_path / "again"
  independent.write_dataset(again)
  files = sorted(p.relative_to(independent_set) for p in independent_set.rglob("*") if p.is_file())
  assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
  for f in files:
    assert (independent_set / f).read_bytes() == (again / f).read_bytes(), f
  assert independent.write_dataset(again) == json.loads((again / "meta.json").read_text())  # rerun: kept


def _pixel_hash(pixels: np.ndarray) -> str:
  small = Image.fromarray(pixels).convert("L").resize((16, 16), Image.Resampling.BOX)
  return hashlib.sha256(np.asarray(small).tobytes()).hexdigest()


def test_its_photos_are_none_of_the_demos_photos():
  """Disjoint from the demo's training photos (and its own test photos), by source and by content: no photo of
  this set is a scaled copy of any of them (a 16×16 thumbnail of each, compared by correlation)."""
  builtin = sources.BUILTIN_TRAIN_PHOTOS + sources.BUILTIN_TEST_PHOTOS
  assert not {p.package for p in independent.PHOTOS} & {ref.split(":")[0].split(".")[0] for ref in builtin}

  def thumbnail(pixels):
    small = np.asarray(Image.fromarray(pixels).convert("L").resize((16, 16), Image.Resampling.BOX), np.float64)
    small = small - small.mean()
    return small / (np.linalg.norm(small) + 1e-9)

  theirs = [thumbnail(np.asarray(sources.load_photo(ref))) for ref in builtin]
  ours = [thumbnail(independent.load_photo(p)) for p in independent.PHOTOS]
  assert len({_pixel_hash(independent.load_photo(p)) for p in independent.PHOTOS}) == len(independent.PHOTOS)
  for a in ours:
    assert max(float((a * b).sum()) for b in theirs) < 0.9
  for i, a in enumerate(ours):  # and no two of its own are one photo
    assert all(float((a * b).sum()) < 0.9 for b in ours[i + 1:])


def test_a_photo_that_is_not_the_pinned_one_is_one_sentence(tmp_path, monkeypatch):
  photo = independent.PHOTOS[0]
  forged = independent.WheelPhoto(photo.name, photo.package, photo.version, photo.member, "0" * 64)
  with pytest.raises(independent.images.DatasetError, match=r"is not the pinned photo \(SHA-256 [0-9a-f]{12}…\)"):
    independent.photo_bytes(forged, tmp_path)


def test_a_wheel_that_cannot_be_downloaded_is_one_sentence(tmp_path):
  missing = independent.WheelPhoto("nothing", "simplenet-no-such-package", "0.0.1", "x/y.jpg", "0" * 64)
  with pytest.raises(independent.images.DatasetError,
                     match=r"^cannot download simplenet-no-such-package==0.0.1 from PyPI for its photo nothing \("):
    independent.photo_bytes(missing, tmp_path)
  assert not list((tmp_path / "wheels").glob("*.whl")) and not list((tmp_path / "wheels").glob(".*partial"))


def test_independent_takes_only_out(capsys):
  with pytest.raises(SystemExit):
    synthesize.main(["--independent", "--out", "x", "--seed", "3"])
  assert "--independent takes only --out" in capsys.readouterr().err



def test_band_summary_groups_by_motion_against_a_hand_count(tmp_path):
  from simplenet_jax.evaluation import scoring  # pylint: disable=g-import-not-at-top
  meta = {"pairs": [{"split": "test", "scene": "a", "frame": "000000.png", "trajectory_length_px": 0.4},
                    {"split": "test", "scene": "a", "frame": "000001.png", "trajectory_length_px": 1.0},
                    {"split": "test", "scene": "b", "frame": "000000.png", "trajectory_length_px": 14.9},
                    {"split": "train", "scene": "c", "frame": "000000.png", "trajectory_length_px": 40.0}]}
  (tmp_path / "meta.json").write_text(json.dumps(meta))
  names = bands.pair_bands(str(tmp_path))
  assert names == {"a/000000": "nearly sharp", "a/000001": "nearly sharp", "b/000000": "mild"}
  assert bands.pair_bands(str(tmp_path / "nothing")) == {}

  def result(name, input_psnr, psnr, shift, unchanged=False):
    return scoring.ImageResult(name, input_psnr, {}, psnr, {}, 0.0, shift, 0.5, unchanged=unchanged)
  results = [result("a/000000", 40.0, 40.5, 1.0), result("a/000001", 30.0, 30.0, 3.0, unchanged=True),
             result("b/000000", 25.0, 27.0, 2.0), result("z/000000", 1.0, 1.0, 0.0, unchanged=True)]
  summary = bands.band_summary(results, names)
  assert list(summary) == ["nearly sharp", "mild"]
  assert summary["nearly sharp"] == {"images": 2, "input_psnr": 35.0, "psnr": 35.25, "gain": 0.25,
                                     "worst_gain": 0.0, "colour_shift": 2.0, "input_colour_shift": 0.5,
                                     "unchanged": 1}
  assert summary["mild"]["gain"] == 2.0 and summary["mild"]["images"] == 1 and summary["mild"]["unchanged"] == 0
