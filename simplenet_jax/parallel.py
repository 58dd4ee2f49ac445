"""Data parallelism with `jax.jit` over a device `Mesh` (no pmap): one GPU, many GPUs, TPU, several hosts.

The mesh has one axis, ``data``, over every device of every process. Batches are sharded along it; the
parameters and optimizer state are replicated. Each process feeds only its own slice of the global batch.
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(distributed_config) -> None:
  """Calls `jax.distributed.initialize()` when `config.distributed.enabled` (before any other JAX call).

  Empty fields are left for JAX to detect from the cluster (TPU pods, SLURM, ...); on CPU the collectives
  go through gloo so that several processes on one machine can be tested.
  """
  if not distributed_config.enabled:
    return
  # Only CPU collectives use this; GPUs and TPUs keep their own (NCCL, ICI).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  kwargs = {}
  if distributed_config.coordinator_address:
    kwargs["coordinator_address"] = distributed_config.coordinator_address
  if distributed_config.num_processes > 0:
    kwargs["num_processes"] = distributed_config.num_processes
  if distributed_config.process_id >= 0:
    kwargs["process_id"] = distributed_config.process_id
  jax.distributed.initialize(**kwargs)
  logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def make_mesh(devices=None) -> Mesh:
  """A one-axis mesh over `devices` (default: all devices of all processes)."""
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the ``data`` axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
  """One clear error if the global batch does not divide over the mesh's devices."""
  devices = mesh.devices.size
  if global_batch_size < 1 or global_batch_size % devices:
    suggestion = max(devices, round(global_batch_size / devices) * devices)
    raise ValueError(f"config.batch_size={global_batch_size} must be a positive multiple of the {devices} "
                     f"devices of the mesh; use e.g. --config.batch_size={suggestion}.")


def round_up_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """The smallest multiple of the mesh's device count that is at least `global_batch_size` (a Colab TPU v2-8
  has 8 devices, so the demo's batch of 4 becomes 8)."""
  devices = mesh.devices.size
  return max(1, -(-global_batch_size // devices)) * devices


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles the global, sharded batch from each process's local numpy slice."""
  sharding = batch_sharding(mesh)
  return {key: jax.make_array_from_process_local_data(sharding, value) for key, value in local_batch.items()}
