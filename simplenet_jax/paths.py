"""Every path a user gives (workdir, data, outputs) as an `etils.epath.Path`: a local folder or a bucket URL.

`pathlib.Path("gs://bucket/run")` is the relative folder `gs:/bucket/run`; `epath.Path` keeps the URL and
reaches the bucket through TensorFlow's gfile or fsspec, as orbax, clu and TFDS do.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import threading
from collections.abc import Iterator

from etils import epath

URL_SCHEMES = ("gs://", "s3://", "az://", "hf://")
PARTIAL = ".partial"  # the suffix of a file being written; no command takes such a name for a finished output
PROBE_SECONDS = 60.0  # a bucket that does not answer by then is reported unreachable


def is_url(path: str | os.PathLike) -> bool:
  return os.fspath(path).startswith(URL_SCHEMES)


def user_path(path: str | os.PathLike) -> epath.Path:
  """A bucket URL as it is; a local path with `~` expanded, made absolute (orbax wants absolute paths)."""
  if is_url(path):
    return epath.Path(os.fspath(path))
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def check_reachable(path: str | os.PathLike, what: str, *, seconds: float = PROBE_SECONDS) -> None:
  """One ValueError sentence if `path` is a bucket URL that cannot be read (no credentials, no network, no
  such bucket), before any work starts; local paths are left to the code that uses them."""
  if not is_url(path):
    return
  path, outcome = epath.Path(os.fspath(path)), {}

  def probe():
    try:
      outcome["exists"] = path.exists()
    except Exception as error:  # pylint: disable=broad-except  # each backend raises its own kind
      outcome["error"] = error

  thread = threading.Thread(target=probe, daemon=True)  # a backend retrying forever must not hang the run
  thread.start()
  thread.join(seconds)
  hint = ("on a TPU or GCE VM, give its service account access to the bucket; elsewhere, run `gcloud auth "
          "application-default login`")
  if thread.is_alive():
    raise ValueError(f"cannot reach the {what} {path}: no answer within {seconds:.0f} s (no network or no "
                     f"credentials?); {hint}.")
  if "error" in outcome:
    raise ValueError(f"cannot reach the {what} {path} ({first_line(outcome['error'])}); {hint}.")


def first_line(error: BaseException, limit: int = 300) -> str:
  """The error's first line, without tensorstore's JSON spec, at most `limit` characters."""
  line = (str(error).strip().splitlines() or [type(error).__name__])[0].split(" [tensorstore_spec")[0]
  return (line if len(line) <= limit else line[:limit - 1] + "…").rstrip(".")


def check_writable(folder: epath.Path, what: str, flag: str) -> None:
  """Creates `folder` and writes and removes a file in it: one ValueError sentence (naming `flag`) if that
  fails, before any work is done."""
  check_reachable(folder, what)
  probe = folder / ".simplenet_write_test"
  try:
    folder.mkdir(parents=True, exist_ok=True)
    probe.write_bytes(b"")
    probe.unlink()
  except Exception as error:  # pylint: disable=broad-except  # OSError here, gfile's own errors on a bucket
    reason = getattr(error, "strerror", None) or first_line(error)
    raise ValueError(f"cannot write to the {what} {folder} ({reason}); pass {flag} with a writable folder.") from None


def partial_path(path: epath.Path) -> epath.Path:
  """Where `path` is written before it is complete: a hidden name in the same folder (so the rename is
  atomic), ending in PARTIAL, which no reader or rerun takes for a finished file."""
  return path.with_name(f".{path.name}{PARTIAL}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
  """Opens `path` for writing so that it appears complete or not at all: locally the data goes to
  `partial_path(path)`, which is renamed over `path` only after the block ends without an exception (a kill,
  a full disk or an error leaves at most the partial file, which the next write replaces). A bucket object
  is written once, when the upload completes, which is already atomic."""
  path = epath.Path(path)
  if is_url(path):
    with path.open(mode) as f:
      yield f
    return
  partial = partial_path(path)
  try:
    with partial.open(mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(partial, path)
  except BaseException:
    with contextlib.suppress(OSError):
      partial.unlink()
    raise


def cache_dir() -> pathlib.Path:
  """Where downloads and compile results are kept: $SIMPLENET_CACHE, else $XDG_CACHE_HOME/simplenet-jax, else
  ~/.cache/simplenet-jax."""
  if os.environ.get("SIMPLENET_CACHE"):
    return pathlib.Path(os.environ["SIMPLENET_CACHE"])
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "simplenet-jax"
