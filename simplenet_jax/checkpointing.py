"""Checkpoints in ``workdir/checkpoints`` with orbax: model, optimizer, step, data iterator and config.

Each checkpoint holds three items: ``state`` (the `TrainState` pytree), ``data`` (each process's grain
iterator state, so that a resumed run sees exactly the next batch) and ``config`` (JSON). The last
``keep`` checkpoints are kept, plus the one with the best evaluation PSNR. A checkpoint is written to a
temporary folder and renamed when complete, so a kill during a save leaves the previous ones readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from simplenet_jax import paths
from simplenet_jax.models.config import EXECUTION_FIELDS
from simplenet_jax.models.config import ModelConfig

CHECKPOINT_DIR = "checkpoints"
BEST_METRIC = "psnr"


class CheckpointMismatchError(ValueError):
  """The workdir's checkpoint was written by a different model configuration."""


class CheckpointDamagedError(ValueError):
  """A checkpoint whose arrays differ from what was saved (their hashes), or hold NaN or infinity."""


def _leaf_name(path) -> str:
  names = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
  return "/".join(names[:-1] if names and names[-1] == "value" else names)  # nnx.Variable's own field


def array_hashes(tree: Any) -> dict[str, str]:
  """SHA-256 of each array of `tree` that this process holds whole (on one device, or replicated), by its path.

  orbax verifies no array data (zarr's checksums cover only its shard index), so the project stores these in
  each checkpoint's metadata and checks them on every restore: a flipped byte is then an error, not a model
  that quietly outputs black.
  """
  hashes = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not hasattr(leaf, "dtype"):
      continue
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None and not sharding.is_fully_replicated and len(sharding.device_set) > 1:
      continue  # split across devices: no process holds it whole
    shards = getattr(leaf, "addressable_shards", None)
    data = np.asarray(shards[0].data if shards else leaf)
    hashes[_leaf_name(path)] = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
  return hashes


def verify(tree: Any, saved: dict[str, str] | None, what: str, step: int, directory) -> None:
  """CheckpointDamagedError naming `step` if an array of `tree` differs from its saved hash or is not finite."""
  problems = []
  if saved:
    current = array_hashes(tree)
    problems = sorted(name for name, digest in current.items() if name in saved and saved[name] != digest)
  non_finite = sorted(_leaf_name(path) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
                      if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
                      and not bool(jnp.isfinite(leaf).all()))
  if problems or non_finite:
    what_is_wrong = (f"{len(problems)} of its {what} arrays differ from what was saved ({', '.join(problems[:3])}"
                     + (", …" if len(problems) > 3 else "") + ")" if problems else
                     f"{len(non_finite)} of its {what} arrays hold NaN or infinity ({', '.join(non_finite[:3])})")
    raise CheckpointDamagedError(f"the checkpoint of step {step} in {directory} is damaged: {what_is_wrong}.")


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
  return paths.user_path(workdir) / CHECKPOINT_DIR


