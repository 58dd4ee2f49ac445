"""simplenet_jax.evaluation.scoring: per-image scores against float64 references, means and worst cases of
hand-built results."""

import statistics

import jax.numpy as jnp
import numpy as np
import pytest

from simplenet_jax.evaluation import realblur
from simplenet_jax.evaluation import scoring
from test_metrics import matlab_ssim_scipy
from test_metrics import python_ssim_skimage

SSIM_REFERENCES = {"python": python_ssim_skimage, "matlab": matlab_ssim_scipy}


def _psnr(a, b):
  return 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def _colour_shift(a, b):
  return np.abs(a.astype(np.float64).mean(axis=(0, 1)) - b.astype(np.float64).mean(axis=(0, 1))).max()


def _batch(seed=0, n=3, h=19, w=23):
  """uint8 blur, output, sharp [n, h, w, 3]: the output nearer the sharp image than the blur, a colour cast."""
  rng = np.random.default_rng(seed)
  sharp = rng.integers(0, 256, (n, h, w, 3))
  blur = np.clip(sharp + rng.integers(-70, 71, sharp.shape), 0, 255)
  output = np.clip(sharp + rng.integers(-20, 21, sharp.shape) + rng.integers(-6, 7, (n, 1, 1, 3)), 0, 255)
  return tuple(x.astype(np.uint8) for x in (blur, output, sharp))


def test_batch_scores_match_float64_references():
  blur, output, sharp = _batch()
  scores = scoring.batch_scores(jnp.asarray(blur), jnp.asarray(output), jnp.asarray(sharp))
  assert set(scores) == {"psnr", "input_psnr", "colour_shift", "input_colour_shift", "ssim_matlab",
                         "input_ssim_matlab", "ssim_python", "input_ssim_python"}
  for i in range(len(sharp)):
    for prefix, image in (("", output[i]), ("input_", blur[i])):
      assert float(scores[prefix + "psnr"][i]) == pytest.approx(_psnr(image, sharp[i]), abs=1e-5)
      assert float(scores[prefix + "colour_shift"][i]) == pytest.approx(_colour_shift(image, sharp[i]), abs=1e-4)
      for convention, reference in SSIM_REFERENCES.items():
        assert float(scores[f"{prefix}ssim_{convention}"][i]) == pytest.approx(reference(image, sharp[i]), abs=1e-6)
  assert np.all(np.asarray(scores["psnr"]) > np.asarray(scores["input_psnr"]))  # the pairs differ per image
  assert float(np.asarray(scores["colour_shift"]).min()) > 0.5


def test_batch_scores_computes_only_the_conventions_asked_for():
  blur, output, sharp = _batch(n=1, h=45, w=53)  # the shape and conventions of the aligned test: one program
  scores = scoring.batch_scores(jnp.asarray(blur), jnp.asarray(output), jnp.asarray(sharp), ("python",))
  assert set(scores) == {"psnr", "input_psnr", "colour_shift", "input_colour_shift", "ssim_python",
                         "input_ssim_python"}


def test_score_gives_one_result_per_image_in_order():
  blur, output, sharp = _batch()
  names = ["b/000007", "a/000002", "c/000001"]  # not sorted: the order is the batch's
  results = scoring.score(names, blur, output, sharp, seconds=0.25)
  assert [r.name for r in results] == names
  for r, b, o, s in zip(results, blur, output, sharp):
    assert isinstance(r.psnr, float) and isinstance(r.ssim["python"], float)
    assert r.seconds == 0.25 and r.aligned is None and not r.unchanged
    assert r.psnr == pytest.approx(_psnr(o, s), abs=1e-5) and r.input_psnr == pytest.approx(_psnr(b, s), abs=1e-5)
    assert r.colour_shift == pytest.approx(_colour_shift(o, s), abs=1e-4)
    assert r.input_colour_shift == pytest.approx(_colour_shift(b, s), abs=1e-4)
    assert set(r.ssim) == set(r.input_ssim) == {"matlab", "python"}
    for convention, reference in SSIM_REFERENCES.items():
      assert r.ssim[convention] == pytest.approx(reference(o, s), abs=1e-6)
      assert r.input_ssim[convention] == pytest.approx(reference(b, s), abs=1e-6)


