"""eval.py / simplenet_jax.evaluate: files that equal an independent recomputation, padding, bad input."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image
from skimage.metrics import structural_similarity

from simplenet_jax import inference
from simplenet_jax.data import catalogue
from simplenet_jax.data import pipeline
from simplenet_jax.evaluation import loop
from simplenet_jax.evaluation import reports
from test_layouts import make_realblur

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture()
def workdir(workdir_copy):
  return workdir_copy  # evaluations write into WORKDIR/eval by default


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


@pytest.mark.slow
def test_results_equal_an_independent_recomputation_from_the_saved_pngs(workdir, data_root, tmp_path):
  out = tmp_path / "eval"
  run = _eval("--workdir", str(workdir), "--data", str(data_root / "test"), "--out", str(out), "--save-images",
              "--batch-size", "2", "--worst-best", "1")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "PSNR" in run.stdout and "(matlab convention)" in run.stdout and "(python convention)" in run.stdout
  rows = list(csv.DictReader(open(out / "results.csv")))
  assert len(rows) == 2
  # worst/ and best/: blur | output | sharp of the lowest and highest PSNR gain, drawn from the saved files
  gains = {f"{r['scene']}_{r['name']}": float(r["psnr"]) - float(r["input_psnr"]) for r in rows}
  for folder, pick in (("worst", min), ("best", max)):
    (picture,) = (out / folder).iterdir()
    scene_name = pick(gains, key=gains.get)
    assert picture.name == f"01_{scene_name}.png"
    scene, name = scene_name.split("_", 1)
    parts = [np.asarray(Image.open(d / f"{name}.png")) for d in
             (data_root / "test" / scene / "blur", out / "images" / scene, data_root / "test" / scene / "sharp")]
    np.testing.assert_array_equal(np.asarray(Image.open(picture)), np.concatenate(parts, axis=1))
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
    for key, image in (("colour_shift", output), ("input_colour_shift", blur)):
      offsets = image.astype(np.float64).mean(axis=(0, 1)) - sharp.mean(axis=(0, 1))
      assert float(row[key]) == pytest.approx(np.abs(offsets).max(), abs=1e-3)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["psnr"] == pytest.approx(np.mean([float(r["psnr"]) for r in rows]), abs=1e-5)
  assert summary["worst_psnr_gain"] == pytest.approx(min(gains.values()), abs=1e-5)
  excess = [float(r["colour_shift"]) - float(r["input_colour_shift"]) for r in rows]
  assert summary["worst_colour_shift_excess"] == pytest.approx(max(excess), abs=1e-3)
  assert f"worst image: PSNR {summary['worst_psnr_gain']:+.2f} dB" in run.stdout
  assert summary["checkpoint_step"] == 4 and summary["images"] == 2 and summary["batch_size"] == 2


def test_padding_round_trips_odd_sizes_and_batches_equal_singles():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(2, 37, 53, 3)), jnp.float32)
  shapes = []

  def fake_net(x):  # a size-preserving, position-dependent "network"
    shapes.append(x.shape)
    return x * 0.5 + jnp.arange(x.shape[2])[None, None, :, None] / 100

  out = inference.at_any_size(fake_net)(images)
  assert out.shape == images.shape and shapes[-1] == (2, 40, 56, 3)
  singles = [inference.at_any_size(fake_net)(images[i:i + 1])[0] for i in range(2)]
  np.testing.assert_array_equal(np.asarray(out), np.asarray(jnp.stack(singles)))
  np.testing.assert_allclose(np.asarray(out), np.asarray(images * 0.5 + jnp.arange(53)[None, None, :, None] / 100),
                             rtol=1e-6)


@pytest.mark.slow
def test_workdir_without_checkpoint_is_one_sentence(tmp_path):
  run = _eval("--workdir", str(tmp_path))
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert f"error: workdir {tmp_path} has no checkpoint in {tmp_path.resolve()}/checkpoints" in run.stderr


@pytest.mark.slow
def test_missing_checkpoint_step_is_one_sentence(workdir):
  run = _eval("--workdir", str(workdir), "--checkpoint", "999")
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert f"checkpoint '999' is not in {workdir}; use latest, best or one of the saved steps" in run.stderr


@pytest.mark.slow
def test_data_folder_without_pairs_is_one_sentence(workdir, tmp_path):
  (tmp_path / "test").mkdir()
  run = _eval("--workdir", str(workdir), "--data", str(tmp_path))
  assert run.returncode == 1 and "Traceback" not in run.stderr
  assert run.stderr.startswith("error: ") and str(tmp_path) in run.stderr


def _pairs(shapes, seed=0):
  rng = np.random.default_rng(seed)
  return [{"blur": rng.uniform(size=(*shape, 3)).astype(np.float32),
           "sharp": rng.uniform(size=(*shape, 3)).astype(np.float32), "name": f"s/{i:03d}"}
          for i, shape in enumerate(shapes)]


def test_batches_compile_once_per_shape_and_equal_one_at_a_time():
  traces = []

  @jax.jit
  def fake_net(x):  # position-dependent, so a mixed-up batch would show
    traces.append(x.shape)  # runs only when jit traces (compiles) a new shape
    return x * 0.5 + jnp.arange(x.shape[2])[None, None, :, None] / 100

  pairs = _pairs([(13, 17)] * 3 + [(12, 16)] + [(13, 17)] * 2)
  seen = []
  batched = loop.evaluate_pairs(inference.at_any_size(fake_net), pairs, conventions=(),  # SSIM does not depend on batching
                                    on_image=lambda p, o, r: seen.append((p["name"], r.name)), batch_size=2)
  # runs [A A] [A] [B] [A A]; short ones are filled up to 2, so one trace per padded size
  assert traces == [(2, 16, 20, 3), (2, 12, 16, 3)]
  singles = loop.evaluate_pairs(inference.at_any_size(fake_net), pairs, conventions=(), batch_size=1)
  assert [r.name for r in batched] == [r.name for r in singles] == [p["name"] for p in pairs]
  assert seen == [(p["name"], p["name"]) for p in pairs]
  for b, s in zip(batched, singles):
    assert (b.psnr, b.ssim, b.input_psnr, b.input_ssim) == (s.psnr, s.ssim, s.input_psnr, s.input_ssim)
    assert b.seconds > 0


@pytest.mark.parametrize("batch_size", [2, 3])  # 3: the batch of two is filled up with a copy
def test_trained_model_in_batches_scores_as_an_independent_per_image_computation(workdir, data_root, batch_size):
  config, network, _ = inference.load_model(workdir)
  config.data.root = str(data_root)
  pairs = list(pipeline.eval_dataset(catalogue.open_split(config.data, "test"), config.data))
  results = loop.evaluate_pairs(inference.make_deblur_fn(network), pairs, batch_size=batch_size)
  assert [r.name for r in results] == [p["name"] for p in pairs] and len(pairs) == 2
  for pair, result in zip(pairs, results):
    blur, sharp = np.asarray(pair["blur"]), np.asarray(pair["sharp"])
    h, w = blur.shape[:2]  # one image alone: NumPy reflect padding, the network, the crop, PNG rounding
    padded = np.pad(blur.astype(np.float32) / 255, ((0, -h % 4), (0, -w % 4), (0, 0)), mode="reflect")
    output = np.asarray(network(jnp.asarray(padded[None])))[0, :h, :w]
    output = np.round(np.clip(output, 0, 1) * 255).astype(np.uint8)
    assert not np.array_equal(output, blur)
    assert result.input_psnr == pytest.approx(_psnr(blur, sharp), abs=1e-5)
    assert result.psnr == pytest.approx(_psnr(output, sharp), abs=1e-5)
    assert result.ssim["matlab"] == pytest.approx(_matlab_ssim(output, sharp), abs=1e-6)
    assert result.ssim["python"] == pytest.approx(structural_similarity(
        output, sharp, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255), abs=1e-6)


def test_extremes_keep_the_lowest_and_highest_few_and_the_earliest_of_ties():
  scores = np.random.default_rng(0).permutation(20).astype(float).tolist() + [0.0, 19.0]
  extremes = reports.Extremes(3)
  for i, value in enumerate(scores):
    if extremes.wants(value):
      extremes.add(value, i)
  assert [scores[i] for i in extremes.lowest()] == [0, 0, 1] and [scores[i] for i in extremes.highest()] == [19, 19, 18]
  assert extremes.lowest()[:2] == [scores.index(0.0), 20] and extremes.highest()[:2] == [scores.index(19.0), 21]
  assert not extremes.wants(10.0)


def test_side_by_side_rounds_floats_like_a_png():
  blur = np.full((5, 4, 3), 0.5, np.float32)
  picture = reports.side_by_side(blur, np.zeros((5, 4, 3), np.uint8), np.ones((5, 4, 3), np.float32))
  assert picture.dtype == np.uint8 and picture.shape == (5, 12, 3)
  assert picture[0, 0, 0] == 128 and picture[0, 4, 0] == 0 and picture[0, 8, 0] == 255


def _error_line(run) -> str:
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-3000:]
  (line,) = [l for l in run.stderr.splitlines() if l.startswith("error: ")]
  return line


@pytest.mark.slow
def test_damaged_checkpoint_is_one_sentence(workdir, tmp_path):
  copy = workdir  # a copy already
  damaged = [f for f in (copy / "checkpoints" / "4" / "state").rglob("*") if f.is_file() and f.parent.name == "d"]
  assert damaged  # the OCDBT data files of the parameters
  for f in damaged:
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
  line = _error_line(_eval("--workdir", str(copy), "--out", str(tmp_path / "eval")))
  assert line.startswith(f"error: the checkpoint of step 4 in {copy} is damaged (incomplete or corrupt: ")
  assert line.endswith("); pass --checkpoint with one of the intact steps [2].")


_UNRETRIEVED = """
import asyncio, gc, logging, sys
from simplenet_jax import checkpointing
logging.basicConfig()  # a handler holding the real stderr, as the libraries eval.py imports install

