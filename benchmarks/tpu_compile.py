"""Will it fit? The project's programs compiled by XLA:TPU for TPU slices, on any machine, with no TPU.

    python benchmarks/tpu_compile.py                       # the v5e rows (about 30 minutes on 2 CPU cores)
    python benchmarks/tpu_compile.py --topology v5p:2x2x1 --program train
    python benchmarks/tpu_compile.py --all --json tpu.json # every topology and program (hours)
    python benchmarks/tpu_compile.py --breakdown           # each layer kind as its own program (v5e:1x1)
    python benchmarks/tpu_compile.py --smoke               # tiny widths, seconds (the test suite)
    python benchmarks/tpu_compile.py --gpu all             # XLA:GPU for an H100, an A100 and a T4 (minutes)

XLA:TPU itself (libtpu, `bash scripts/setup.sh --tpu`) compiles each program for a topology described by
`jax.experimental.topologies.get_topology_desc`, with no TPU attached, as MaxText's `train_compile.py` does:
the same compiler, the same HLO passes and the same memory assignment as on the chips. Per row:

* ``hbm_needed_gib``: the compiled program's peak HBM per chip (arguments, outputs and temporaries;
  `memory_analysis().peak_memory_in_bytes`), against ``hbm_gib``, the chip's HBM (``fits``). A program that
  does not fit is refused by the compiler, which says by how much: the row gives that figure.
* ``est_ms``: the **XLA:TPU cost-model estimate** of one run on one chip: max(FLOPs / peak FLOP/s, HBM bytes /
  HBM bandwidth), from `cost_analysis()` and each chip's published figures. It is an estimate, never a
  measurement. `cost_analysis()` counts a `while` loop's body once, so a program whose deformable convs loop
  over tiles is estimated from the same program compiled as one tile (``dcn_tile_bytes=0``); its memory is
  the real program's.
* ``compute_bound_ms``: FLOPs / peak only, the estimate a FLOP count gives (what the README used to quote).

Programs (paper widths, `configs/gopro_tpu.py`: `configs/gopro.py` with the deformable convs a TPU runs fast):

* ``train``: the trainer's own step (`train.make_step`: state replicated and donated, the uint8 batch of 8 ×
  256² split over the chips), float32 at default and at highest matmul precision, and bfloat16;
* ``forward_720p``: the network on one 720 × 1280 image per chip;
* ``eval``: evaluation as `eval.py` runs it on one 720p pair per chip: reflect-pad, network, uint8, PSNR,
  both SSIMs and the colour shift (`scoring.batch_scores`).

``--gpu`` compiles the same programs with XLA:GPU (JAX's CUDA plugin, `bash scripts/setup.sh --cuda`) for a
card described by its published figures (`GPUS`), with no GPU and no driver, from `configs/gopro.py` (GPUs keep
the gathers). Its rows give the card's peak memory; XLA:GPU has no cost analysis, so they have no estimate.

``--breakdown`` compiles each layer kind at its real shapes (paper widths, one chip's share of the batch of
8 × 256²), forward and forward + backward, as its own program with no loop, multiplies by how often the
network runs it, and compares the sum with the whole step compiled as one program.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import re
import sys
import time

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import print_table
from common import write_json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import gopro
from configs import gopro_tpu
from configs import smoke as smoke_config
from simplenet_jax import inference
from simplenet_jax import parallel
from simplenet_jax import paths
from simplenet_jax import photos
from simplenet_jax import train
from simplenet_jax.evaluation import scoring
from simplenet_jax.models import SimpleNet


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures (Google Cloud TPU documentation)."""
  name: str
  hbm_gib: float
  peak_tflops: float  # dense bf16
  hbm_gbps: float  # HBM bandwidth, GB/s


