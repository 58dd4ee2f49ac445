"""The benchmark scripts run and write the JSON they promise (tiny shapes; torch not needed)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_deform_conv_benchmark_writes_rows(tmp_path):
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


def _run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                        timeout=900)


def test_accelerator_benchmark_smoke_measures_every_workload(tmp_path):
  out = tmp_path / "accelerator.json"
  result = _run_benchmark("accelerator.py", "--smoke", "--workers", "1", "--json", str(out))
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


def test_memory_benchmark_smoke_reports_xla_memory_analysis(tmp_path):
  out = tmp_path / "memory.json"
  result = _run_benchmark("memory.py", "--smoke", "--tile-bytes", "0", "4096", "--remat", "off", "--json", str(out))
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.loads(out.read_text())["rows"]
  assert [(r["workload"], r["tile_bytes"]) for r in rows] == [("train step", 0), ("forward", 0),
                                                              ("train step", 4096), ("forward", 4096)]
  assert all(r["total_gib"] >= r["temp_gib"] > 0 for r in rows)


def test_input_pipeline_benchmark_smoke_measures_every_design(tmp_path):
  out = tmp_path / "input.json"
  result = _run_benchmark("input_pipeline.py", "--smoke", "--json", str(out))
  payload = json.loads(out.read_text())
  assert payload["benchmark"] == "input_pipeline"
  designs = [row["design"].split(":")[1].split(",")[0].strip() for row in payload["rows"]]
  assert designs == ["PNG frames", "tiles", "subimages", "frames"]
  for row in payload["rows"]:
    assert row["cpu_ms_per_pair"] > 0 and row["pairs_per_s_0w"] > 0 and row["pairs_per_s_1w"] > 0
    assert row["disk_mb_per_pair"] > 0
  assert "CPU ms/pair" in result.stdout and "pairs/s 1w" in result.stdout