async def read(fail):
  if fail:
    raise ValueError("a read failed")

def restore(fail):  # a task left with its exception unretrieved, as a failed tensorstore read leaves one
  loop = asyncio.new_event_loop()
  task = loop.create_task(read(fail))
  loop.run_until_complete(asyncio.sleep(0))
  loop.close()
  if fail:
    raise ValueError("the restore failed")
  return task

with checkpointing._failures_settled(quiet_seconds=0.01):
  restore(False)
try:  # after a successful restore, asyncio's records are shown as ever
  restore(True)
except ValueError:
  pass
gc.collect()
print("restored", file=sys.stderr)
unretrieved = [None]
try:
  with checkpointing._failures_settled(quiet_seconds=0.01):
    restore(True)
except ValueError as error:
  unretrieved[0] = error.__traceback__  # keeps the task alive until after the sentence, as eval.py does
  print("error: " + str(error), file=sys.stderr)
del unretrieved
gc.collect()
"""


@pytest.mark.slow
def test_unretrieved_read_errors_after_a_failed_restore_stay_quiet():
  """CI once saw eval.py's sentence followed by asyncio's "Task exception was never retrieved" traceback."""
  run = subprocess.run([sys.executable, "-c", _UNRETRIEVED], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300, check=False)
  assert run.returncode == 0, run.stderr
  before, after = run.stderr.split("restored\n")
  assert "Task exception was never retrieved" in before and "ValueError: a read failed" in before, run.stderr
  assert after.splitlines() == ["error: the restore failed"], run.stderr


@pytest.mark.slow
@pytest.mark.parametrize("damage, message", [
    ("unpaired", "blurred images in {test} have no sharp image of the same name"),
    ("size_mismatch", "Pair size mismatch: {blur} is"),
    ("corrupt_png", "Cannot read image {blur} ("),
])
def test_bad_data_folder_is_one_sentence(workdir, data_root, tmp_path, damage, message):
  test = tmp_path / "data" / "test"
  shutil.copytree(data_root / "test", test)
  blur = sorted((test / "scene0" / "blur").iterdir())[0]
  sharp = test / "scene0" / "sharp" / blur.name
  if damage == "unpaired":
    sharp.unlink()
  elif damage == "size_mismatch":
    Image.fromarray(np.asarray(Image.open(sharp))[:-1]).save(sharp)
  else:
    blur.write_bytes(blur.read_bytes()[:len(blur.read_bytes()) // 2])
  line = _error_line(_eval("--workdir", str(workdir), "--data", str(test), "--out", str(tmp_path / "eval")))
  assert message.format(test=test, blur=blur) in line
  assert not (tmp_path / "eval").exists()  # nothing written before the data are known to be good


@pytest.mark.slow
def test_unwritable_output_folder_is_one_sentence(workdir, data_root, tmp_path):
  parent = tmp_path / "read_only"
  parent.mkdir()
  parent.chmod(0o500)
  try:
    if os.access(parent, os.W_OK):  # root writes anyway; a regular file as parent stops everyone
      parent = tmp_path / "a_file"
      parent.write_text("")
    out = parent / "eval"
    line = _error_line(_eval("--workdir", str(workdir), "--data", str(data_root / "test"), "--out", str(out)))
    assert line.startswith(f"error: cannot write to the output folder {out} (")
    assert line.endswith("); pass --out with a writable folder.")
  finally:
    (tmp_path / "read_only").chmod(0o700)


@pytest.mark.slow
def test_eval_cli_with_ensemble_and_tiles_stays_close_to_the_plain_model(workdir, data_root, tmp_path):
  runs = {}
  for name, extra in (("plain", []), ("ensemble_tiled", ["--ensemble", "--tile", "24", "--overlap", "8"])):
    run = _eval("--workdir", str(workdir), "--data", str(data_root), "--out", str(tmp_path / name), *extra)
    assert run.returncode == 0, run.stderr[-3000:]
    runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
  assert runs["ensemble_tiled"]["ensemble"] is True and runs["ensemble_tiled"]["tile"] == 24
  assert runs["ensemble_tiled"]["psnr"] != runs["plain"]["psnr"]  # it did run differently
  assert abs(runs["ensemble_tiled"]["psnr"] - runs["plain"]["psnr"]) < 1.0


def _realblur_tree(root: pathlib.Path) -> pathlib.Path:
  """RealBlur-J's layout with photo-like pairs: each blurred image is its sharp image smoothed and shifted by
  a pixel or two, as RealBlur's two cameras leave them (noise images would give ECC nothing to align)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  photo = skimage.data.astronaut()

  def pair(i):
    top = 20 + 40 * i
    shifted = photo[top + 1:top + 62, 102:177].astype(float)
    blur = np.clip(np.round(scipy.ndimage.uniform_filter(shifted, size=(1, 5, 1))), 0, 255).astype(np.uint8)
    return photo[top:top + 61, 100:175], blur

  for split in ("train", "test"):
    make_realblur(root, split, num_pairs=2, pair=pair)
  return root


