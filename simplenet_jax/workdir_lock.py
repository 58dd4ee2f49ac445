"""One trainer per workdir: a lock file taken by exclusive creation, renewed while the run lasts.

Two `train.py` on one workdir would interleave their checkpoints and TensorBoard events. The lock is
``WORKDIR/.lock``, created with ``O_CREAT | O_EXCL`` (atomic on a local file system), holding the holder's
host, pid and the time it last renewed it; a thread renews it every RENEW_S seconds. A second trainer stops at
once with one sentence naming the holder. A lock whose holder is gone (on this host: no such process; on
another: not renewed for STALE_S) is taken over with a warning. On a pod, process 0 holds it for the run.

On a bucket the lock is created by tensorstore's conditional write (the driver orbax already writes
checkpoints with): on GCS one upload with the precondition ``ifGenerationMatch=0``, which the bucket refuses if
the object exists, so of two runs started in the same second exactly one gets it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time

from etils import epath

from simplenet_jax import paths

LOCK_NAME = ".lock"
RENEW_S = 30.0
STALE_S = 120.0  # four renewals missed: the holder is gone


class WorkdirBusyError(ValueError):
  """Another live run holds the workdir."""


def _record() -> str:
  return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "renewed": time.time()})


def _alive(holder: dict) -> bool:
  if holder.get("host") == socket.gethostname():
    try:
      os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
      return False
    except (PermissionError, KeyError, ValueError, TypeError):
      return True  # a process of another user, or a record we cannot read: assume it lives
    return True
  return time.time() - float(holder.get("renewed", 0)) < STALE_S


def _create_object(path: epath.Path, text: str) -> bool:
  """Writes the bucket object `path` only if there is none; False if there is (or one appeared meanwhile)."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top  # with orbax, in the train extra
  store = ts.KvStore.open(os.fspath(path.parent).rstrip("/") + "/").result()
  missing = store.read(path.name).result()
  if missing.state != "missing":
    return False
  # The generation of "no object": the write succeeds only if that is still what the bucket holds.
  written = store.write(path.name, text.encode(), if_equal=missing.stamp.generation).result()
  return bool(written.generation)  # an unmet condition writes nothing and returns an empty generation


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the lock for the block (see the module's docstring)."""

  def __init__(self, workdir: str | os.PathLike, *, renew_s: float = RENEW_S):
    self.path = paths.user_path(workdir) / LOCK_NAME
    self.renew_s = renew_s
    self._stop = threading.Event()
    self._thread = None

  def __enter__(self) -> WorkdirLock:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # the second try follows the removal of a stale lock
      if self._create():
        break
      holder = self._holder()
      if holder is not None and _alive(holder):
        since = time.strftime("%H:%M:%S", time.localtime(float(holder.get("renewed", 0))))
        raise WorkdirBusyError(
            f"workdir {self.path.parent} is in use by another run (pid {holder.get('pid')} on host "
            f"{holder.get('host')}, last seen at {since}); wait for it to finish, stop it, or use another --workdir.")
      logging.warning("taking over the lock of %s from a run that is gone (%s)", self.path.parent, holder)
      print(f"warning: taking over workdir {self.path.parent} from a run that is gone "
            f"({'pid ' + str(holder.get('pid')) + ' on ' + str(holder.get('host')) if holder else 'unreadable lock'}).")
      self.path.unlink(missing_ok=True)
    else:
      raise WorkdirBusyError(f"workdir {self.path.parent} was locked by another run at the same moment; use "
                             "another --workdir.")
    self._thread = threading.Thread(target=self._renew, daemon=True)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    holder = self._holder()
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
      self.path.unlink(missing_ok=True)

  def _create(self) -> bool:
    if paths.is_url(self.path):
      return _create_object(self.path, _record())
    try:
      fd = os.open(os.fspath(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(_record())
    return True

  def _holder(self) -> dict | None:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return None

  def _renew(self) -> None:
    while not self._stop.wait(self.renew_s):
      try:
        with paths.atomic_write(epath.Path(self.path), "w") as f:
          f.write(_record())
      except OSError:  # a full disk: the lock stays as it was; the run goes on
        pass
