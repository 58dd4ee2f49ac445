"""simplenet_jax.parallel: the one-axis mesh, batch and replicated shardings, batch-size checks and the
distributed start, on the test's one CPU device and, in a short subprocess, on four."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from simplenet_jax import parallel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _nearest_multiples(batch_size, devices):
  """Every multiple of `devices` (≥ `devices`) nearest to `batch_size`: one, or two at a tie."""
  multiples = range(devices, max(batch_size, 0) + 2 * devices, devices)
  best = min(abs(m - batch_size) for m in multiples)
  return {m for m in multiples if abs(m - batch_size) == best}


def _smallest_multiple_at_least(batch_size, devices):
  return next(m for m in range(devices, batch_size + 2 * devices, devices) if m >= batch_size)


def test_mesh_over_one_device_shards_the_leading_axis():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ("data",) and mesh.devices.shape == (jax.device_count(),)
  assert list(mesh.devices.flat) == jax.devices()
  assert parallel.make_mesh(jax.devices()[:1]).devices.shape == (1,)
  assert parallel.batch_sharding(mesh).spec == P("data") and parallel.replicated(mesh).spec == P()
  assert parallel.batch_sharding(mesh).mesh == mesh == parallel.replicated(mesh).mesh


def test_global_batch_on_one_device_holds_every_local_value():
  mesh = parallel.make_mesh(jax.devices()[:1])
  rng = np.random.default_rng(0)
  local = {"blur": rng.uniform(size=(3, 5, 7, 3)).astype(np.float32),
           "sharp": rng.integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)}
  batch = parallel.global_batch(local, mesh)
  assert batch.keys() == local.keys()
  for key, value in local.items():
    assert isinstance(batch[key], jax.Array) and batch[key].dtype == value.dtype
    assert batch[key].sharding == parallel.batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(batch[key]), value)


@pytest.mark.parametrize("batch_size", [1, 2, 7, 13])
def test_any_positive_batch_divides_over_one_device(batch_size):
  mesh = parallel.make_mesh(jax.devices()[:1])
  parallel.check_batch_size(batch_size, mesh)
  assert parallel.round_up_batch_size(batch_size, mesh) == batch_size


@pytest.mark.parametrize("batch_size", [0, -3])
def test_a_batch_below_one_is_one_sentence(batch_size):
  mesh = parallel.make_mesh(jax.devices()[:1])
  with pytest.raises(ValueError) as info:
    parallel.check_batch_size(batch_size, mesh)
  assert str(info.value) == (f"config.batch_size={batch_size} must be a positive multiple of the 1 devices of the "
                             "mesh; use e.g. --config.batch_size=1.")
  assert parallel.round_up_batch_size(batch_size, mesh) == 1


class _Config:
  def __init__(self, **fields):
    self.__dict__.update(fields)


def test_initialize_distributed_passes_only_the_fields_given(monkeypatch):
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
  before = jax.config.jax_cpu_collectives_implementation
  try:
    parallel.initialize_distributed(_Config(enabled=False, coordinator_address="h:1", num_processes=2,
                                            process_id=0))
    assert calls == [] and jax.config.jax_cpu_collectives_implementation == before
    parallel.initialize_distributed(_Config(enabled=True, coordinator_address="", num_processes=0, process_id=-1))
    parallel.initialize_distributed(_Config(enabled=True, coordinator_address="10.0.0.2:1234", num_processes=4,
                                            process_id=0))
    assert jax.config.jax_cpu_collectives_implementation == "gloo"
  finally:
    jax.config.update("jax_cpu_collectives_implementation", before)
  assert calls == [{}, {"coordinator_address": "10.0.0.2:1234", "num_processes": 4, "process_id": 0}]


FOUR_DEVICES = """
import json
import jax, numpy as np
from simplenet_jax import parallel
mesh = parallel.make_mesh()
local = np.arange(8 * 5 * 3, dtype=np.float32).reshape(8, 5, 3)
batch = parallel.global_batch({"x": local}, mesh)["x"]
shards = sorted((s.index[0].start, s.device.id, np.asarray(s.data).tolist()) for s in batch.addressable_shards)
replicated = jax.device_put(local, parallel.replicated(mesh))
errors = {}
for b in (-4, 0, 2, 6, 7, 10, 13):
  try:
    parallel.check_batch_size(b, mesh)
  except ValueError as e:
    errors[b] = str(e)
print(json.dumps({"devices": mesh.devices.size, "shards": shards, "sum": float(jax.jit(lambda v: v.sum())(batch)),
                  "replicated": [np.array_equal(np.asarray(s.data), local) for s in replicated.addressable_shards],
                  "errors": errors, "accepted": [b for b in (4, 8, 12) if b not in errors],
                  "rounded": {b: parallel.round_up_batch_size(b, mesh) for b in (-1, 0, 1, 4, 5, 8, 9)}}))
"""


def test_four_cpu_devices_split_the_batch_and_check_its_size():
  env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
  run = subprocess.run([sys.executable, "-c", FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=120,
                       check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.loads(run.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  local = np.arange(8 * 5 * 3, dtype=np.float32).reshape(8, 5, 3)
  assert [start for start, _, _ in result["shards"]] == [0, 2, 4, 6]
  assert len({device for _, device, _ in result["shards"]}) == 4
  for start, _, data in result["shards"]:
    np.testing.assert_array_equal(data, local[start:start + 2])
  assert result["sum"] == float(local.astype(np.float64).sum())
  assert result["replicated"] == [True] * 4
  assert result["accepted"] == [4, 8, 12]
  assert sorted(int(b) for b in result["errors"]) == [-4, 0, 2, 6, 7, 10, 13]
  for b, error in result["errors"].items():
    prefix = f"config.batch_size={b} must be a positive multiple of the 4 devices of the mesh; use e.g. "
    assert error.startswith(prefix) and error.endswith(".")
    suggestion = int(error[len(prefix):].removeprefix("--config.batch_size=").rstrip("."))
    assert suggestion in _nearest_multiples(int(b), 4), (b, suggestion)
  assert {int(b): r for b, r in result["rounded"].items()} == {
      b: _smallest_multiple_at_least(b, 4) for b in (-1, 0, 1, 4, 5, 8, 9)}