CHIPS = {
    "v4": Chip("TPU v4", 32, 275, 1228),
    "v5e": Chip("TPU v5e", 16, 197, 819),
    "v5p": Chip("TPU v5p", 95, 459, 2765),
    "v6e": Chip("TPU v6e", 32, 918, 1640),
}
# Topology names as `get_topology_desc` takes them, and their extra arguments: a single v5e chip is a host of
# its own (without the bounds, "v5e:1x1" is read as one chip of a 2×2 host); a v4 chip is one megacore
# device, as Cloud TPU runs it (without it, each of its two cores is a device with half the chip's HBM).
TOPOLOGIES = {
    "v5e:1x1": {"chips_per_host_bounds": (1, 1, 1)},
    "v5e:2x2": {},
    "v5e:2x4": {},
    "v4:2x2x1": {"chip_config_name": "megacore"},
    "v5p:2x2x1": {},
    "v6e:1x1": {"chips_per_host_bounds": (1, 1, 1)},
    "v6e:2x4": {},
}
DEFAULT_TOPOLOGIES = ("v5e:1x1", "v5e:2x2", "v5e:2x4")
# (program, dtype, matmul precision)
VARIANTS = (
    ("train", "float32", "default"),
    ("train", "float32", "highest"),
    ("train", "bfloat16", "default"),
    ("forward_720p", "float32", "default"),
    ("eval", "float32", "default"),
)
PROGRAMS = tuple(dict.fromkeys(program for program, _, _ in VARIANTS))
GIB = 1 << 30


class NoXlaTpuError(RuntimeError):
  """libtpu (XLA:TPU) is not installed."""


@dataclasses.dataclass(frozen=True)
class Gpu:
  """Published per-card figures (NVIDIA's data sheets and CUDA's per-architecture limits), which XLA:GPU takes
  as the card it compiles for (a `GpuTargetConfigProto`) when no GPU is attached."""
  name: str
  memory_gib: float
  compute_capability: tuple[int, int]
  sms: int
  fp32_lanes_per_sm: int
  clock_ghz: float
  bandwidth_gbps: float
  l2_mib: int
  shared_kib_per_sm: int
  shared_kib_per_block: int  # with the opt-in
  threads_per_sm: int

  def target_config(self) -> str:
    major, minor = self.compute_capability
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: {self.shared_kib_per_sm * 1024} threads_per_core_limit: {self.threads_per_sm}
  core_count: {self.sms} fpus_per_core: {self.fp32_lanes_per_sm}
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {int(self.bandwidth_gbps * 1e9)} l2_cache_size: {self.l2_mib << 20}
  clock_rate_ghz: {self.clock_ghz} device_memory_size: {int(self.memory_gib * GIB)}
  shared_memory_per_block_optin: {self.shared_kib_per_block * 1024}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
