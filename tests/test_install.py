"""The lean core and its extras (pyproject.toml, requirements.txt, simplenet_jax/extras.py).

`pip install simplenet-jax` resolves to no TensorFlow, Gradio, OpenCV or PyTorch; a process in which none of
the extras can be imported deblurs a photo with a trained workdir; `simplenet-deblur --help` answers without
importing JAX; a missing extra is one sentence naming its pip line; requirements.txt pins exactly what `all`
asks for, inside pyproject's ranges.
"""

import json
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
# What the core must never bring: the distributions, and the modules they install.
HEAVY_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "gradio", "opencv-python", "opencv-python-headless", "torch"}
HEAVY_MODULES = ("tensorflow", "gradio", "cv2", "torch")
# The modules of every extra: the core runs without any of them.
EXTRA_MODULES = HEAVY_MODULES + ("grain", "clu", "tensorflow_datasets", "array_record", "tensorboard", "skimage",
                                 "sklearn", "matplotlib", "onnxruntime")
# Pinned in requirements.txt although no extra names them: jax's own backend, kept at jax's version.
PINNED_BESIDES = {"jaxlib"}


def _blocking(modules) -> str:
  """Python source after which `modules` look uninstalled: importing them (or their submodules) raises
  ModuleNotFoundError and `importlib.util.find_spec` finds none, as etils.epath asks before using TensorFlow."""
  return f"import sys\nsys.modules.update(dict.fromkeys({tuple(modules)!r}))\n"


def _project() -> dict:
  return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _all_requirements() -> list[Requirement]:
  """The core's requirements and those of every extra that `all` names, for this platform."""
  project = _project()
  requirements = [Requirement(r) for r in project["dependencies"]]
  for entry in project["optional-dependencies"]["all"]:
    requirements += [Requirement(r) for extra in sorted(Requirement(entry).extras)
                     for r in project["optional-dependencies"][extra]]
  return [r for r in requirements if r.marker is None or r.marker.evaluate()]


def _pins() -> dict[str, str]:
  pins = {}
  for line in (ROOT / "requirements.txt").read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name, version = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==(\S+)", line).groups()
      assert canonicalize_name(name) not in pins, f"{name} is pinned twice in requirements.txt"
      pins[canonicalize_name(name)] = version
  return pins


def test_requirements_pin_exactly_what_all_asks_for_inside_the_ranges():
  pins = _pins()
  wanted = _all_requirements()
  names = {canonicalize_name(r.name) for r in wanted}
  assert set(pins) == names | PINNED_BESIDES, (
      f"pinned but not asked for: {sorted(set(pins) - names - PINNED_BESIDES)}; "
      f"asked for but not pinned: {sorted(names - set(pins))}")
  for requirement in wanted:
    pin = pins[canonicalize_name(requirement.name)]
    assert requirement.specifier.contains(pin, prereleases=True), f"{requirement.name}=={pin} is outside {requirement}"


def test_all_is_every_extra_but_the_hardware_and_benchmark_ones():
  extras = _project()["optional-dependencies"]
  (entry,) = extras["all"]
  assert Requirement(entry).extras == set(extras) - {"all", "tpu", "cuda12", "torch"}


def test_core_declares_none_of_the_heavy_distributions():
  declared = {canonicalize_name(Requirement(r).name) for r in _project()["dependencies"]}
  assert not declared & HEAVY_DISTRIBUTIONS


@pytest.mark.slow
def test_core_install_resolves_without_tensorflow_gradio_opencv_or_torch(tmp_path):
  """pip's resolution of `pip install <checkout>` (metadata only, nothing installed)."""
  checkout = tmp_path / "checkout"  # a copy, so that the metadata build leaves nothing in the tree
  checkout.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(ROOT / name, checkout / name)
  shutil.copytree(ROOT / "simplenet_jax", checkout / "simplenet_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  report = tmp_path / "report.json"
  result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), str(checkout)], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  resolved = {canonicalize_name(item["metadata"]["name"]) for item in json.loads(report.read_text())["install"]}
  assert {"jax", "flax", "orbax-checkpoint", "pillow", "flatbuffers", "simplenet-jax"} <= resolved  # flatbuffers:
  # jax.export's serialization, which jax does not declare
  assert not resolved & HEAVY_DISTRIBUTIONS, sorted(resolved & HEAVY_DISTRIBUTIONS)


@pytest.mark.slow
def test_deblurs_a_photo_with_no_extra_importable(trained_workdir, tmp_path):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
  script = _blocking(EXTRA_MODULES) + textwrap.dedent(f"""
      from simplenet_jax import deblur
      code = deblur.main([{str(tmp_path / 'photo.jpg')!r}, "--workdir", {str(trained_workdir)!r},
                          "--out", {str(tmp_path / 'out')!r}])
      loaded = sorted(m for m, module in sys.modules.items() if module and m.split(".")[0] in {EXTRA_MODULES!r})
      print("loaded:", loaded)
      sys.exit(code)
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "loaded: []" in result.stdout
  with Image.open(tmp_path / "out" / "photo.png") as out:
    assert out.size == (45, 37)


def test_deblur_help_does_not_import_jax():
  script = textwrap.dedent("""
      import sys
      from simplenet_jax import deblur
      try:
        deblur.main(["--help"])
      except SystemExit:
        pass
      print("imported:", sorted(m for m in ("jax", "flax", "orbax", "numpy") if m in sys.modules))
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "--workdir" in result.stdout
  assert "imported: []" in result.stdout


@pytest.mark.parametrize("command, blocked, sentence", [
    (["-m", "simplenet_jax.app", "--help"], ("gradio",),
     "error: simplenet-demo needs the web extra (gradio not installed): pip install 'simplenet-jax[web]'"),
    (["train.py", "--help"], ("clu", "tensorflow"),
     "error: train.py needs the train extra (clu, tensorflow not installed): pip install 'simplenet-jax[train]'"),
    (["-m", "simplenet_jax.data.synthesize", "--out", "unused"], ("sklearn",),
     "error: python -m simplenet_jax.data.synthesize without --photos (the built-in photos) needs the demo extra "
     "(sklearn not installed): pip install 'simplenet-jax[demo]'"),
])
def test_a_missing_extra_is_one_sentence_naming_its_pip_line(command, blocked, sentence):
  if command[0] == "-m":
    run = f"sys.argv = {[command[1]] + command[2:]!r}; runpy.run_module({command[1]!r}, run_name='__main__')"
  else:
    run = f"sys.argv = {command!r}; runpy.run_path({command[0]!r}, run_name='__main__')"
  launcher = _blocking(blocked) + "import runpy\n" + run
  result = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert (result.returncode, result.stderr.strip()) == (1, sentence), result.stderr[-3000:]