@pytest.mark.slow
def test_realblur_j_headline_is_its_aligned_protocol_beside_the_unaligned_scores(workdir, tmp_path):
  from simplenet_jax.evaluation import realblur  # pylint: disable=g-import-not-at-top
  root = _realblur_tree(tmp_path / "RealBlur")
  out = tmp_path / "eval"
  run = _eval("--workdir", str(workdir), "--data", str(root), "--dataset", "realblur_j", "--out", str(out),
              "--save-images", "--batch-size", "2")
  assert run.returncode == 0, run.stderr[-3000:]
  assert "RealBlur protocol (ECC-aligned, valid region): PSNR" in run.stdout
  assert "unaligned PSNR" in run.stdout and "unaligned SSIM (matlab convention)" in run.stdout
  summary = json.loads((out / "summary.json").read_text())
  assert summary["headline"] == "aligned" and summary["dataset"] == "realblur_j"
  rows = list(csv.DictReader(open(out / "results.csv")))
  assert len(rows) == 2
  for row in rows:  # each row's aligned scores are those of its own output and its own pair
    scene = root / "RealBlur-J_ECC_IMCORR_centroid_itensity_ref" / row["scene"]
    index = row["name"].split("_")[-1]
    sharp = np.asarray(Image.open(scene / "gt" / f"gt_{index}.png"))
    blur = np.asarray(Image.open(scene / "blur" / f"blur_{index}.png"))
    output = np.asarray(Image.open(out / "images" / row["scene"] / f"{row['name']}.png"))
    psnr, ssim = realblur.aligned_psnr_ssim(output, sharp)
    input_psnr, _ = realblur.aligned_psnr_ssim(blur, sharp)
    assert float(row["psnr_aligned"]) == pytest.approx(psnr, abs=1e-6)
    assert float(row["ssim_aligned"]) == pytest.approx(ssim, abs=1e-7)
    assert float(row["input_psnr_aligned"]) == pytest.approx(input_psnr, abs=1e-6)
    assert float(row["input_psnr_aligned"]) > float(row["input_psnr"]) + 3  # the shift is undone
  assert summary["psnr_aligned"] == pytest.approx(np.mean([float(r["psnr_aligned"]) for r in rows]), abs=1e-6)

  off = _eval("--workdir", str(workdir), "--data", str(root), "--dataset", "realblur_j", "--out",
              str(tmp_path / "off"), "--align", "off")
  assert off.returncode == 0, off.stderr[-3000:]
  summary = json.loads((tmp_path / "off" / "summary.json").read_text())
  assert summary["headline"] == "unaligned" and "psnr_aligned" not in summary
  assert "RealBlur protocol" not in off.stdout