device_description_str: "{self.name}"
"""


GPUS = {
    "h100": Gpu("NVIDIA H100 SXM5 80GB", 80, (9, 0), 132, 128, 1.98, 3350, 50, 228, 227, 2048),
    "a100": Gpu("NVIDIA A100 SXM4 40GB", 40, (8, 0), 108, 64, 1.41, 1555, 40, 164, 163, 2048),
    "t4": Gpu("NVIDIA T4", 16, (7, 5), 40, 64, 1.59, 320, 4, 64, 64, 1024),
}


class NoXlaGpuError(RuntimeError):
  """The CUDA compiler plugin (XLA:GPU) is not installed."""


def libtpu_path() -> str | None:
  """libtpu.so: $TPU_LIBRARY_PATH, the `libtpu` package (the tpu extra) or `.venv/libtpu` (scripts/setup.sh
  --tpu puts it there, outside the import path, so that CPU runs never load it)."""
  candidates = [os.environ.get("TPU_LIBRARY_PATH")]
  spec = importlib.util.find_spec("libtpu")
  if spec is not None and spec.origin:
    candidates.append(os.path.join(os.path.dirname(spec.origin), "libtpu.so"))
  candidates.append(os.fspath(ROOT / ".venv" / "libtpu" / "libtpu" / "libtpu.so"))
  return next((path for path in candidates if path and os.path.isfile(path)), None)


def use_xla_tpu() -> None:
  """Lets JAX compile for TPU topologies while computing on the CPU (no TPU is looked for)."""
  path = libtpu_path()
  if path is None:
    raise NoXlaTpuError("XLA:TPU is not installed: run `bash scripts/setup.sh --tpu` (or `pip install "
                        "'simplenet-jax[tpu]'`) first.")
  os.environ["TPU_LIBRARY_PATH"] = path
  # Off a TPU VM, libtpu would ask the metadata server for the slice and log a page of warnings.
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-1")
  # Compiling needs no chip, so several processes (the test suite's workers) may hold libtpu at once.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  # libtpu writes INFO and WARNING log files of every process into /tmp/tpu_logs, and with TPU_LOG_DIR=disabled
  # alone into /tmp itself. A compile-only run needs none (its errors are exceptions): log nothing below FATAL,
  # so that no file is made (set TPU_MIN_LOG_LEVEL=0 and TPU_LOG_DIR to a folder to keep them).
  os.environ.setdefault("TPU_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("TPU_LOG_DIR", "disabled")
  if not jax._src.xla_bridge.backends_are_initialized():  # pylint: disable=protected-access
    jax.config.update("jax_platforms", "cpu")


def cuda_compiler_path() -> str | None:
  """The folder that holds JAX's CUDA plugin: `.venv/cuda` (scripts/setup.sh --cuda puts it there, outside the
  import path, so that CPU runs never load it), or None when the plugin is importable already (jax[cuda12])."""
  if importlib.util.find_spec("jax_cuda12_plugin") is not None:
    return None
  folder = ROOT / ".venv" / "cuda"
  if not (folder / "jax_cuda12_plugin").is_dir():
    raise NoXlaGpuError("XLA:GPU is not installed: run `bash scripts/setup.sh --cuda` (or `pip install "
                        f"'jax[cuda12]=={jax.__version__}'`) first.")
  return os.fspath(folder)


def use_xla_gpu() -> None:
  """Lets JAX compile for the GPUs of `GPUS` with no GPU and no driver: the CUDA plugin compiles for a target
  config, while computing stays on the CPU (without `jax_platforms=cpu` the plugin would look for a driver)."""
  path = cuda_compiler_path()
  if path is not None and path not in sys.path:
    sys.path.insert(0, path)
  if not jax._src.xla_bridge.backends_are_initialized():  # pylint: disable=protected-access
    jax.config.update("jax_platforms", "cpu")


def is_gpu(topology: str) -> bool:
  return topology in GPUS


def topology_mesh(name: str) -> jax.sharding.Mesh:
  """The project's one-axis data mesh (`parallel.make_mesh`) over a topology's compile-only devices."""
  from jax.experimental import topologies  # pylint: disable=import-outside-toplevel
  if is_gpu(name):
    return parallel.make_mesh(topologies.get_topology_desc(platform="cuda", topology="1x1x1",
                                                           target_config=GPUS[name].target_config()).devices)
  return parallel.make_mesh(topologies.get_topology_desc(topology_name=name, platform="tpu",
                                                         **TOPOLOGIES[name]).devices)


def chip_of(topology: str) -> Chip:
  if is_gpu(topology):  # XLA:GPU has no cost analysis: only the memory counts
    gpu = GPUS[topology]
    return Chip(gpu.name, gpu.memory_gib, float("nan"), gpu.bandwidth_gbps)
  return CHIPS[topology.split(":")[0]]


# ----------------------------------------------------------------------------------------------- programs


def paper_config(smoke: bool, dtype: str = "float32", precision: str = "default", tile_bytes: int | None = None,
                 gpu: bool = False):
  """`configs/gopro_tpu.py` (for a GPU `configs/gopro.py`: gathers in tiles), at smoke widths with `smoke`."""
  config = gopro.get_config() if gpu else gopro_tpu.get_config()
  if smoke:
    small = smoke_config.get_config()
    config.model.widths, config.model.lgcr_rank = small.model.widths, small.model.lgcr_rank
  config.compute_dtype, config.matmul_precision = dtype, precision
  if tile_bytes is not None:
    config.model.dcn_tile_bytes = tile_bytes
  return config


def _abstract(tree, sharding):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


def lower_train(config, mesh, batch: int, crop: int):
  """The trainer's step (`train.make_step`) with abstract, sharded arguments."""
  tx = train.make_optimizer(config)
  graphdef, state = train.abstract_train_state(config, tx)
  step = train.make_step(config, mesh, graphdef, tx)
  pixels = jax.ShapeDtypeStruct((batch, crop, crop, 3), jnp.uint8, sharding=parallel.batch_sharding(mesh))
  return step.lower(_abstract(state, parallel.replicated(mesh)), {"blur": pixels, "sharp": pixels})


def _abstract_params(config, mesh):
  model = nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model)
  compute = train.COMPUTE_DTYPES[config.compute_dtype]
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, compute), params)
  return graphdef, _abstract(params, parallel.replicated(mesh))


def lower_forward(config, mesh, size: tuple[int, int]):
  """The network on one image per chip."""
  graphdef, params = _abstract_params(config, mesh)
  compute = train.COMPUTE_DTYPES[config.compute_dtype]
  image = jax.ShapeDtypeStruct((mesh.devices.size, *size, 3), jnp.float32, sharding=parallel.batch_sharding(mesh))

  @jax.jit
  def forward(params, image):
    with jax.default_matmul_precision(config.matmul_precision):
      return nnx.merge(graphdef, params)(image, compute_dtype=compute)

  return forward.lower(params, image)


