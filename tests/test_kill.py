"""`kill -9` at a random moment while deblur, eval and export write their outputs: every file that a rerun takes
for finished is complete and equal to an uninterrupted run's, and the rerun finishes the work (tests/test_paths.py
kills deterministically between writing and renaming; test_video.py kills mid-clip)."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import numpy as np
import png
import pytest
import skimage.data

ROOT = pathlib.Path(__file__).resolve().parents[1]
CPU = {**os.environ, "JAX_PLATFORMS": "cpu"}

pytestmark = pytest.mark.slow


def _files(folder: pathlib.Path) -> dict[str, bytes]:
  """Every file under `folder` whose name a rerun could take for a finished output (not hidden), by path."""
  return {os.fspath(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
          if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def _kill_once_writing(command: list[str], out: pathlib.Path, rng: random.Random) -> float:
  """Starts `command`, waits until something appears in `out` (a file or a hidden partial file), then kills it
  with SIGKILL after a random 0–150 ms; returns that delay. Fails if the command ends before the kill."""
  process = subprocess.Popen(command, cwd=ROOT, env=CPU, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  delay = rng.uniform(0.0, 0.15)
  deadline = time.monotonic() + 600
  while not (out.exists() and any(p.is_file() for p in out.rglob("*"))):
    assert process.poll() is None, "the command ended before it wrote anything"
    assert time.monotonic() < deadline
    time.sleep(0.001)
  time.sleep(delay)
  process.send_signal(signal.SIGKILL)
  process.wait()
  return delay


def _run(command):
  done = subprocess.run(command, cwd=ROOT, env=CPU, capture_output=True, text=True, timeout=600, check=False)
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  return done


def _assert_complete_and_equal(out: pathlib.Path, reference: dict[str, bytes], same=lambda name, a, b: a == b):
  for name, data in _files(out).items():
    assert name in reference, f"{name} is not an output"
    assert same(name, data, reference[name]), f"{name} differs from the uninterrupted run's"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """12 photos, 16-bit (their outputs too: pypng writes them a row at a time, so a kill lands mid-file more
  often than in an 8-bit PNG, which Pillow writes in one go)."""
  folder = tmp_path_factory.mktemp("photos")
  image = skimage.data.astronaut().astype(np.uint16) * 257
  for i in range(12):
    crop = image[i * 17:i * 17 + 201, i * 13:i * 13 + 303]
    png.from_array(crop.reshape(crop.shape[0], -1), "RGB;16").save(str(folder / f"photo_{i:02d}.png"))
  return folder


@pytest.fixture(scope="module")
def deblurred(trained_workdir, photos, tmp_path_factory):
  """(the command without --out, the files of its uninterrupted run)."""
  command = [sys.executable, "-m", "simplenet_jax.deblur", "--workdir", str(trained_workdir), str(photos)]
  reference = tmp_path_factory.mktemp("reference")
  assert _run(command + ["--out", str(reference)]).returncode == 0
  return command, _files(reference)


@pytest.mark.parametrize("seed", [0, 1])
def test_deblur_killed_while_writing(deblurred, tmp_path, seed):
  command, reference = deblurred
  assert len(reference) == 12
  out = tmp_path / "out"
  delay = _kill_once_writing(command + ["--out", str(out)], out, random.Random(seed))
  _assert_complete_and_equal(out, reference)
  print(f"killed {delay * 1000:.0f} ms after the first file appeared: {len(_files(out))} of 12 outputs written")
  again = _run(command + ["--out", str(out)])
  assert again.returncode == 0
  assert _files(out) == reference


def _same_eval_file(name, got, want):
  """results.csv's last column is each image's seconds; the rest of the row, and every other file, is equal."""
  if name == "results.csv":
    return [row.rsplit(b",", 1)[0] for row in got.splitlines()] == [
        row.rsplit(b",", 1)[0] for row in want.splitlines()]
  if name == "summary.json":
    return b'"psnr"' in got and got.rstrip().endswith(b"}")  # complete JSON (timings and --out differ)
  return got == want


def test_eval_killed_while_writing(trained_workdir, data_root, tmp_path):
  command = [sys.executable, "eval.py", "--workdir", str(trained_workdir), "--data", str(data_root),
             "--save-images"]
  assert _run(command + ["--out", str(tmp_path / "reference")]).returncode == 0
  reference = _files(tmp_path / "reference")
  out = tmp_path / "out"
  _kill_once_writing(command + ["--out", str(out)], out, random.Random(2))
  _assert_complete_and_equal(out, reference, _same_eval_file)
  again = _run(command + ["--out", str(out), "--overwrite"])  # the killed run's files are an earlier evaluation
  assert again.returncode == 0
  got = _files(out)
  assert sorted(got) == sorted(reference)
  _assert_complete_and_equal(out, reference, _same_eval_file)


def test_export_killed_while_writing(trained_workdir, stablehlo_export, tmp_path):
  artifact, _ = stablehlo_export
  out = tmp_path / "out"
  command = [sys.executable, "-m", "simplenet_jax.export", "--workdir", str(trained_workdir), "--out",
             str(out / "model.stablehlo")]
  out.mkdir()
  _kill_once_writing(command, out, random.Random(3))
  _assert_complete_and_equal(out, {"model.stablehlo": artifact.read_bytes()})
  if not (out / "model.stablehlo").exists():  # killed before the rename: the rerun writes it
    assert _run(command).returncode == 0
  assert (out / "model.stablehlo").read_bytes() == artifact.read_bytes()
  np.testing.assert_equal(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")), ["model.stablehlo"])
