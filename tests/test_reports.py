"""simplenet_jax.evaluation.reports: side-by-side pictures, the running extremes against sorted(), and the
files written, read back with csv, json and Pillow."""

import csv
import json
import statistics

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from PIL import Image

from simplenet_jax.evaluation import bands
from simplenet_jax.evaluation import reports
from simplenet_jax.evaluation import scoring


def test_side_by_side_is_blur_output_sharp_with_floats_rounded_and_clipped():
  rng = np.random.default_rng(0)
  blur = rng.uniform(-0.2, 1.2, (13, 7, 3))  # float64 on the host
  output = jnp.asarray(rng.uniform(size=(13, 7, 3)), jnp.float32)  # on the device
  sharp = rng.integers(0, 256, (13, 7, 3), dtype=np.uint8)
  picture = reports.side_by_side(blur, output, sharp)
  assert isinstance(picture, np.ndarray) and picture.dtype == np.uint8 and picture.shape == (13, 21, 3)
  as_png = lambda x: np.array([round(min(max(float(v), 0.0), 1.0) * 255) for v in np.ravel(x)]).reshape(x.shape)
  np.testing.assert_array_equal(picture[:, :7], as_png(blur))
  np.testing.assert_array_equal(picture[:, 7:14], as_png(np.asarray(output)))
  np.testing.assert_array_equal(picture[:, 14:], sharp)


class Unorderable:
  """An item that cannot be compared: Extremes must never order its items."""

  def __init__(self, index):
    self.index = index

  def __lt__(self, other):
    raise AssertionError("items compared")


@pytest.mark.parametrize("count", [0, 1, 3, 7, 60])
@pytest.mark.parametrize("ask_first", [False, True])
def test_extremes_equal_sorted_of_every_item_offered(count, ask_first):
  """Random scores with many ties: the first `count` by (score, order) and by (−score, order)."""
  rng = np.random.default_rng(count)
  scores = rng.integers(0, 9, 43).astype(float).tolist()
  extremes = reports.Extremes(count)
  for i, value in enumerate(scores):
    if not ask_first or extremes.wants(value):
      extremes.add(value, Unorderable(i))
  lowest = sorted(range(len(scores)), key=lambda i: (scores[i], i))[:count]
  highest = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:count]
  assert [item.index for item in extremes.lowest()] == lowest
  assert [item.index for item in extremes.highest()] == highest


def test_extremes_want_exactly_what_they_would_keep():
  """wants(v) is true when adding v changes what is kept, false when it does not (a later tie is not kept)."""
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 6, 30).astype(float).tolist()
  extremes = reports.Extremes(4)
  for i, value in enumerate(scores):
    before = ([x.index for x in extremes.lowest()], [x.index for x in extremes.highest()])
    wanted = extremes.wants(value)
    extremes.add(value, Unorderable(i))
    after = ([x.index for x in extremes.lowest()], [x.index for x in extremes.highest()])
    assert wanted == (before != after), (i, value, before, after)
  assert not reports.Extremes(0).wants(1.0)


def test_write_extremes_ranks_from_01_and_replaces_an_earlier_runs_pictures(tmp_path):
  out = epath.Path(tmp_path)
  for folder in ("worst", "best"):
    (tmp_path / folder).mkdir()
    for stale in ("01_old_000001.png", "09_old_000009.png", "keep.txt", "1_single_digit.png"):
      (tmp_path / folder / stale).write_bytes(b"earlier")
  rng = np.random.default_rng(2)
  pictures = {f"scene{i % 2}/{i:06d}": rng.integers(0, 256, (5, 9, 3), dtype=np.uint8) for i in range(6)}
  scores = [3.0, -1.0, 7.5, 0.25, 7.5, 2.0]
  extremes = reports.Extremes(2)
  for value, (name, picture) in zip(scores, pictures.items()):
    extremes.add(value, (name, picture))
  reports.write_extremes(out, extremes)
  assert sorted(p.name for p in (tmp_path / "worst").iterdir()) == [
      "01_scene1_000001.png", "02_scene1_000003.png", "1_single_digit.png", "keep.txt"]
  assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
      "01_scene0_000002.png", "02_scene0_000004.png", "1_single_digit.png", "keep.txt"]
  for folder, names in (("worst", ["scene1/000001", "scene1/000003"]), ("best", ["scene0/000002", "scene0/000004"])):
    for rank, name in enumerate(names, 1):
      with Image.open(tmp_path / folder / f"{rank:02d}_{name.replace('/', '_')}.png") as image:
        np.testing.assert_array_equal(np.asarray(image), pictures[name])
  assert (tmp_path / "worst" / "keep.txt").read_bytes() == b"earlier"


def _results(aligned, n=5):
  rng = np.random.default_rng(3)
  return [scoring.ImageResult(
      name=f"scene{i % 2}/{i:06d}" if i else "loose", input_psnr=rng.uniform(18, 30),
      input_ssim={"matlab": rng.uniform(), "python": rng.uniform()}, psnr=rng.uniform(20, 35),
      ssim={"matlab": rng.uniform(), "python": rng.uniform()}, seconds=rng.uniform(0, 2),
      colour_shift=rng.uniform(0, 5), input_colour_shift=rng.uniform(0, 5),
      aligned={k: rng.uniform() for k in ("psnr", "ssim", "input_psnr", "input_ssim")} if aligned else None,
      unchanged=i % 3 == 1) for i in range(n)]


