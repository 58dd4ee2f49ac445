"""A subprocess run kept on disk, for results that `conftest.built_once` makes once per test run and every
xdist worker reads: the exit status and output survive into the worker that did not run it."""

import json
import pathlib
import subprocess
import types


def run_recorded(folder: pathlib.Path, *args, **kwargs) -> None:
  """`subprocess.run(args)` with its exit status and output kept in ``folder/run.json``."""
  done = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
  (folder / "run.json").write_text(json.dumps([done.returncode, done.stdout, done.stderr]))


def recorded_run(folder: pathlib.Path) -> types.SimpleNamespace:
  """What `run_recorded` kept: ``returncode``, ``stdout`` and ``stderr``, as `subprocess.run` gives them."""
  returncode, stdout, stderr = json.loads((folder / "run.json").read_text())
  return types.SimpleNamespace(returncode=returncode, stdout=stdout, stderr=stderr)