class _SavesWithoutMetrics(logging.Filter):
  """Drops orbax's warning for each save without metrics: with `best_fn` set, every checkpoint between two
  evaluations would log it, and those saves are meant to have none (the best is chosen among evaluated ones)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Requested `tracked_metric`; did not provide metrics.")


_SAVES_WITHOUT_METRICS = _SavesWithoutMetrics()


def create_manager(workdir: str | os.PathLike, keep: int, *, save_every: int | None = None,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """Keeps the latest `keep` checkpoints and the best one by eval PSNR (checkpoints saved with metrics).

  `manager.should_save(step)` is true every `save_every` steps and at the step all hosts agree to stop at
  after a preemption notice (every process must ask at every step).
  """
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(n=keep),
      checkpoint_managers.BestN(get_metric_fn=lambda metrics: metrics[BEST_METRIC], n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  saving = checkpoint_managers.AnySavePolicy([
      checkpoint_managers.FixedIntervalPolicy(save_every or 1),
      checkpoint_managers.PreemptionCheckpointingPolicy(),
  ])
  logging.getLogger("absl").addFilter(_SAVES_WITHOUT_METRICS)  # orbax logs through absl's logger
  # best_fn makes orbax record each save's metrics on disk: `best_step()` then reads them (without it, it is the
  # latest step), and a resumed run still knows which checkpoint is the best and keeps it.
  # Saves are synchronous: a save that fails (a full disk) then fails in `save`, where it becomes one sentence,
  # not in orbax's thread while training goes on. A checkpoint is a few times the parameters' size, written
  # every `checkpoint_every_steps`.
  options = ocp.CheckpointManagerOptions(preservation_policy=policy, save_decision_policy=saving,
                                         enable_async_checkpointing=False,
                                         best_fn=lambda metrics: metrics[BEST_METRIC], best_mode="max",
                                         create=not read_only, read_only=read_only,
                                         cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("state", "data", "config"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any,
         config: ml_collections.ConfigDict, metrics: dict[str, float] | None = None) -> None:
  """Saves everything a resume needs. A write that fails (a full disk, a folder gone read-only) is an OSError
  with the system's reason, and the earlier checkpoints stay as they were."""
  # The data iterator state is per process; the process count says whether a resume can use it.
  meta = {"config": json.loads(config.to_json()), "process_count": jax.process_count(),
          "hashes": {"params": array_hashes(state.params), "opt_state": array_hashes(state.opt_state)}}
  items = dict(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(meta))
  if data_iterator is not None:
    import grain  # pylint: disable=g-import-not-at-top  # training only: inference reads no iterator
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  with _failures_settled(), _unwritable_is_oserror():
    manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


@contextlib.contextmanager
def _unwritable_is_oserror():
  """tensorstore reports a failed write as ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']"), which
  orbax may wrap again: this raises the OSError it stands for (ENOSPC: "No space left on device")."""
  try:
    yield
  except OSError:
    raise
  except Exception as error:  # pylint: disable=broad-exception-caught
    cause = error
    while cause is not None:
      if isinstance(cause, OSError):
        raise cause from None
      code = _OS_ERROR_CODE.search(str(cause))
      if code:
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1)))) from None
      cause = cause.__cause__ or cause.__context__
    raise


def saved_meta(manager: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """{"config": the config dict it was trained with, "process_count": the JAX processes that wrote it}."""
  return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]


def check_compatible(saved: dict[str, Any], config: ml_collections.ConfigDict, workdir) -> None:
  """Refuses to resume a checkpoint of another network: one sentence naming the differing fields."""
  current = {k: v for k, v in json.loads(config.model.to_json()).items() if k not in EXECUTION_FIELDS}
  # A field the checkpoint does not name is newer than it: it was trained with that field's default.
  saved_model = {**ModelConfig().to_dict(), **saved.get("model", {})}
  before = {k: v for k, v in saved_model.items() if k not in EXECUTION_FIELDS}
  differing = sorted(k for k in set(current) | set(before)
                     if _normalise(current.get(k)) != _normalise(before.get(k)))
  if differing:
    details = ", ".join(f"{k}: {before.get(k)!r} in the checkpoint vs {current.get(k)!r} now" for k in differing)
    raise CheckpointMismatchError(
        f"workdir {workdir} holds a checkpoint of a different model ({details}); use a new --workdir, "
        "or the config it was trained with.")


def _normalise(value):
  return list(value) if isinstance(value, tuple) else value


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iterator: Any = None, *,
            num_workers: int = 0) -> Any:
  """Restores the state (with the abstract state's shardings) and, in place, the data iterator.

  A checkpoint written by another number of processes or data workers restores the model and optimizer,
  but the data order starts afresh: each process's iterator state belongs to its own slice of the data, and
  grain's state records each worker's position.
  """
  items = dict(state=ocp.args.StandardRestore(abstract_state))
  meta = saved_meta(manager, step)  # read once: the iterator's layout and the arrays' hashes
  if data_iterator is not None:
    saved_layout = (meta.get("process_count"), meta["config"].get("data", {}).get("num_workers"))
    layout = (jax.process_count(), num_workers)
    if saved_layout == layout:
      import grain  # pylint: disable=g-import-not-at-top  # training only: inference reads no iterator
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    else:
      logging.warning("the checkpoint's data iterator came from (processes, workers) = %s and this run has %s: "
                      "model and optimizer are restored, the data order starts afresh", saved_layout, layout)
  try:
    with _failures_settled(), _unreadable_is_damaged(step, manager):
      state = manager.restore(step, args=ocp.args.Composite(**items))["state"]
  except ValueError as error:
    if "tree structures do not match" in str(error):
      raise _mismatch(step, manager) from None
    raise
  hashes = meta.get("hashes", {})
  verify(state.params, hashes.get("params"), "parameter", step, manager.directory)
  verify(state.opt_state, hashes.get("opt_state"), "optimizer", step, manager.directory)
  return state


