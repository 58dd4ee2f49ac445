"""The whole network against its PyTorch twin (benchmarks/torch_reference.py): PyTorch's own layers and
torchvision's deform_conv2d with the JAX weights, every parameter randomised, agree to 1e-8 in float64.

Each option runs in its own process, because the check turns on float64 for JAX. torch and torchvision are
the `torch` extra, which `scripts/test.sh` installs (requirements-torch.txt).
"""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

from simplenet_jax.models.config import GLOBAL_CONTEXTS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_torch_is_installed():
  missing = [name for name in ("torch", "torchvision") if importlib.util.find_spec(name) is None]
  assert not missing, (f"{' and '.join(missing)} missing: the PyTorch twin needs the torch extra; run "
                       "bash scripts/test.sh, or pip install -r requirements-torch.txt")


@pytest.mark.slow
@pytest.mark.parametrize("kind", GLOBAL_CONTEXTS)
def test_network_equals_its_pytorch_twin_in_float64(kind):
  run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "torch_reference.py"), "--check",
                        "--global-context", kind], capture_output=True, text=True, timeout=900, cwd=ROOT)
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  (line,) = [l for l in run.stdout.splitlines() if l.startswith(f"global_context={kind} ")]
  difference, change = (float(v) for v in re.search(r"= (\S+) on .* by up to (\S+)\): ok$", line).groups())
  assert difference <= 1e-8
  assert change > 0.5  # every layer randomised: the network really transforms the image
