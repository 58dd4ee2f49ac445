"""`python -m simplenet_jax.complexity`: its errors as a user meets them (a process of its own), its summaries
through `main` in this process."""

import subprocess
import sys
import types

import pytest

from simplenet_jax import complexity

pytestmark = pytest.mark.slow  # the whole file starts processes or compiles the paper-size model


def _summary(*args):
  return subprocess.run([sys.executable, "-m", "simplenet_jax.complexity", *args], capture_output=True, text=True,
                        timeout=300)


def _main(capsys, *args):
  """`complexity.main` in this process, as `_summary` runs it in its own (each start costs a JAX import)."""
  capsys.readouterr()
  returncode = complexity.main(list(args))
  out, err = capsys.readouterr()
  return types.SimpleNamespace(returncode=returncode, stdout=out, stderr=err)


def test_gopro_summary_ends_with_the_parameter_count(capsys):
  result = _main(capsys, "--config", "configs/gopro.py")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.strip().splitlines()
  assert lines[-1] == "total parameters: 5506899"
  assert "input 1×720×1280×3 → output 1×720×1280×3 (float32)" in result.stdout
  assert any(line.split()[:1] == ["PVB"] and line.endswith("3,643,460") for line in lines)


def test_size_flag_and_flops_scale_with_pixels(capsys):
  small = _main(capsys, "--config", "configs/gopro.py", "--size", "64", "64")
  large = _main(capsys, "--config", "configs/gopro.py", "--size", "128", "128")
  assert small.returncode == 0 and large.returncode == 0

  def gflops(out):
    line = next(l for l in out.splitlines() if l.startswith("forward FLOPs"))
    return float(line.split(":")[1].split("G")[0].replace(",", ""))

  assert 3.8 < gflops(large.stdout) / gflops(small.stdout) < 4.2


def test_bad_size_and_missing_config_are_one_line_errors():
  bad = _summary("--config", "configs/gopro.py", "--size", "30", "64")
  assert bad.returncode == 2
  assert bad.stderr.strip() == ("error: SimpleNet needs H and W divisible by 4, got 30×64; pad the image "
                                "(simplenet_jax evaluation and inference pad by reflection and crop back).")
  missing = _summary("--config", "configs/nope.py")
  assert missing.returncode == 2 and "config file configs/nope.py does not exist" in missing.stderr
  assert "Traceback" not in bad.stderr + missing.stderr