def test_other_data_never_replaces_the_models_own_results_and_an_out_is_kept_unless_overwrite(workdir, data_root,
                                                                                               tmp_path):
  own = loop.evaluate_workdir(workdir, batch_size=256)  # 2 test images: the batch is 2, not 256
  assert own["batch_size"] == 2
  step = own["checkpoint_step"]
  other = tmp_path / "mine"
  shutil.copytree(data_root / "test", other / "test")
  loop.evaluate_workdir(workdir, data_root=str(other))
  assert (workdir / "eval" / f"step_{step}" / "results.csv").exists()
  assert (workdir / "eval" / f"step_{step}-mine" / "results.csv").exists()

  out = tmp_path / "out"
  loop.evaluate_workdir(workdir, out=out, save_images=True, worst_best=1)
  (out / "images" / "stale.png").write_bytes(b"from another evaluation")
  with pytest.raises(ValueError, match=r"^--out .* holds an earlier evaluation; pass --overwrite to replace it"):
    loop.evaluate_workdir(workdir, out=out)
  loop.evaluate_workdir(workdir, out=out, overwrite=True)
  assert (out / "results.csv").exists() and not (out / "images").exists() and not (out / "worst").exists()


def test_data_on_read_only_media_is_built_in_the_workdir(workdir, data_root, tmp_path, monkeypatch):
  media = tmp_path / "media"
  shutil.copytree(data_root / "test", media / "pairs" / "test")
  real_access = os.access
  monkeypatch.setattr(os, "access", lambda path, mode: False if os.fspath(path) == str(media) and mode == os.W_OK
                      else real_access(path, mode))
  summary = loop.evaluate_workdir(workdir, data_root=str(media / "pairs"))
  assert summary["images"] == 2
  assert not (media / "pairs_tfds").exists() and (workdir / "data" / "pairs_tfds").is_dir()


