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
