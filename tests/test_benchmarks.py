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
