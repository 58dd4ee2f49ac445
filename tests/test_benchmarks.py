"""The benchmark scripts run and write the JSON they promise (tiny shapes; torch not needed)."""

import functools
import importlib
import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_deform_conv_benchmark_writes_rows(tmp_path):
  # Its own process, as a user runs it: without --no-torch the script imports torchvision, which must come
  # before TensorFlow (benchmarks/common.py, import_torch), so its start is part of what this checks.
  out = tmp_path / "deform_conv.json"
  result = subprocess.run(
      [sys.executable, str(ROOT / "benchmarks" / "deform_conv.py"), "--no-torch", "--repeats", "1",
       "--shapes", "1x8x12x4", "--json", str(out)], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "dcn f+b" in result.stdout
  payload = json.loads(out.read_text())
  (row,) = payload["rows"]
  assert row["shape"] == "1×8×12×4" and payload["benchmark"] == "deform_conv"
  for key in ("conv_fwd_ms", "deform_fwd_bwd_ms", "simple_fwd_bwd_ms", "fwd_bwd_ratio"):
    assert row[key] > 0, key


def _run_benchmark(capsys, script: str, *args: str) -> str:
  """Runs ``benchmarks/<script>``'s main(argv) in this process (what the command runs; a new JAX process per
  benchmark costs more than the smoke run itself) and returns what it printed."""
  sys.path.insert(0, str(ROOT / "benchmarks"))
  module = importlib.import_module(pathlib.Path(script).stem)
  capsys.readouterr()
  module.main(list(args))
  return capsys.readouterr().out


@pytest.mark.slow
def test_accelerator_benchmark_smoke_measures_every_workload(tmp_path):
  # Its own process: the script imports torch (benchmarks/model.py), which must come before TensorFlow.
  out = tmp_path / "accelerator.json"
  result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accelerator.py"), "--smoke", "--workers", "1",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "TFLOP/s" in result.stdout and "peak GiB" in result.stdout
  payload = json.loads(out.read_text())
  assert payload["benchmark"] == "accelerator" and payload["smoke"]
  rows = {(row["workload"], row["dtype"]): row for row in payload["rows"]}
  for dtype in ("float32", "bfloat16"):
    for workload in ("forward", "train step"):
      row = rows[(workload, dtype)]
      assert row["median_ms"] > 0 and row["gflop"] > 0 and row["tflops"] > 0 and row["compile_s"] > 0
  assert rows[("evaluation + metrics", "float32")]["per_s"] > 0
  assert rows[("input pipeline (1 workers)", "uint8→float32")]["per_s"] > 0
  assert set(payload["peak_flops"]) == {"bfloat16", "float32"}


@pytest.mark.slow
def test_memory_benchmark_smoke_reports_xla_memory_analysis(tmp_path, capsys):
  out = tmp_path / "memory.json"
  _run_benchmark(capsys, "memory.py", "--smoke", "--tile-bytes", "0", "4096", "--remat", "off", "--json", str(out))
  rows = json.loads(out.read_text())["rows"]
  assert [(r["workload"], r["tile_bytes"]) for r in rows] == [("train step", 0), ("forward", 0),
                                                              ("train step", 4096), ("forward", 4096)]
  assert all(r["total_gib"] >= r["temp_gib"] > 0 for r in rows)


@pytest.mark.slow
def test_input_pipeline_benchmark_smoke_measures_every_design(tmp_path, capsys):
  out = tmp_path / "input.json"
  stdout = _run_benchmark(capsys, "input_pipeline.py", "--smoke", "--json", str(out))
  payload = json.loads(out.read_text())
  assert payload["benchmark"] == "input_pipeline"
  designs = [row["design"].split(":")[1].split(",")[0].strip() for row in payload["rows"]]
  assert designs == ["PNG frames", "tiles", "subimages", "frames"]
  for row in payload["rows"]:
    assert row["cpu_ms_per_pair"] > 0 and row["pairs_per_s_0w"] > 0 and row["pairs_per_s_1w"] > 0
    assert row["disk_mb_per_pair"] > 0
  assert "CPU ms/pair" in stdout and "pairs/s 1w" in stdout


def test_ablation_variants_are_the_papers_tables_through_their_config_files():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import ablation  # pylint: disable=g-import-not-at-top
  expected = {"full": {}, "baseline1": {"use_dr": False}, "baseline2": {"global_context": "resblock"},
              "baseline3": {"use_pvb": False}, "nonlocal": {"global_context": "nonlocal"},
              "tgm_trm": {"global_context": "tgm_trm"}, "none": {"global_context": "none"},
              "lgcr_c": {"lgcr_softmax_axes": "c"}}
  assert {name: ablation.model_overrides(source) for name, source, _, _ in ablation.VARIANTS} == expected
  for name in ablation.VARIANT_NAMES:
    config = ablation.variant_config(name, 1, ablation.FULL, ROOT / "data")
    assert config.model.widths == (16, 32, 64) and config.seed == config.data.seed == 1
    assert config.num_train_steps == ablation.FULL.steps and config.data.crop_size == 64
    for key, value in expected[name].items():
      assert config.model[key] == value


@pytest.mark.slow
def test_global_context_effect_is_the_relative_change_of_the_features():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import ablation  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from simplenet_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top
  from simplenet_jax.models import SimpleNet  # pylint: disable=g-import-not-at-top

  class Doubling(nnx.Module):
    def __call__(self, x):
      return 3 * x  # |3x − x| / |x| = 2

  image = jnp.linspace(0, 1, 1 * 20 * 28 * 3).reshape(1, 20, 28, 3)
  model = SimpleNet(ModelConfig(widths=(4, 4, 4), global_context="none"), rngs=nnx.Rngs(0))
  assert float(ablation.global_context_effect(model, image)) == 0.0
  model.lgcr = Doubling()
  assert abs(float(ablation.global_context_effect(model, image)) - 2.0) < 1e-6


@pytest.mark.slow
def test_ablation_smoke_runs_resumes_and_reports(tmp_path, capsys, request):
  # In this process (main(argv) is what the command runs): three starts of a JAX process cost more than the runs.
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import ablation  # pylint: disable=g-import-not-at-top
  absl_logger = logging.getLogger("absl")
  request.addfinalizer(functools.partial(absl_logger.setLevel, absl_logger.level))  # main() quiets absl
  out = tmp_path / "ablation"
  args = ["--smoke", "--out", str(out), "--variants", "full", "none", "--seeds", "0"]
  assert ablation.main(args) == 0, capsys.readouterr().err[-3000:]
  capsys.readouterr()
  payload = json.loads((out / "results.json").read_text())
  results = {r["variant"]: r for r in payload["results"]}
  assert set(results) == {"full", "none"}
  for r in results.values():
    assert r["params"] > 0 and r["gflops_256"] > 0 and r["step_ms"] > 0
    assert 10 < r["eval"]["psnr"] < 60 and r["eval"]["images"] == 2
    assert r["curve"]["psnr"] and r["curve"]["loss"]
  assert results["none"]["global_context_effect"]["trained"]["on_crops"] == 0.0
  assert results["full"]["global_context_effect"]["trained"]["on_crops"] > 0.0
  assert results["full"]["params"] > results["none"]["params"]  # LGCR's weights
  markdown = (out / "results.md").read_text()
  assert "| SimpleNet (PVB + LGCR + DR) | 3 | 1 |" in markdown and "| Nothing in LGCR's slot | 5 | 1 |" in markdown
  assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

  # A finished run is skipped; one whose result is missing resumes from its checkpoint (no step retrained).
  (out / "runs" / "none_seed0" / "result.json").unlink()
  assert ablation.main(args) == 0
  assert "[1/2] full seed 0: done before, skipped" in capsys.readouterr().out
  redone = json.loads((out / "runs" / "none_seed0" / "result.json").read_text())
  assert redone["eval"]["psnr"] == results["none"]["eval"]["psnr"]

  assert ablation.main([*args, "--steps", "5"]) == 1
  assert f"error: {out} holds runs of another budget" in capsys.readouterr().err


def test_ablation_run_stopped_by_a_signal_is_not_recorded_as_finished(tmp_path, monkeypatch):
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import ablation  # pylint: disable=g-import-not-at-top
  calls = []

  def stopped_early(config, workdir):  # what train_and_evaluate returns after SIGTERM at step 2
    calls.append(workdir)
    return {"step": 2, "train": {}, "eval": {}}

  monkeypatch.setattr(ablation.train, "train_and_evaluate", stopped_early)
  monkeypatch.setattr(ablation.loop, "evaluate_workdir", lambda *a, **k: pytest.fail("evaluated a stopped run"))
  assert ablation.run_variant("full", 0, ablation.SMOKE, tmp_path, tmp_path / "data", []) is None
  assert calls and not (tmp_path / "runs" / "full_seed0" / "result.json").exists()


def test_ablation_curves_compare_the_same_seeds_and_steps():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import ablation  # pylint: disable=g-import-not-at-top
  steps = list(range(10, 110, 10))
  rise = [20 + 0.1 * i for i in range(len(steps))]

  def run(variant, seed, values, extra=()):
    points = sorted([*zip(steps, values), *extra])
    return {"variant": variant, "seed": seed, "curve": {"psnr": [list(p) for p in points]}}

  results = [run("full", 0, rise), run("full", 1, [v + 5 for v in rise]),  # seed 1: full only, left out
             run("baseline1", 0, [v + 0.25 for v in rise], extra=[(55, 99.0)])]  # stopped and resumed at 55
  assert ablation.common_seeds(results) == [0]
  lines = ablation.curves(results)
  assert lines["full"][0] == steps[4:]  # running mean of 5 log points, from the 5th
  np.testing.assert_allclose(lines["full"][1], [20.2 + 0.1 * i for i in range(6)])
  text = ablation.curve_table(results, points=3)
  assert "| step 50 | step 70 | step 100 |" in text and "| SimpleNet (PVB + LGCR + DR) | 20.20 | 20.40 | 20.70 |" in text
  assert "| Baseline1: no DR | +0.250 | +0.250 | +0.250 |" in text


@pytest.mark.slow
def test_video_benchmark_smoke_times_the_network_and_the_codec(tmp_path, capsys):
  out = tmp_path / "video.json"
  stdout = _run_benchmark(capsys, "video.py", "--smoke", "--json", str(out))
  (row,) = json.loads(out.read_text())["rows"]
  assert (row["model"], row["size"], row["frames"]) == ("demo", "64x36", 4)
  assert row["frames_per_s"] > 0 and 0 < row["codec_share"] < 1
  assert abs(row["minutes_per_video_second"] - 30 / row["frames_per_s"] / 60) < 1e-9
  assert "frames/s" in stdout and "codec share" in stdout


def _demo_limits():
  sys.path.insert(0, str(ROOT / "benchmarks"))
  import demo_limits  # pylint: disable=g-import-not-at-top
  return demo_limits


def test_demo_limits_oracle_keeps_the_nearly_sharp_band_and_opens_where_the_residual_helps():
  demo_limits = _demo_limits()
  gated = {("a", "000000"): 0.0, ("a", "000001"): 0.5, ("b", "000000"): 0.0, ("b", "000001"): 0.0}
  ungated = {("a", "000000"): -3.0, ("a", "000001"): 0.6, ("b", "000000"): 2.0, ("b", "000001"): -0.2}
  row = demo_limits.oracle_gain(gated, ungated, left_alone={("a", "000000"), ("b", "000000")})
  # by hand: gated (0 + 0.5 + 0 + 0) / 4; ungated (-3 + 0.6 + 2 - 0.2) / 4; perfect gate (0 + 0.6 + 0 + 0) / 4
  assert row == pytest.approx({"images": 4, "gated_db": 0.125, "ungated_db": -0.15, "oracle_db": 0.15})
  with pytest.raises(ValueError, match="different images"):
    demo_limits.oracle_gain(gated, {("a", "000000"): 1.0}, left_alone=set())


def test_demo_limits_oracle_rows_read_the_latest_gated_and_ungated_evaluations(tmp_path):
  demo_limits = _demo_limits()

  def write(folder, gains):
    (tmp_path / "eval" / folder).mkdir(parents=True)
    lines = ["scene,name,input_psnr,psnr"] + [f"{scene},{name},30.0,{30.0 + gain}"
                                              for (scene, name), gain in gains.items()]
    (tmp_path / "eval" / folder / "results.csv").write_text("\n".join(lines) + "\n")

  write("step_9", {("x", "000000"): 9.0})  # an older step, with no ungated twin: not read
  write("step_10", {("x", "000000"): 0.0})
  write("step_10-no-gate", {("x", "000000"): 1.0})
  write("step_10-independent", {("x", "000000"): 0.0, ("x", "000001"): 0.0})
  write("step_10-independent-no-gate", {("x", "000000"): 4.0, ("x", "000001"): 1.0})
  write("step_2-independent-no-gate", {("x", "000000"): 0.0, ("x", "000001"): 8.0})

  def meta(root, lengths):  # the bands come from each set's meta.json, as evaluation.bands reads them
    (tmp_path / root).mkdir()
    (tmp_path / root / "meta.json").write_text(json.dumps({"pairs": [
        {"split": "test", "scene": "x", "frame": f"{frame}.png", "trajectory_length_px": length}
        for frame, length in lengths.items()]}))
    return str(tmp_path / root)

  demo = meta("demo", {"000000": 0.5})  # nearly sharp too: left alone
  independent = meta("independent", {"000000": 0.8, "000001": 6.0})
  rows = {row["set"]: row for row in demo_limits.oracle_rows(tmp_path, demo, independent)}
  assert rows["demo split"]["oracle_db"] == 0.0
  rows = {row["set"]: row for row in demo_limits.oracle_rows(tmp_path, meta("mild", {"000000": 5.0}), independent)}
  assert rows["demo split"]["oracle_db"] == pytest.approx(1.0)  # the demo split has no nearly sharp band
  assert rows["independent"]["oracle_db"] == pytest.approx(0.5)  # frame 0 (nearly sharp) left alone
  assert rows["independent"]["ungated_db"] == pytest.approx(2.5)
  with pytest.raises(ValueError, match=r"has no meta.json with its test pairs' blur; pass the independent's"):
    demo_limits.oracle_rows(tmp_path, demo, str(tmp_path / "nowhere"))


def test_demo_limits_open_shares_at_the_threshold_above_every_nearly_sharp_image():
  demo_limits = _demo_limits()
  bands = np.asarray(["target", "target", "0-1", "2-4", "2-4", "2-4", "2-4", "20-30", "2-4", "target"])
  scores = np.asarray([0.0, 1.0, 2.0, 2.0, 3.0, 5.0, 1.0, 9.0, 99.0, 50.0])
  held_out = np.asarray([True] * 8 + [False] * 2)  # the last two were fitted on: never counted
  shares = demo_limits.open_shares(scores, bands, held_out, None)
  assert shares["threshold"] == 2.0 and shares["0-1"] == 0.0 and shares["target"] == 0.0
  assert shares["2-4"] == 0.5 and shares["20-30"] == 1.0  # a score equal to the threshold stays shut
  assert shares["1-2"] is None  # no held-out image of that band
  assert demo_limits.open_shares(scores, bands, held_out, 0.0)["target"] == 0.5


def test_demo_limits_linear_filter_undoes_a_known_filter():
  """Sharp = blurred plus a known, lopsided 5×5 filter of it (scipy's correlate, mirrored edges); the fitted
  21×21 filter must find it on other images, so the gain is that of an almost exact inverse."""
  import scipy.ndimage as ndi  # pylint: disable=g-import-not-at-top
  demo_limits = _demo_limits()
  rng = np.random.default_rng(3)
  kernel = rng.normal(0, 0.15, (5, 5))
  kernel[0, 4] = 0.5  # far from symmetric: a transposed or flipped filter would not fit

  def pair(seed):
    image = ndi.gaussian_filter(np.random.default_rng(seed).uniform(0, 255, (37, 41, 3)), (2, 2, 0))
    blur = np.round(image).astype(np.uint8)
    sharp = blur / 255 + np.stack([ndi.correlate(blur[..., c] / 255, kernel, mode="mirror") for c in range(3)], -1)
    return {"image": blur, "sharp": np.clip(np.round(sharp * 255), 0, 255).astype(np.uint8)}

  gain = demo_limits.linear_filter_gain([pair(s) for s in range(4)], [pair(10), pair(11)])
  assert gain > 25.0, gain


@pytest.mark.slow
def test_demo_limits_benchmark_smoke(tmp_path, capsys, trained_workdir):
  out = tmp_path / "limits.json"
  stdout = _run_benchmark(capsys, "demo_limits.py", "--workdir", str(trained_workdir), "--groups", "2",
                          "--size", "48", "--json", str(out))
  payload = json.loads(out.read_text())
  assert payload["benchmark"] == "demo_limits" and payload["oracle"] == []  # no --no-gate evaluation there
  (gate,) = payload["gate"]  # the smoke workdir's network has no gate: the statistics' row only
  assert gate["0-1"] == gate["target"] == 0.0 and set(gate) >= {"1-2", "2-4", "4-12", "20-30", "threshold"}
  assert [row["band"] for row in payload["linear"]] == ["2-4", "4-12", "20-30"]
  assert "no ungated evaluation" in stdout and "perfect gate" not in stdout
