"""The whole network against its PyTorch twin (benchmarks/torch_reference.py): PyTorch's own layers and
torchvision's deform_conv2d with the JAX weights, every parameter randomised, agree to 1e-8 in float64.

The check runs in a process of its own, because it turns on float64 for JAX. torch and torchvision are
the `torch` extra, which `scripts/test.sh` installs (requirements-torch.txt).
"""

import importlib.util
import pathlib
import re
import sys

import pytest

from simplenet_jax.models.config import GLOBAL_CONTEXTS
from tests.recorded import recorded_run
from tests.recorded import run_recorded

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_torch_is_installed():
  missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
  assert not missing, (f"{' and '.join(missing)} missing: the PyTorch twin needs the torch extra; run "
                       "bash scripts/test.sh, or pip install -r requirements-torch.txt")


@pytest.fixture(scope="module")
def twin_check(build_once):
  """`torch_reference.py --check` for every global_context in one process (float64 on for JAX), once per run."""
  folder = build_once("torch_twin", lambda folder: run_recorded(
      folder, sys.executable, str(ROOT / "benchmarks" / "torch_reference.py"), "--check", cwd=ROOT, timeout=900))
  return recorded_run(folder)


@pytest.mark.slow
@pytest.mark.parametrize("kind", GLOBAL_CONTEXTS)
def test_network_equals_its_pytorch_twin_in_float64(twin_check, kind):
  lines = [l for l in twin_check.stdout.splitlines() if l.startswith(f"global_context={kind} ")]
  assert len(lines) == 1, twin_check.stdout[-2000:] + twin_check.stderr[-3000:]
  difference, change = (float(v) for v in re.search(r"= (\S+) on .* by up to (\S+)\): ok$", lines[0]).groups())
  assert difference <= 1e-8
  assert change > 0.5  # every layer randomised: the network really transforms the image