def test_a_synthesized_sets_bands_are_in_the_summary_and_the_printout(workdir, data_root, tmp_path):
  """A meta.json beside the pairs (as `synthesize` writes) gives each blur band's gain, from results.csv."""
  from simplenet_jax.evaluation import reports  # pylint: disable=g-import-not-at-top
  shutil.copytree(data_root / "test", tmp_path / "set" / "test")
  names = sorted(f"{p.parent.parent.name}/{p.stem}" for p in (tmp_path / "set" / "test").glob("*/blur/*.png"))
  assert len(names) == 2
  pairs = [{"split": "test", "scene": n.split("/")[0], "frame": n.split("/")[1] + ".png",
            "trajectory_length_px": length} for n, length in zip(names, (0.5, 22.0))]
  (tmp_path / "set" / "meta.json").write_text(json.dumps({"pairs": pairs}))
  summary = loop.evaluate_workdir(workdir, data_root=str(tmp_path / "set"))
  rows = {f"{r['scene']}/{r['name']}": r for r in csv.DictReader(open(pathlib.Path(summary["out"]) / "results.csv"))}
  assert list(summary["bands"]) == ["nearly sharp", "heavy"]
  for band, name in zip(("nearly sharp", "heavy"), names):
    gain = float(rows[name]["psnr"]) - float(rows[name]["input_psnr"])
    assert summary["bands"][band]["images"] == 1
    assert summary["bands"][band]["gain"] == pytest.approx(gain, abs=1e-5)
  text = reports.summary_text(summary)
  assert f"nearly sharp (1 images, input {float(rows[names[0]]['input_psnr']):.2f} dB): PSNR gain " in text
  assert loop.evaluate_workdir(workdir, data_root=str(data_root))["bands"] == {}  # no meta.json: no bands