def lower_eval(config, mesh, size: tuple[int, int]):
  """`eval.py`'s device work on one pair per chip: pad, network, uint8, `scoring.batch_scores`."""
  graphdef, params = _abstract_params(config, mesh)
  pixels = jax.ShapeDtypeStruct((mesh.devices.size, *size, 3), jnp.uint8, sharding=parallel.batch_sharding(mesh))

  @jax.jit
  def evaluate(params, blur, sharp):
    network = inference.at_any_size(lambda image: nnx.merge(graphdef, params)(image))
    output = photos.to_uint8(network(photos.to_float(blur)))
    return scoring.batch_scores(blur, output, sharp)

  return evaluate.lower(params, pixels, pixels)


def lower_program(program: str, config, mesh, smoke: bool):
  if program == "train":
    crop = 32 if smoke else 256
    return lower_train(config, mesh, max(8, mesh.devices.size) if not smoke else 2 * mesh.devices.size, crop)
  size = (36, 44) if smoke else (720, 1280)
  return lower_forward(config, mesh, size) if program == "forward_720p" else lower_eval(config, mesh, size)


# ---------------------------------------------------------------------------------------------- analysis


def cost_of(compiled) -> dict[str, float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def estimate_ms(cost: dict[str, float], chip: Chip) -> tuple[float, float]:
  """(XLA:TPU cost-model estimate, the FLOP-only estimate), in ms."""
  compute = cost["flops"] / (chip.peak_tflops * 1e12) * 1e3
  return max(compute, cost["bytes"] / (chip.hbm_gbps * 1e9) * 1e3), compute


def has_loop(compiled) -> bool:
  return bool(re.search(r"\bwhile\(", compiled.as_text()))


# How XLA:TPU says that a program does not fit: the temporaries' size, or (libtpu 0.0.42's "CompileTimeHbmOom")
# the whole HBM use.
_OOM = (re.compile(r"HLO temporaries \(([\d.]+)([KMGT])\)"),
        re.compile(r"Used ([\d.]+)([KMGT]) of [\d.]+[KMGT] hbm"))


def hbm_needed_gib(message: str) -> float | None:
  """The GiB a chip would need, from XLA:TPU's refusal of a program that does not fit; None if it is not one."""
  if "RESOURCE_EXHAUSTED" not in message:
    return None
  for pattern in _OOM:
    found = pattern.search(message)
    if found:
      return float(found.group(1)) * {"K": 2 ** -20, "M": 2 ** -10, "G": 1, "T": 2 ** 10}[found.group(2)]
  return None


def compile_row(program: str, dtype: str, precision: str, topology: str, smoke: bool) -> dict:
  chip = chip_of(topology)
  mesh = topology_mesh(topology)
  row = {"program": program, "dtype": dtype, "precision": precision, "topology": topology,
         "chips": int(mesh.devices.size), "hbm_gib": chip.hbm_gib}
  config = paper_config(smoke, dtype, precision, gpu=is_gpu(topology))
  start = time.perf_counter()
  try:
    compiled = lower_program(program, config, mesh, smoke).compile()
  except jax.errors.JaxRuntimeError as error:
    # The compiler refuses a program that does not fit and says how much it needs.
    needed = hbm_needed_gib(str(error))
    if needed is None:
      raise
    row.update(hbm_needed_gib=needed, fits=False, compile_s=time.perf_counter() - start, est_ms=None,
               compute_bound_ms=None)
    return row
  row["compile_s"] = time.perf_counter() - start
  memory = compiled.memory_analysis()
  row["hbm_needed_gib"] = memory.peak_memory_in_bytes / GIB
  row["fits"] = row["hbm_needed_gib"] <= chip.hbm_gib
  if is_gpu(topology):  # `cost_analysis()` is not implemented for XLA:GPU: no estimate
    row["est_ms"] = row["compute_bound_ms"] = None
    return row
  estimated = compiled
  if has_loop(compiled):  # loop bodies are counted once: estimate from the same program as one tile
    estimated = lower_program(program, paper_config(smoke, dtype, precision, tile_bytes=0), mesh, smoke).compile()
    row["compile_s"] = time.perf_counter() - start
  row["est_ms"], row["compute_bound_ms"] = estimate_ms(cost_of(estimated), chip)
  return row


def code_fingerprint() -> str:
  """What a compiled row depends on: this file, the package, the configs, JAX's and libtpu's versions."""
  digest = hashlib.sha256(f"{jax.__version__} {libtpu_path()}".encode())
  for folder, pattern in ((ROOT / "simplenet_jax", "**/*.py"), (ROOT / "configs", "*.py")):
    for path in sorted(folder.glob(pattern)):
      digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
  digest.update(pathlib.Path(__file__).read_bytes())
  return digest.hexdigest()[:16]


class RowCache:
  """Compiled rows kept on disk (`paths.cache_dir()/tpu_compile`), one file per row, keyed by the row and
  `code_fingerprint()`: rerunning `--all` after an interruption, or with other topologies, compiles only what
  it has not compiled for this code. Each file is written whole, then renamed."""

  def __init__(self, smoke: bool, enabled: bool = True):
    self.folder = paths.cache_dir() / "tpu_compile" / code_fingerprint()
    self.smoke, self.enabled = smoke, enabled

  def _path(self, program, dtype, precision, topology) -> pathlib.Path:
    name = f"{'smoke' if self.smoke else 'paper'}-{program}-{dtype}-{precision}-{topology.replace(':', '_')}"
    return self.folder / f"{name}.json"

  def get(self, *key) -> dict | None:
    path = self._path(*key)
    if not self.enabled or not path.is_file():
      return None
    try:
      return {**json.loads(path.read_text()), "cached": True}
    except (OSError, ValueError):
      return None  # unreadable: compile again

  def put(self, row: dict, *key) -> None:
    if not self.enabled:
      return
    path = self._path(*key)
    partial = path.with_name(f".{path.name}.partial")
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      partial.write_text(json.dumps(row))
      os.replace(partial, path)
    except OSError as error:  # a cache that cannot be written costs a recompile, nothing else
      partial.unlink(missing_ok=True)
      print(f"note: row not cached ({error.strerror or error})", file=sys.stderr)


# --------------------------------------------------------------------------------------------- breakdown


def _conv(x, kernel, dilation=1):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", rhs_dilation=(dilation, dilation),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def layer_programs(config, batch: int, crop: int) -> list[tuple[str, int, object, tuple, tuple]]:
  """(layer, times one step runs it, function, abstract arguments, differentiated argnums) of each layer
  kind at its real shapes. Per scale, SimpleNet has an encoder and a decoder stage: each a ResBlock (3
  convs) and a PVB (3 dilated convs, a deformable branch, a deformable fuse of 4·C channels), the decoder's
  also a DR (a deformable conv and a conv); every deformable conv has its own offset (18) and mask (9) convs.
  The head, the down- and up-sampling convs and the tail are left out (the remainder of the comparison)."""
  from simplenet_jax.models import global_context  # pylint: disable=import-outside-toplevel
  from simplenet_jax.ops import deform_conv2d  # pylint: disable=import-outside-toplevel
  max_offset, sampling = config.model.dcn_max_offset or None, config.model.dcn_sampling
  f32 = jnp.float32

  def spec(*shape):
    return jax.ShapeDtypeStruct(shape, f32)

  def dcn(x, offset, mask, kernel):
    return deform_conv2d(x, offset, mask, kernel, tile_bytes=0, max_offset=max_offset, sampling=sampling)

  layers = []
  for scale, c in enumerate(config.model.widths):
    side = crop >> scale
    x, wide = spec(batch, side, side, c), spec(batch, side, side, 4 * c)
    offset, mask = spec(batch, side, side, 18), spec(batch, side, side, 9)
    at = f"{side}²"
    layers += [
        (f"DCN {c}→{c} (PVB branch) {at}", 2, dcn, (x, offset, mask, spec(3, 3, c, c)), (0, 1, 2, 3)),
        (f"DCN {4 * c}→{c} (PVB fuse) {at}", 2, dcn, (wide, offset, mask, spec(3, 3, 4 * c, c)), (0, 1, 2, 3)),
        (f"DCN {c}→{c} (DR) {at}", 1, dcn, (x, offset, mask, spec(3, 3, c, c)), (0, 1, 2, 3)),
        (f"conv 3×3 {c}→{c} {at}", 2 * 3 + 2 * 1 + 1, _conv, (x, spec(3, 3, c, c)), (0, 1)),
        (f"conv 3×3 dilation 2 {c}→{c} {at}", 2, functools.partial(_conv, dilation=2), (x, spec(3, 3, c, c)), (0, 1)),
        (f"conv 3×3 dilation 3 {c}→{c} {at}", 2, functools.partial(_conv, dilation=3), (x, spec(3, 3, c, c)), (0, 1)),
        (f"offset+mask convs {c}→18, →9 {at}", 3, lambda x, k1, k2: (_conv(x, k1), _conv(x, k2)),
         (x, spec(3, 3, c, 18), spec(3, 3, c, 9)), (0, 1, 2)),
        (f"offset+mask convs {4 * c}→18, →9 {at}", 2, lambda x, k1, k2: (_conv(x, k1), _conv(x, k2)),
         (wide, spec(3, 3, 4 * c, 18), spec(3, 3, 4 * c, 9)), (0, 1, 2)),
    ]
  c3, side = config.model.widths[2], crop >> 2
  block = global_context.global_context_block(config.model.global_context, c3, rank=config.model.lgcr_rank,
                                              softmax_axes=config.model.lgcr_softmax_axes, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(block)
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
  layers.append((f"{config.model.global_context} {c3}ch {side}²", 1,
                 lambda p, x: nnx.merge(graphdef, p)(x), (params, spec(batch, side, side, c3)), (0, 1)))
  tx = train.make_optimizer(config)
  _, state = train.abstract_train_state(config, tx)

  def loss_and_adam(state, pred, sharp, grads):
    loss, grad_pred = jax.value_and_grad(lambda p: jnp.mean(jnp.abs(p - sharp)))(pred)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return loss, grad_pred, jax.tree.map(jnp.add, state.params, updates), opt_state

  image = spec(batch, crop, crop, 3)
  layers.append(("L1 loss + Adam update", 1, loss_and_adam, (state, image, image, state.params), ()))
  return layers


def breakdown_rows(config, topology: str, batch: int, crop: int, whole: bool = True) -> list[dict]:
  """Each layer kind as its own program, forward and forward + backward, × how often the step runs it, and
  the whole step compiled as one program (deformable convs as one tile, so no loop hides a count)."""
  chip = chip_of(topology)
  mesh = topology_mesh(topology)
  one_chip = NamedSharding(jax.sharding.Mesh(np.asarray(mesh.devices.flat[:1]), (parallel.DATA_AXIS,)), P())
  rows = []

  def add(name, pass_name, times, compiled):
    cost = cost_of(compiled)
    est, compute = estimate_ms(cost, chip)
    rows.append({"layer": name, "pass": pass_name, "times": times, "gflop": cost["flops"] / 1e9,
                 "gbytes": cost["bytes"] / 1e9, "est_ms": est, "compute_bound_ms": compute,
                 "step_est_ms": est * times, "loop": has_loop(compiled)})
    print(f"{name}, {pass_name}: {est:.3f} ms × {times}", flush=True)

  for name, times, fn, args, argnums in layer_programs(config, batch, crop):
    args = _abstract(args, one_chip)
    add(name, "forward", times, jax.jit(fn).lower(*args).compile())
    if argnums:
      def loss(*a, fn=fn):
        out = fn(*a)
        return sum(jnp.sum(o.astype(jnp.float32) ** 2) for o in jax.tree.leaves(out))
      add(name, "forward+backward", times, jax.jit(jax.grad(loss, argnums)).lower(*args).compile())
  if not whole:
    return rows
  whole_config = paper_config(False, tile_bytes=0)
  whole_config.model = config.model
  whole_config.model.dcn_tile_bytes = 0
  whole = lower_train(whole_config, jax.sharding.Mesh(np.asarray(mesh.devices.flat[:1]), (parallel.DATA_AXIS,)),
                      batch, crop).compile()
  add("whole train step (one program, DCN as one tile)", "step", 1, whole)
  return rows


def dcn_rows(config, topology: str, batch: int, crop: int) -> list[dict]:
  """Each deformable conv shape of the paper (c → c: PVB branch and DR; 4c → c: PVB fuse; three scales) against
  a plain 3×3 conv of the same shape, forward and forward + backward, sampled by gathers and by matmuls, each
  one program with no loop."""
  from simplenet_jax.ops import deform_conv2d  # pylint: disable=import-outside-toplevel
  chip = chip_of(topology)
  mesh = topology_mesh(topology)
  one_chip = NamedSharding(jax.sharding.Mesh(np.asarray(mesh.devices.flat[:1]), (parallel.DATA_AXIS,)), P())
  bound = config.model.dcn_max_offset or 8.0
  variants = {
      "conv": lambda x, o, m, k: _conv(x, k),
      "gather": lambda x, o, m, k: deform_conv2d(x, o, m, k, tile_bytes=0),
      "matmul": lambda x, o, m, k: deform_conv2d(x, o, m, k, tile_bytes=0, max_offset=bound, sampling="matmul"),
  }
  rows = []
  for scale, c in enumerate(config.model.widths):
    side = crop >> scale
    for cin, role in ((c, "PVB branch, DR"), (4 * c, "PVB fuse")):
      args = _abstract((jax.ShapeDtypeStruct((batch, side, side, cin), jnp.float32),
                        jax.ShapeDtypeStruct((batch, side, side, 18), jnp.float32),
                        jax.ShapeDtypeStruct((batch, side, side, 9), jnp.float32),
                        jax.ShapeDtypeStruct((3, 3, cin, c), jnp.float32)), one_chip)
      row = {"shape": f"{batch}×{side}²×{cin}→{c}", "role": role}
      for name, fn in variants.items():
        argnums = (0, 3) if name == "conv" else (0, 1, 2, 3)
        for pass_name, program in (("fwd", fn),
                                   ("fwd_bwd", jax.grad(lambda *a, fn=fn: jnp.sum(fn(*a) ** 2), argnums))):
          compiled = jax.jit(program).lower(*args).compile()
          assert not has_loop(compiled), (name, pass_name)
          cost = cost_of(compiled)
          row[f"{name}_{pass_name}_ms"] = estimate_ms(cost, chip)[0]
          row[f"{name}_{pass_name}_gb"] = cost["bytes"] / 1e9
      for name in ("gather", "matmul"):
        for pass_name in ("fwd", "fwd_bwd"):
          row[f"{name}_{pass_name}_ratio"] = row[f"{name}_{pass_name}_ms"] / row[f"conv_{pass_name}_ms"]
      rows.append(row)
      print(row, flush=True)
  return rows


# ---------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--topology", action="append", choices=sorted(TOPOLOGIES),
                      help=f"a TPU topology (repeatable; default: {', '.join(DEFAULT_TOPOLOGIES)})")
  parser.add_argument("--program", action="append", choices=PROGRAMS, help="a program (repeatable; default: all)")
  parser.add_argument("--dtype", action="append", choices=("float32", "bfloat16"),
                      help="a compute dtype (repeatable; default: both)")
  parser.add_argument("--all", action="store_true", help="every TPU topology (hours on a 2-core CPU)")
  parser.add_argument("--gpu", action="append", choices=sorted(GPUS) + ["all"],
                      help="a GPU (repeatable; all: every one): XLA:GPU compiles for it with no GPU (`bash "
                           "scripts/setup.sh --cuda`); configs/gopro.py, memory only (no cost analysis there)")
  parser.add_argument("--breakdown", action="store_true", help="the per-layer cost breakdown (v5e:1x1)")
  parser.add_argument("--dcn", action="store_true",
                      help="each deformable conv shape against a plain conv, gathers and matmuls (v5e:1x1)")
  parser.add_argument("--batch", type=int, default=8, help="--breakdown, --dcn: images on the one chip")
  parser.add_argument("--layers-only", action="store_true", help="--breakdown without the whole step")
  parser.add_argument("--dcn-sampling", choices=("gather", "matmul"),
                      help="--breakdown: config.model.dcn_sampling (default: the config's, matmul)")
  parser.add_argument("--smoke", action="store_true", help="tiny widths and sizes: seconds (the test suite)")
  parser.add_argument("--json", help="write the rows to this JSON file")
  parser.add_argument("--no-cache", action="store_true",
                      help="compile every row again (by default a row compiled before for the same code is reused)")
  args = parser.parse_args(argv)
  gpus = sorted(GPUS) if "all" in (args.gpu or []) else list(dict.fromkeys(args.gpu or []))
  tpus = sorted(TOPOLOGIES) if args.all else (args.topology or ([] if gpus else list(DEFAULT_TOPOLOGIES)))
  try:
    if tpus or args.dcn or args.breakdown:
      use_xla_tpu()
    if gpus:
      use_xla_gpu()
  except (NoXlaTpuError, NoXlaGpuError) as error:
    sys.exit(f"error: {error}")

  if args.dcn:
    config = paper_config(args.smoke)
    rows = dcn_rows(config, (args.topology or ["v5e:1x1"])[0], args.batch, 32 if args.smoke else 256)
    columns = [("shape", "shape", ""), ("layers", "role", "")]
    for pass_name, label in (("fwd", "fwd"), ("fwd_bwd", "f+b")):
      columns += [(f"conv {label} ms", f"conv_{pass_name}_ms", ".3f"),
                  (f"gather {label} ×conv", f"gather_{pass_name}_ratio", ".1f"),
                  (f"matmul {label} ×conv", f"matmul_{pass_name}_ratio", ".1f")]
    print_table("Deformable convs against a plain 3×3 conv of the same shape: XLA:TPU cost-model estimates on "
                f"{(args.topology or ['v5e:1x1'])[0]} (not measurements)", columns, rows)
    write_json(args.json, {"benchmark": "tpu_compile_dcn", "smoke": args.smoke, "rows": rows})
    return rows

  if args.breakdown:
    config = paper_config(args.smoke)
    if args.dcn_sampling is not None:
      config.model.dcn_sampling = args.dcn_sampling
    rows = breakdown_rows(config, (args.topology or ["v5e:1x1"])[0], args.batch, 32 if args.smoke else 256,
                          whole=not args.layers_only)
    print_table(f"Layer kinds as their own programs (DCN sampling by {config.model.dcn_sampling}), batch "
                f"{args.batch} on one chip: XLA:TPU cost-model estimates, not measurements",
                [("layer", "layer", ""), ("pass", "pass", ""), ("× a step", "times", "d"),
                 ("GFLOP", "gflop", ".1f"), ("GB", "gbytes", ".3f"), ("est ms", "est_ms", ".3f"),
                 ("in a step ms", "step_est_ms", ".2f")], rows)
    layers = [r for r in rows if r["pass"] == "forward+backward" or r["layer"].startswith("L1")]
    dcn = sum(r["step_est_ms"] for r in layers if r["layer"].startswith("DCN"))
    total = sum(r["step_est_ms"] for r in layers)
    whole = f"; the whole step as one program: {rows[-1]['est_ms']:.1f} ms" if rows[-1]["pass"] == "step" else ""
    print(f"sum of the layers (forward+backward): {total:.1f} ms, of which deformable convs {dcn:.1f} ms "
          f"({100 * dcn / total:.0f} %){whole}")
    write_json(args.json, {"benchmark": "tpu_compile_breakdown", "smoke": args.smoke, "rows": rows})
    return rows

  topologies = tpus + gpus
  variants = [v for v in VARIANTS if (not args.program or v[0] in args.program)
              and (not args.dtype or v[1] in args.dtype)]
  if args.smoke:
    variants = [v for v in variants if v[2] == "default"]
  rows = []
  cache = RowCache(args.smoke, enabled=not args.no_cache)
  for topology in topologies:
    for program, dtype, precision in variants:
      row = cache.get(program, dtype, precision, topology)
      if row is None:
        row = compile_row(program, dtype, precision, topology, args.smoke)
        cache.put(row, program, dtype, precision, topology)
      rows.append(row)
      estimate = ("no estimate (XLA:GPU has no cost analysis)" if is_gpu(topology) else
                  "does not fit" if row["est_ms"] is None else f"estimate {row['est_ms']:.1f} ms")
      print(f"{row['topology']} {row['program']} {row['dtype']} {row['precision']}: {row['hbm_needed_gib']:.2f} of "
            f"{row['hbm_gib']:g} GiB a chip, {estimate}, compiled in {row['compile_s']:.0f} s"
            f"{' (cached)' if row.get('cached') else ''}", flush=True)
  configs = "configs/gopro_tpu.py" + (", on GPUs configs/gopro.py" if gpus else "")
  print_table(f"{'XLA:TPU' if not gpus else 'XLA:TPU and XLA:GPU'} compiles "
              f"({'smoke widths' if args.smoke else 'paper widths, ' + configs}); est ms: XLA:TPU cost-model "
              "estimate per step or image, not a measurement",
              [("program", "program", ""), ("dtype", "dtype", ""), ("precision", "precision", ""),
               ("topology", "topology", ""), ("chips", "chips", "d"), ("GiB/chip", "hbm_needed_gib", ".2f"),
               ("HBM GiB", "hbm_gib", "g"), ("fits", "fits", ""), ("est ms", "est_ms", ".1f"),
               ("FLOP-bound ms", "compute_bound_ms", ".1f"), ("compile s", "compile_s", ".0f")], rows)
  write_json(args.json, {"benchmark": "tpu_compile", "smoke": args.smoke, "rows": rows})
  return rows


if __name__ == "__main__":
  main()
