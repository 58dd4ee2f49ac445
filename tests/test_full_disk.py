"""A disk that fills up mid-training and mid-export, on a real small filesystem (a tmpfs the test mounts): one
sentence, exit 1, no traceback, the earlier checkpoints or artifact intact, and the same command finishing the
work once there is space again. tests/test_paths.py and test_inference.py inject the same ENOSPC by hand."""

import contextlib
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CPU = {**os.environ, "JAX_PLATFORMS": "cpu"}


@contextlib.contextmanager
def small_disk(folder: pathlib.Path, megabytes: int):
  """A tmpfs of `megabytes` mounted at `folder` (root can mount one; elsewhere the test is skipped, and the
  injected-ENOSPC tests still run)."""
  folder.mkdir(parents=True)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                           capture_output=True, text=True, check=False)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
  try:
    yield folder
  finally:
    subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: pathlib.Path) -> pathlib.Path:
  """Fills the filesystem of `folder` to its last byte; deleting the returned file frees it again."""
  filler = folder / "filler"
  with open(filler, "wb", buffering=0) as f:
    for size in (1 << 16, 1):
      with contextlib.suppress(OSError):
        while True:
          f.write(b"\0" * size)
  return filler


# train.py with `checkpointing.save` wrapped: before the save of step FILL_AT the disk is filled to its last
# byte, as if something else on the machine had taken the space.
TRAIN_FILLING = textwrap.dedent("""
    import runpy, sys
    sys.path.insert(0, {root!r})
    from simplenet_jax import checkpointing
    from tests.test_full_disk import fill
    import pathlib
    save = checkpointing.save
    def filling_save(manager, step, *args, **kwargs):
      if step == {fill_at}:
        fill(pathlib.Path({disk!r}))
      return save(manager, step, *args, **kwargs)
    checkpointing.save = filling_save
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path("train.py", run_name="__main__")
""")


def _train_args(data_root, workdir):
  return ["--config", "configs/smoke.py", "--workdir", str(workdir), f"--config.data.root={data_root}",
          "--config.model.use_pvb=False", "--config.model.use_dr=False", "--config.num_train_steps=6",
          "--config.checkpoint_every_steps=2", "--config.eval_every_steps=100"]


@pytest.mark.slow
def test_a_disk_that_fills_mid_training_is_one_sentence_and_the_rerun_finishes(data_root, tmp_path):
  with small_disk(tmp_path / "disk", 64) as disk:
    workdir = disk / "run"
    script = TRAIN_FILLING.format(root=str(ROOT), fill_at=4, disk=str(disk))
    done = subprocess.run([sys.executable, "-c", script, *_train_args(data_root, workdir)], cwd=ROOT, env=CPU,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write to the workdir {workdir} (No space left on device); free some space "
                      "and rerun the same command, which resumes from the last checkpoint."], done.stderr
    # The save of step 2 was complete before the disk filled; that of step 4 left at most orbax's temporary
    # folder, which no restore reads and the rerun deletes.
    left = sorted(p.name for p in (workdir / "checkpoints").iterdir())
    assert left in (["2"], ["2", "4.orbax-checkpoint-tmp"]), left
    (disk / "filler").unlink()
    again = subprocess.run([sys.executable, "train.py", *_train_args(data_root, workdir)], cwd=ROOT, env=CPU,
                           capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the checkpoint of step 2 in" in again.stderr, again.stderr[-2000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4", "6"]


@pytest.mark.slow
def test_a_full_disk_under_an_export_is_one_sentence_and_the_earlier_artifact_stays(trained_workdir,
                                                                                    stablehlo_export, tmp_path):
  artifact, _ = stablehlo_export
  with small_disk(tmp_path / "disk", 8) as disk:
    out = disk / "model.stablehlo"
    out.write_bytes(b"an earlier export")
    fill(disk)
    command = [sys.executable, "-m", "simplenet_jax.export", "--workdir", str(trained_workdir), "--out", str(out),
               "--overwrite"]
    done = subprocess.run(command, cwd=ROOT, env=CPU, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write {out} (No space left on device); nothing was written; free some space or pass "
        "another --out.")
    assert out.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "model.stablehlo"]  # no partial file left
    (disk / "filler").unlink()
    again = subprocess.run(command, cwd=ROOT, env=CPU, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert out.read_bytes() == artifact.read_bytes()


@pytest.mark.slow
def test_a_full_disk_under_an_evaluation_is_one_sentence_and_leaves_only_whole_files(trained_workdir, data_root,
                                                                                     tmp_path):
  with small_disk(tmp_path / "disk", 8) as disk:
    out = disk / "eval"
    fill(disk)
    command = [sys.executable, "eval.py", "--workdir", str(trained_workdir), "--data", str(data_root), "--out",
               str(out), "--save-images"]
    done = subprocess.run(command, cwd=ROOT, env=CPU, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: cannot write to the output folder {out} (No space left on device); free some space and rerun "
        "with --overwrite, which replaces what this run wrote.")
    assert [p for p in out.rglob("*") if p.is_file()] == []  # not a byte fitted: no file, not even a partial one
    (disk / "filler").unlink()
    again = subprocess.run(command + ["--overwrite"], cwd=ROOT, env=CPU, capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "results.csv").exists() and (out / "summary.json").exists()
