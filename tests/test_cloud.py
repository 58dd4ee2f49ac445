"""Buckets: gs:// paths stay URLs, an unreachable bucket is one sentence, the whole cycle against a local
GCS emulator."""

import os
import pathlib
import subprocess
import sys

import pytest

from simplenet_jax import checkpointing
from simplenet_jax import paths

ROOT = pathlib.Path(__file__).resolve().parent.parent
NO_BUCKET = "gs://simplenet-jax-test-no-such-bucket-7f3a"
# No credentials: no ADC file, and no GCE metadata server to ask.
NO_CREDENTIALS = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/credentials.json",
                  "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9", "JAX_PLATFORMS": "cpu"}


def test_a_url_stays_a_url_and_a_local_path_becomes_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(paths.user_path("gs://bucket/runs/a")) == "gs://bucket/runs/a"
  assert os.fspath(checkpointing.checkpoint_dir("gs://bucket/runs/a")) == "gs://bucket/runs/a/checkpoints"
  assert paths.user_path("runs/a") == tmp_path / "runs" / "a"
  assert not (tmp_path / "gs:").exists()


@pytest.mark.parametrize("command,what", [
    ([str(ROOT / "train.py"), "--config", str(ROOT / "configs/smoke.py"), "--workdir", f"{NO_BUCKET}/run"],
     "workdir"),
    ([str(ROOT / "eval.py"), "--workdir", f"{NO_BUCKET}/run"], "workdir"),
    (["-m", "simplenet_jax.deblur", "--workdir", "unused", "photo.png", "--out", f"{NO_BUCKET}/out"],
     "output folder"),
])
def test_an_unreachable_bucket_is_one_sentence_naming_the_url(tmp_path, command, what):
  """No credentials and no network here (or a bucket that does not exist): one line, exit 1, and no local
  folder named gs: appears."""
  done = subprocess.run([sys.executable, *command], cwd=tmp_path, env={**NO_CREDENTIALS, "PYTHONPATH": str(ROOT)},
                        capture_output=True, text=True, timeout=300)
  errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
  assert done.returncode == 1, done.stderr[-2000:]
  assert "Traceback" not in done.stderr, done.stderr[-2000:]
  assert len(errors) == 1 and errors[0].startswith(f"error: cannot reach the {what} {NO_BUCKET}/"), done.stderr[-2000:]
  assert not (tmp_path / "gs:").exists()
