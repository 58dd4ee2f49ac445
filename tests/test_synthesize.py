"""The synthesis command line: builds, reruns as a no-op, and reports errors in one line without a
traceback."""

import json
import pathlib
import subprocess
import sys

import pytest
from test_synthesis_dataset import tree_files

REPO = pathlib.Path(__file__).resolve().parent.parent


def _run_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "simplenet_jax.data.synthesize", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_command_line_builds_then_reruns_as_no_op_and_reports_errors_without_traceback(tmp_path):
  out = tmp_path / "demo"
  args = ["--out", str(out), "--train-pairs", "4", "--test-pairs", "2", "--size", "32", "40", "--seed", "1",
          "--max-blur", "8", "--noise", "0", "--workers", "1"]
  done = _run_cli(*args)
  assert done.returncode == 0, done.stderr
  assert "train: 4 pairs, input PSNR" in done.stdout and f"Wrote the data set to {out}" in done.stdout
  meta = json.loads((out / "meta.json").read_text())
  assert meta["recipe"]["blur"]["max_length"] == 8 and meta["recipe"]["blur"]["noise"] == 0
  assert all(p["noise_sigma"] == 0 and p["trajectory_length_px"] <= 8 for p in meta["pairs"])
  assert not out.with_name("demo.partial").exists()
  before = tree_files(out)

  again = _run_cli(*args)
  assert again.returncode == 0 and "already holds this data set; nothing to do" in again.stdout
  assert tree_files(out) == before

  other = _run_cli(*args[:-4], "--seed", "2")
  assert other.returncode == 1
  assert other.stderr.strip() == (f"error: {out} already holds a synthesized data set made with other settings; "
                                  "delete it or choose another --out.")

  missing = _run_cli("--out", str(tmp_path / "x"), "--photos", str(tmp_path / "nowhere"))
  assert missing.returncode == 1 and "Traceback" not in missing.stderr
  assert missing.stderr.strip() == (f"error: Photo folder {tmp_path / 'nowhere'} does not exist; pass --photos a "
                                    "folder of jpg/png photos.")


@pytest.mark.parametrize("args, message", [
    (["--size", "100000", "100000"], "--size takes a height and a width from 16 to 4096 pixels, got 100000 100000."),
    (["--max-blur", "-5"], "--max-blur must be from 1 to 200, got -5."),
    (["--noise", "-1"], "--noise must be from 0 to 0.5, got -1."),
    (["--test-pairs", "0"], "--test-pairs must be at least 1, got 0."),
    (["--workers", "0"], "--workers must be at least 1, got 0."),
])
def test_numbers_out_of_range_are_one_sentence_before_any_work(tmp_path, capsys, args, message):
  from simplenet_jax.data import synthesize  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit) as info:
    synthesize.main(["--out", str(tmp_path / "x"), *args])
  assert info.value.code == 2 and capsys.readouterr().err.strip().endswith(f"error: {message}")
  assert not list(tmp_path.iterdir())


def test_an_out_that_cannot_be_written_is_one_sentence(tmp_path, capsys):
  from simplenet_jax.data import synthesize  # pylint: disable=g-import-not-at-top
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert synthesize.main(["--out", str(blocker / "demo"), "--train-pairs", "1", "--test-pairs", "1",
                          "--workers", "1"]) == 1
  assert capsys.readouterr().err.strip() == (f"error: cannot write the data set to {blocker / 'demo'} (Not a "
                                             "directory); pass --out a writable folder with room for it.")