def test_score_with_realblurs_protocol_aligns_output_and_input_each_to_the_sharp_image():
  """An output shifted by a pixel (aligned, it is nearly perfect) and a noisy input, on a smooth texture."""
  rng = np.random.default_rng(1)
  texture = np.cumsum(np.cumsum(rng.normal(size=(49, 57, 3)), axis=0), axis=1)
  texture = np.round(255 * (texture - texture.min()) / np.ptp(texture)).astype(np.uint8)
  sharp, output = texture[2:-2, 2:-2], texture[3:-1, 2:-2]  # 45×53, one row down
  blur = np.clip(sharp + rng.integers(-30, 31, sharp.shape), 0, 255).astype(np.uint8)
  (result,) = scoring.score(["s/1"], blur[None], output[None], sharp[None], 0.0, conventions=("python",),
                            aligned=True)
  assert set(result.aligned) == {"psnr", "ssim", "input_psnr", "input_ssim"}
  assert (result.aligned["psnr"], result.aligned["ssim"]) == pytest.approx(realblur.aligned_psnr_ssim(output, sharp))
  assert (result.aligned["input_psnr"], result.aligned["input_ssim"]) == pytest.approx(
      realblur.aligned_psnr_ssim(blur, sharp))
  assert result.aligned["psnr"] > result.psnr + 5  # the shift is undone


def _result(rng, name, aligned):
  return scoring.ImageResult(
      name=name, input_psnr=rng.uniform(20, 30), input_ssim={"matlab": rng.uniform(), "python": rng.uniform()},
      psnr=rng.uniform(20, 35), ssim={"matlab": rng.uniform(), "python": rng.uniform()}, seconds=rng.uniform(),
      colour_shift=rng.uniform(0, 4), input_colour_shift=rng.uniform(0, 4),
      aligned={k: rng.uniform() for k in ("psnr", "ssim", "input_psnr", "input_ssim")} if aligned else None)


@pytest.mark.parametrize("aligned", [False, True])
def test_mean_metrics_are_the_means_of_each_field(aligned):
  rng = np.random.default_rng(2)
  results = [_result(rng, f"s/{i}", aligned) for i in range(7)]
  means = scoring.mean_metrics(results)
  expected = {key: statistics.fmean(getattr(r, key) for r in results)
              for key in ("psnr", "input_psnr", "colour_shift", "input_colour_shift")}
  for c in ("matlab", "python"):
    expected[f"ssim_{c}"] = statistics.fmean(r.ssim[c] for r in results)
    expected[f"input_ssim_{c}"] = statistics.fmean(r.input_ssim[c] for r in results)
  if aligned:
    for key in ("psnr", "ssim", "input_psnr", "input_ssim"):
      expected[f"{key}_aligned"] = statistics.fmean(r.aligned[key] for r in results)
  assert means.keys() == expected.keys()
  for key, value in expected.items():
    assert isinstance(means[key], float) and means[key] == pytest.approx(value, rel=1e-12), key
  assert scoring.mean_metrics([]) == {}


def test_an_output_equal_to_its_input_counts_as_unchanged_and_one_level_off_does_not():
  """What the demo's gate does to an image it calls sharp: its output is its input, byte for byte."""
  blur, output, sharp = _batch()
  output[0] = blur[0]
  output[1] = blur[1]
  output[1, 3, 4, 2] = blur[1, 3, 4, 2] ^ 1  # one level in one channel of one pixel
  results = scoring.score(["a/1", "a/2", "a/3"], blur, output, sharp, seconds=0.0)
  assert [r.unchanged for r in results] == [True, False, False]
  assert results[0].psnr == pytest.approx(results[0].input_psnr, abs=1e-6)
  assert scoring.worst_cases(results)["unchanged"] == 1


def test_worst_cases_are_the_lowest_gain_and_the_largest_excess_shift():
  rng = np.random.default_rng(3)
  results = [_result(rng, f"s/{i}", False) for i in range(9)]
  for r in results[2:5]:
    r.unchanged = True
  gains = sorted((r.psnr - r.input_psnr, r.name) for r in results)
  excesses = sorted((r.colour_shift - r.input_colour_shift, r.name) for r in results)
  worst = scoring.worst_cases(results)
  assert worst == {"worst_psnr_gain": pytest.approx(gains[0][0], abs=1e-12),
                   "worst_colour_shift_excess": pytest.approx(excesses[-1][0], abs=1e-12), "unchanged": 3}
  assert gains[0][0] < 0 < gains[-1][0] and excesses[0][0] < 0 < excesses[-1][0]  # both signs offered
  assert scoring.worst_cases([]) == {}
