"""eval.py / simplenet_jax.evaluate: files that equal an independent recomputation, padding, bad input."""

import csv
import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image
from skimage.metrics import structural_similarity

from simplenet_jax import evaluate

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture()
def workdir(trained_workdir):
  return trained_workdir


def _matlab_ssim(a, b):
  a, b = a.astype(np.float64), b.astype(np.float64)
  blur = lambda v: scipy.ndimage.gaussian_filter(v, sigma=1.5, mode="nearest", truncate=5 / 1.5)
  ma, mb = blur(a), blur(b)
  va, vb, cov = blur(a * a) - ma ** 2, blur(b * b) - mb ** 2, blur(a * b) - ma * mb
  c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
  return np.mean((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))


def _psnr(a, b):
  return 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))


def _eval(*args):
  return subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], capture_output=True, text=True,
                        timeout=600, cwd=ROOT)


def test_results_equal_an_independent_recomputation_from_the_saved_pngs(workdir, data_root, tmp_path):
  out = tmp_path / "eval"
  run = _eval("--workdir", str(workdir), "--data", str(data_root / "test"), "--out", str(out), "--save-images")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "PSNR" in run.stdout and "(matlab convention)" in run.stdout and "(python convention)" in run.stdout
  rows = list(csv.DictReader(open(out / "results.csv")))
  assert len(rows) == 2
  for row in rows:
    stem = pathlib.Path(data_root / "test" / row["scene"])
    sharp = np.asarray(Image.open(stem / "sharp" / f"{row['name']}.png"))
    blur = np.asarray(Image.open(stem / "blur" / f"{row['name']}.png"))
    output = np.asarray(Image.open(out / "images" / row["scene"] / f"{row['name']}.png"))
    assert output.shape == sharp.shape == (37, 45, 3)  # odd size: padded to 40×48 and cropped back
    assert not np.array_equal(output, blur)
    assert float(row["input_psnr"]) == pytest.approx(_psnr(blur, sharp), abs=1e-5)
    assert float(row["psnr"]) == pytest.approx(_psnr(output, sharp), abs=1e-5)
    assert float(row["ssim_matlab"]) == pytest.approx(_matlab_ssim(output, sharp), abs=1e-6)
    assert float(row["ssim_python"]) == pytest.approx(structural_similarity(
        output, sharp, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255), abs=1e-6)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows]), abs=1e-5)
  assert summary["checkpoint_step"] == 4 and summary["images"] == 2


def test_padding_round_trips_odd_sizes_and_batches_equal_singles():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(2, 37, 53, 3)), jnp.float32)
  shapes = []

  def fake_net(x):  # a size-preserving, position-dependent "network"
    shapes.append(x.shape)
    return x * 0.5 + jnp.arange(x.shape[2])[None, None, :, None] / 100

  out = evaluate.deblur(fake_net, images)
  assert out.shape == images.shape and shapes[-1] == (2, 40, 56, 3)
  singles = [evaluate.deblur(fake_net, images[i:i + 1])[0] for i in range(2)]
  np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.stack(singles)))
  np.testing.assert_allclose(np.asarray(out), np.asarray(images * 0.5 + jnp.arange(53)[None, None, :, None] / 100),
                             rtol=1e-6)


def test_workdir_without_checkpoint_is_one_sentence(tmp_path):
  run = _eval("--workdir", str(tmp_path))
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert f"error: workdir {tmp_path} has no checkpoint in {tmp_path.resolve()}/checkpoints" in run.stderr


def test_missing_checkpoint_step_is_one_sentence(workdir):
  run = _eval("--workdir", str(workdir), "--checkpoint", "999")
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert f"checkpoint '999' is not in {workdir}; use latest, best or one of the saved steps" in run.stderr


def test_data_folder_without_pairs_is_one_sentence(workdir, tmp_path):
  (tmp_path / "test").mkdir()
  run = _eval("--workdir", str(workdir), "--data", str(tmp_path))
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert run.stderr.startswith("error: ") and str(tmp_path) in run.stderr