@pytest.mark.parametrize("aligned", [False, True])
def test_write_results_csv_and_json_read_back_as_the_inputs(tmp_path, aligned):
  results = _results(aligned)
  out = epath.Path(tmp_path) / "new" / "eval"  # made on the way
  summary = reports.write_results(results, out, {"checkpoint_step": 12, "convention_note": "x"})
  with open(tmp_path / "new" / "eval" / "results.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  aligned_keys = ["psnr", "ssim", "input_psnr", "input_ssim"] if aligned else []
  assert list(rows[0]) == (["scene", "name", "input_psnr", "input_ssim_matlab", "input_ssim_python", "psnr",
                            "ssim_matlab", "ssim_python"] + [f"{k}_aligned" for k in aligned_keys] +
                           ["input_colour_shift", "colour_shift", "unchanged", "seconds"])
  assert len(rows) == len(results)
  for row, r in zip(rows, results):
    assert (f"{row['scene']}/{row['name']}" if row["scene"] else row["name"]) == r.name
    checks = [("psnr", r.psnr, 1e-6), ("input_psnr", r.input_psnr, 1e-6), ("colour_shift", r.colour_shift, 1e-4),
              ("input_colour_shift", r.input_colour_shift, 1e-4), ("seconds", r.seconds, 1e-4)]
    checks += [(f"ssim_{c}", r.ssim[c], 1e-8) for c in r.ssim]
    checks += [(f"input_ssim_{c}", r.input_ssim[c], 1e-8) for c in r.input_ssim]
    checks += [(f"{k}_aligned", r.aligned[k], 1e-8) for k in aligned_keys]
    for column, value, resolution in checks:
      assert abs(float(row[column]) - value) <= resolution / 2 * (1 + 1e-9), column
  assert rows[0]["scene"] == "" and rows[0]["name"] == "loose"
  assert [row["unchanged"] for row in rows] == [str(int(r.unchanged)) for r in results] == ["0", "1", "0", "0", "1"]

  saved = json.loads((tmp_path / "new" / "eval" / "summary.json").read_text())
  assert saved == summary
  assert saved["images"] == 5 and saved["conventions"] == ["matlab", "python"]
  assert saved["checkpoint_step"] == 12 and saved["convention_note"] == "x"
  assert saved["seconds"] == pytest.approx(statistics.fmean(r.seconds for r in results), rel=1e-12)
  assert saved["psnr"] == pytest.approx(statistics.fmean(r.psnr for r in results), rel=1e-12)
  assert saved["input_ssim_python"] == pytest.approx(statistics.fmean(r.input_ssim["python"] for r in results))
  assert saved["worst_psnr_gain"] == pytest.approx(min(r.psnr - r.input_psnr for r in results), rel=1e-12)
  assert saved["unchanged"] == 2
  assert saved["worst_colour_shift_excess"] == pytest.approx(
      max(r.colour_shift - r.input_colour_shift for r in results), rel=1e-12)
  assert ("ssim_aligned" in saved) == aligned
  if aligned:
    assert saved["input_psnr_aligned"] == pytest.approx(statistics.fmean(r.aligned["input_psnr"] for r in results))


def test_write_results_of_no_images_is_a_header_and_an_empty_summary(tmp_path):
  summary = reports.write_results([], epath.Path(tmp_path), {"split": "test"})
  with open(tmp_path / "results.csv", newline="") as f:
    assert list(csv.reader(f)) == [["scene", "name", "input_psnr", "psnr", "input_colour_shift", "colour_shift",
                                    "unchanged", "seconds"]]
  assert json.loads((tmp_path / "summary.json").read_text()) == summary == {
      "seconds": 0, "images": 0, "conventions": [], "split": "test"}


def test_summary_text_counts_unchanged_images_only_when_there_are_any(tmp_path):
  """A gated model's printout says how many images it left exactly as they were, overall and per band; a model
  that changes every image (the paper's) prints no such line."""
  results = _results(aligned=False, n=6)  # unchanged: images 1 and 4
  names = {r.name: ("nearly sharp" if i < 3 else "mild") for i, r in enumerate(results)}
  extra = {"checkpoint_step": 7, "config": "demo", "headline": "unaligned", "out": "o",
           "bands": bands.band_summary(results, names)}
  text = reports.summary_text(reports.write_results(results, epath.Path(tmp_path / "a"), extra))
  assert "unchanged (the output is the input, byte for byte): 2 of 6 images" in text
  assert text.count(", 1 unchanged") == 2  # one in each band
  for r in results:
    r.unchanged = False
  extra["bands"] = bands.band_summary(results, names)
  text = reports.summary_text(reports.write_results(results, epath.Path(tmp_path / "b"), extra))
  assert "unchanged" not in text
