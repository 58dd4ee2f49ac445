"""Buckets: gs:// paths stay URLs, an unreachable bucket is one sentence, the whole cycle against a local
GCS emulator."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import skimage.data
from PIL import Image

from simplenet_jax import checkpointing
from simplenet_jax import paths

pytestmark = pytest.mark.slow  # the whole file starts processes or compiles the paper-size model

ROOT = pathlib.Path(__file__).resolve().parent.parent
NO_BUCKET = "gs://simplenet-jax-test-no-such-bucket-7f3a"
# No credentials: no ADC file, and no GCE metadata server to ask. NO_GCE_CHECK tells TensorFlow's GCS
# filesystem so (as off Google Cloud), instead of its 10 retries with back-off (8 s of each test's 17).
NO_CREDENTIALS = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/credentials.json",
                  "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9", "NO_GCE_CHECK": "True",
                  "JAX_PLATFORMS": "cpu"}


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


# train.py as a user runs it, with clu's TensorBoard writer logging instead: TensorFlow's GCS filesystem, which
# the writer goes through, cannot be pointed at an emulator (it always calls www.googleapis.com).
TRAIN_WITHOUT_TENSORBOARD = """
import runpy, sys
from clu import metric_writers
metric_writers.create_default_writer = lambda logdir, **kwargs: metric_writers.LoggingWriter()
sys.argv = [{train!r}] + sys.argv[1:]
runpy.run_path({train!r}, run_name="__main__")
"""

UPLOAD = """
import os, sys
from etils import epath
local, bucket = sys.argv[1], epath.Path(sys.argv[2])
for folder, _, files in os.walk(local):
  for name in files:
    target = bucket / os.path.relpath(os.path.join(folder, name), local)
    target.parent.mkdir(parents=True, exist_ok=True)
    epath.Path(folder, name).copy(target)
"""

LIST = """
import sys
from etils import epath
print("\\n".join(sorted(str(p) for p in epath.Path(sys.argv[1]).glob(sys.argv[2]))))
print(epath.Path(sys.argv[3]).read_text() if len(sys.argv) > 3 else "")
"""


@pytest.fixture()
def gcs_emulator():
  """(URL, environment for the clients) of a fresh in-memory GCS on 127.0.0.1 with bucket `test-bucket`."""
  import socket  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  from tests import gcs_emulator as emulator  # pylint: disable=g-import-not-at-top
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gcs_emulator.py"), str(port), "test-bucket"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  url = f"http://127.0.0.1:{port}"
  try:
    for _ in range(200):
      try:
        urllib.request.urlopen(url + "/", timeout=1).read()
        break
      except OSError:
        time.sleep(0.1)
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    yield url, {**env, **emulator.client_env(url), "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  finally:
    server.kill()
    server.wait()


def _run(env, cwd, *args, timeout=600):
  done = subprocess.run([sys.executable, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                        timeout=timeout)
  assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
  return done


def test_the_whole_cycle_against_a_local_gcs_emulator(data_root, gcs_emulator, tmp_path):
  """Data in a bucket; train into a bucket, stopped by SIGTERM; resume; evaluate into the bucket; deblur a
  photo into the bucket. Nothing lands in a local folder named gs:."""
  _, env = gcs_emulator
  bucket = "gs://test-bucket"
  _run(env, tmp_path, "-c", UPLOAD, f"{data_root}_tfds", f"{bucket}/tfds")
  train_args = ["-c", TRAIN_WITHOUT_TENSORBOARD.format(train=str(ROOT / "train.py")), "--config",
                ROOT / "configs" / "smoke.py", "--workdir", f"{bucket}/run", "--config.data.root=/nonexistent",
                f"--config.data.tfds_dir={bucket}/tfds", "--config.log_every_steps=1",
                "--config.eval_every_steps=1000"]

  run = subprocess.Popen([sys.executable, "-u", *map(str, train_args), "--config.num_train_steps=1000"], env=env,
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    for line in run.stdout:
      if "step 3/1000" in line:
        run.send_signal(signal.SIGTERM)  # a preemption
        break
    output = line + run.communicate(timeout=600)[0]
  finally:
    run.kill()
  assert run.returncode == 0, output[-3000:]
  stopped = int(re.search(r"stopped at step (\d+); the checkpoint is saved", output).group(1))

  resumed = _run(env, tmp_path, *train_args, f"--config.num_train_steps={stopped + 2}")
  assert f"resuming from the checkpoint of step {stopped}" in resumed.stderr, resumed.stderr[-3000:]

  _run(env, tmp_path, ROOT / "eval.py", "--workdir", f"{bucket}/run", "--out", f"{bucket}/eval")
  listing = _run(env, tmp_path, "-c", LIST, f"{bucket}/eval", "*", f"{bucket}/eval/summary.json").stdout
  assert f"{bucket}/eval/results.csv" in listing and f"{bucket}/eval/summary.json" in listing
  summary = json.loads(listing.split("\n", 2)[2])
  assert summary["checkpoint_step"] == stopped + 2 and summary["images"] == 2

  photo = tmp_path / "photo.png"
  Image.fromarray(skimage.data.astronaut()[:33, :47]).save(photo)
  _run(env, tmp_path, "-m", "simplenet_jax.deblur", "--workdir", f"{bucket}/run", photo, "--out",
       f"{bucket}/deblurred")
  assert f"{bucket}/deblurred/photo.png" in _run(env, tmp_path, "-c", LIST, f"{bucket}/deblurred", "*").stdout
  assert not (tmp_path / "gs:").exists()


RACE = """
import sys, threading
from simplenet_jax import workdir_lock
url, n = sys.argv[1], int(sys.argv[2])
barrier, wins = threading.Barrier(n), []
def take(i):
  lock = workdir_lock.WorkdirLock(url)
  barrier.wait()  # every taker reads "no lock" at about the same moment
  if lock._create():
    wins.append(i)
threads = [threading.Thread(target=take, args=(i,)) for i in range(n)]
for t in threads:
  t.start()
for t in threads:
  t.join()
print(len(wins))
"""


def test_of_runs_that_lock_a_bucket_workdir_at_the_same_moment_exactly_one_gets_it(gcs_emulator, tmp_path):
  _, env = gcs_emulator
  for attempt in range(3):
    done = _run(env, tmp_path, "-c", RACE, f"gs://test-bucket/run{attempt}", 8)
    assert done.stdout.split() == ["1"], done.stdout
  # and a second run on a locked bucket workdir stops with the sentence that names the holder
  script = ("import sys\nfrom simplenet_jax import workdir_lock\n"
            "with workdir_lock.WorkdirLock(sys.argv[1]):\n"
            "  try:\n    workdir_lock.WorkdirLock(sys.argv[1]).__enter__()\n"
            "  except workdir_lock.WorkdirBusyError as error:\n    print(error)\n")
  done = _run(env, tmp_path, "-c", script, "gs://test-bucket/held")
  assert "workdir gs://test-bucket/held is in use by another run (pid" in done.stdout
