"""What every benchmark script shares: timing on a busy machine, the device's name, JSON output, torch.

Timing: each measurement runs a jitted function once to compile and warm up, then `repeats` times; it keeps
the **minimum** (the run least disturbed by other processes: the benchmark machine is a 2-core CPU shared
with other work, where medians wander by 2× between runs) and the median. Ratios are always of
measurements taken in the same process, one right after the other.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import jax  # noqa: E402  (after the sys.path fix, so the scripts run from anywhere)


def time_ms(fn: Callable[[], Any], repeats: int, sync: Callable[[Any], Any] = jax.block_until_ready) -> dict:
  """{min_ms, median_ms} of ``fn()`` over ``repeats`` runs after one warm-up; ``sync`` waits for results."""
  sync(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    sync(fn())
    times.append(1e3 * (time.perf_counter() - start))
  return {"min_ms": min(times), "median_ms": statistics.median(times)}


def device_description() -> str:
  """The JAX device and the host CPU, e.g. "cpu (AMD EPYC, 2 cores)"."""
  device = jax.devices()[0]
  cpu = _cpu_model() or platform.processor() or platform.machine()
  return f"{device.device_kind} ({cpu}, {os.cpu_count()} cores)" if device.platform == "cpu" else (
      f"{device.device_kind} (host {cpu})")


def _cpu_model() -> str | None:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def environment() -> dict:
  """The facts a reader needs to compare two JSON files."""
  info = {"device": device_description(), "platform": jax.default_backend(), "jax": jax.__version__,
          "python": platform.python_version()}
  torch = sys.modules.get("torch")  # only where the benchmark itself uses it: importing torch after
  if torch is not None:              # TensorFlow has loaded can crash (`import_torch`)
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  return info


def import_torch():
  """torch, or None when torch or torchvision is not installed (the optional `torch` extra, never a
  requirement). Imports torchvision.ops too: call this before anything loads TensorFlow (as
  `simplenet_jax.train` does, through tensorflow-datasets), after which the CUDA build of torch segfaults
  when torchvision.ops pulls in triton."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import torchvision.ops  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  except ImportError:
    return None
  return torch


def write_json(path: str | None, payload: dict) -> None:
  """Writes the results to a temporary name beside `path`, then renames it: a kill never leaves half a file."""
  if path:
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
      partial.write_text(json.dumps({**environment(), **payload}, indent=2) + "\n")
      os.replace(partial, target)
    except OSError as error:
      partial.unlink(missing_ok=True)
      sys.exit(f"error: cannot write {path}: {error.strerror or error}.")
    print(f"wrote {path}")


def print_table(title: str, columns: list[tuple[str, str, str]], rows: list[dict]) -> None:
  """Prints rows as a table; columns are (header, key, format), a missing value prints as "–"."""
  cells = [["–" if row.get(key) is None else format(row[key], fmt) for _, key, fmt in columns] for row in rows]
  widths = [max([len(header), 9] + [len(line[i]) for line in cells]) + 2 for i, (header, _, _) in enumerate(columns)]
  print(title)
  headers = [header for header, _, _ in columns]
  print("".join(f"{text:>{w}}" if i else f"{text:<{w}}" for i, (text, w) in enumerate(zip(headers, widths))))
  for line in cells:
    print("".join(f"{text:>{w}}" if i else f"{text:<{w}}" for i, (text, w) in enumerate(zip(line, widths))))