def test_no_gate_adds_the_residual_to_the_images_the_gate_left_alone(workdir, data_root, monkeypatch):
  """A gated network whose gate is shut on every image (its gate as initialised, all zeros) gives back each
  input byte for byte; `gate=False` (`eval.py --no-gate`) adds its residual to each, as `residual_and_gate`
  computes it, and writes beside the gated results instead of over them."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from simplenet_jax.models import SimpleNet  # pylint: disable=g-import-not-at-top
  read = inference.load_parameters
  models = []

  def gated_parameters(*args, **kwargs):  # the smoke workdir's config, with an untrained gated network
    config, _, _, step = read(*args, **kwargs)
    config.model.residual_gate, config.model.zero_init_tail = True, False
    models.append(SimpleNet.from_config(inference.any_size_fields(config.model), rngs=nnx.Rngs(5)))
    return (config, *nnx.split(models[-1]), step)

  monkeypatch.setattr(inference, "load_parameters", gated_parameters)
  gated = loop.evaluate_workdir(workdir, save_images=True)
  assert gated["unchanged"] == gated["images"] == 2 and gated["psnr"] == pytest.approx(gated["input_psnr"])
  ungated = loop.evaluate_workdir(workdir, save_images=True, gate=False)
  assert ungated["out"] == gated["out"] + "-no-gate" and not ungated["gate"] and gated["gate"]
  assert ungated["unchanged"] == 0 and abs(ungated["psnr"] - ungated["input_psnr"]) > 0.01
  for blur_file in sorted(data_root.glob("test/*/blur/*.png")):
    blur = np.asarray(Image.open(blur_file), np.float32) / 255
    padded, (height, width) = inference.pad_to_multiple(jnp.asarray(blur)[None])
    residual, logit = models[-1].residual_and_gate(padded)
    assert float(logit[0, 0]) == 0.0  # the gate as initialised: shut (`is_blurred` needs a positive logit)
    expected = np.clip(np.round(np.asarray(padded + residual)[0, :height, :width] * 255), 0, 255)
    name = f"{blur_file.parent.parent.name}/{blur_file.stem}.png"
    got = np.asarray(Image.open(pathlib.Path(ungated["out"]) / "images" / name), np.float32)
    assert np.abs(got - expected).max() <= 1 and np.abs(got - blur * 255).max() > 1  # rounding at a half level
    np.testing.assert_array_equal(np.asarray(Image.open(pathlib.Path(gated["out"]) / "images" / name)),
                                  np.asarray(Image.open(blur_file)))
