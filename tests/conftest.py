"""Shared test settings and fixtures: the repository root on sys.path (for `configs`), tiny data sets and a
smoke model trained once per test run."""

import os
import pathlib
import shutil
import sys

import filelock
import numpy as np
import pytest
import scipy.ndimage
import skimage.data
from PIL import Image

from tests.recorded import recorded_run
from tests.recorded import run_recorded

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

# One persistent XLA compilation cache for every test process and the CLIs they start (JAX reads these
# variables): the smoke model's programs are compiled once per suite instead of once per test.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/simplenet_jax/xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# The suite compiles a few hundred small programs and runs each once or twice: LLVM's optimisations
# (vectorisation, unrolling) cost more compile time than they save there (the smoke train step: 9.8 s → 6.2 s
# to compile, 58 → 90 ms a step). What a program computes is XLA's HLO, which this leaves as it is; the README's
# commands and the benchmarks keep the default level. Tests that start JAX with other flags append theirs.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
import jax  # noqa: E402  (after the variables, which it reads on import; set again in case it was imported)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """The slow tests first (in their files' order): with the whole suite on 2 workers, a long test collected
  last would run alone on one core at the end while the other idles; run early, the short tests fill in."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def write_pairs(root: pathlib.Path, split: str, count: int, size: tuple[int, int], seed: int) -> None:
  """GoPro-layout pairs cut from a real photo, blurred by a horizontal box (independent of the package)."""
  rng = np.random.default_rng(seed)
  photo = skimage.data.astronaut()
  for i in range(count):
    top, left = rng.integers(0, 512 - size[0]), rng.integers(0, 512 - size[1])
    sharp = photo[top:top + size[0], left:left + size[1]]
    blur = scipy.ndimage.uniform_filter(sharp.astype(float), size=(1, 5, 1), mode="reflect")
    scene = root / split / f"scene{i % 2}"
    for kind, image in (("sharp", sharp), ("blur", np.round(blur).astype(np.uint8))):
      (scene / kind).mkdir(parents=True, exist_ok=True)
      Image.fromarray(image).save(scene / kind / f"{i:06d}.png")


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
  """The folder `name`, made by `build(folder)` once per test run and shared by every xdist worker: the first
  worker to take the lock builds it, the others wait for it. Tests that would write into it take a copy."""
  base = tmp_path_factory.getbasetemp()
  if "PYTEST_XDIST_WORKER" in os.environ:
    base = base.parent  # the run's folder, above each worker's own
  path, done = base / name, base / f"{name}.done"
  with filelock.FileLock(f"{path}.lock"):
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)
      path.mkdir()
      build(path)
      done.touch()
  return path


@pytest.fixture(scope="session")
def build_once(tmp_path_factory):
  """`build_once(name, build)`: `built_once` for a test module's own costly result (an export, a lowering),
  made by whichever xdist worker needs it first instead of once per worker."""
  return lambda name, build: built_once(tmp_path_factory, name, build)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  """8 train pairs of 40×48 and 2 test pairs of 37×45 (odd: evaluation pads and crops back), built with the
  folder builder into ``<root>_tfds``, where configs look by default."""

  def build(root):
    write_pairs(root, "train", 8, (40, 48), seed=0)
    write_pairs(root, "test", 2, (37, 45), seed=1)
    from simplenet_jax.data import catalogue  # pylint: disable=g-import-not-at-top
    catalogue.build("folder", root)

  return built_once(tmp_path_factory, "pairs", build)


@pytest.fixture(scope="session")
def trained_workdir(data_root, tmp_path_factory):
  """A smoke model trained 4 steps (its tail is no longer zero, so it changes the images). Shared: read it,
  or copy it (`workdir_copy`) to write into it."""
  from configs import smoke  # pylint: disable=g-import-not-at-top  (needs ROOT on sys.path, above)
  from simplenet_jax import train  # pylint: disable=g-import-not-at-top

  def build(path):
    config = smoke.get_config()
    config.data.root = str(data_root)
    config.num_train_steps = 4
    train.train_and_evaluate(config, path)

  return built_once(tmp_path_factory, "workdir", build)


@pytest.fixture
def workdir_copy(trained_workdir, tmp_path):
  """A copy of the trained smoke workdir that a test may write into (evaluations, further training)."""
  return pathlib.Path(shutil.copytree(trained_workdir, tmp_path / "workdir"))


def _smoke_export(tmp_path_factory, trained_workdir, name: str, *flags: str):
  def build(folder):
    run_recorded(folder, sys.executable, "-m", "simplenet_jax.export", "--workdir", str(trained_workdir), "--out",
                 str(folder / name), *flags, cwd=ROOT, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  folder = built_once(tmp_path_factory, f"export_{name}", build)
  return folder / name, recorded_run(folder)


@pytest.fixture(scope="session")
def stablehlo_export(trained_workdir, tmp_path_factory):
  """`python -m simplenet_jax.export` of the smoke workdir, once per test run: (the file, the run). Read it only."""
  return _smoke_export(tmp_path_factory, trained_workdir, "simplenet.stablehlo")


@pytest.fixture(scope="session")
def onnx_export(trained_workdir, tmp_path_factory):
  """The same with ``--format onnx``: (the file, the run). Read it only."""
  return _smoke_export(tmp_path_factory, trained_workdir, "simplenet.onnx", "--format", "onnx")