@contextlib.contextmanager
def _unreadable_is_damaged(step: int, manager):
  """An array file that tensorstore cannot read (a cut-off file, DATA_LOSS, a zstd frame that does not decode)
  becomes CheckpointDamagedError. tensorstore reports it as ValueError, which orbax wraps in a bare Exception
  ("Encountered error while reading array index ...") for an array it reads as a shard.
  """
  try:
    yield
  except CheckpointDamagedError:
    raise
  except Exception as error:  # pylint: disable=broad-exception-caught
    cause = error
    while not isinstance(cause, ValueError) and cause.__cause__ is not None:
      cause = cause.__cause__
    if not isinstance(cause, ValueError) or "tree structures do not match" in str(cause):
      raise
    raise CheckpointDamagedError(f"the checkpoint of step {step} in {manager.directory} is damaged: "
                                 f"incomplete or corrupt: {paths.first_line(cause)}.") from None


def _mismatch(step: int, manager) -> CheckpointMismatchError:
  return CheckpointMismatchError(
      f"the checkpoint of step {step} in {manager.directory} holds a training state of another structure (an "
      "earlier version of simplenet-jax, or another optimizer setting); use a new --workdir to train, or "
      "eval.py and simplenet-deblur, which read only its parameters.")


def abstract_like(tree: Any) -> Any:
  """Shape, dtype and sharding of every leaf, for restoring without allocating twice."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def restore_params(manager: ocp.CheckpointManager, step: int, abstract_params: Any) -> Any:
  """Only the model parameters of a checkpoint (for evaluation and inference), on the default device."""
  target = {"params": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract_params)}
  with _failures_settled(), _unreadable_is_damaged(step, manager):
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
  params = jax.device_put(restored["state"]["params"])  # orbax gives host arrays for an unsharded target
  verify(params, saved_meta(manager, step).get("hashes", {}).get("params"), "parameter", step, manager.directory)
  return params


class _UnretrievedReadErrors(logging.Filter):
  """Drops asyncio's "… exception was never retrieved" records, which a failed restore leaves behind."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Task exception was never retrieved",
                                               "Future exception was never retrieved"))


_UNRETRIEVED_READ_ERRORS = _UnretrievedReadErrors()


@contextlib.contextmanager
def _failures_settled(quiet_seconds: float = 1.0, most_seconds: float = 10.0):
  """Runs a restore or a save with `sys.stderr` captured, so that a damaged checkpoint or a full disk fails
  with one sentence.

  When one array of a restore fails to read (or of a save, to write), orbax closes its event loop while
  tensorstore's other reads or writes are still in flight, and each of those then prints an "Event loop is closed"
  traceback from its own thread. After a failure they are waited out (until stderr stays quiet for
  `quiet_seconds`) and dropped; after a success whatever was written is passed on. A second of quiet leaves room
  for a busy machine's slow threads. The failed reads' tasks also reach asyncio's logger ("Task exception was
  never retrieved", with a traceback) whenever they are garbage-collected, often after the caller has printed its
  sentence, and through a handler that holds the real stderr: after a failure those records stay dropped for the
  rest of the process, which is about to report the failure and end.
  """
  captured = io.StringIO()
  asyncio_logger = logging.getLogger("asyncio")
  asyncio_logger.addFilter(_UNRETRIEVED_READ_ERRORS)
  try:
    with contextlib.redirect_stderr(captured):
      yield
  except BaseException:
    with contextlib.redirect_stderr(captured):
      deadline, size = time.monotonic() + most_seconds, -1
      while size != captured.tell() and time.monotonic() < deadline:
        size = captured.tell()
        time.sleep(quiet_seconds)
    raise
  asyncio_logger.removeFilter(_UNRETRIEVED_READ_ERRORS)
  sys.stderr.write(captured.getvalue())
