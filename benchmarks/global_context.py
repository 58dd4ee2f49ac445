"""The paper's Table 6: memory and time of the non-localized modules (non-local, TGM+TRM, LGCR) on a 180×180
input with 3 channels, plus LGCR at the 720p bottleneck (180×320×128) against the naive rank-stack.

    python benchmarks/global_context.py [--json PATH] [--repeats N] [--skip-nonlocal]

Memory is what XLA's compiled executable reserves beyond its inputs — temporaries plus the output,
``memory_analysis()`` of the jitted module call, float32 — so it is exact and needs no profiler. (Li et al.
measured GPU memory in PyTorch, which includes the framework's own overhead, so compare the orders of
magnitude.) Times are the minimum of ``--repeats`` runs (benchmarks/common.py). The non-local block
materialises its 32,400² attention matrix, as in the paper: it needs about 8.4 GB and a few seconds a run.
"""

from __future__ import annotations

import argparse

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import device_description
from common import print_table
from common import time_ms
from common import write_json

import jax
from flax import nnx

from simplenet_jax.models.global_context import LGCR
from simplenet_jax.models.global_context import NonLocal
from simplenet_jax.models.global_context import TensorLowRank
from simplenet_jax.ops import non_local

PAPER = {"nonlocal": (8018, 68.16), "tgm_trm": (30, 0.302), "lgcr": (34, 0.466)}  # Table 6: MB, ms (GPU)
TABLE6_SHAPE = (1, 180, 180, 3)
BOTTLENECK_720P = (1, 180, 320, 128)  # 1280×720 at ¼ scale, C3 = 128
RANK = 64


def _dense_non_local(block: NonLocal):
  """The block with its whole HW×HW attention matrix (the module itself switches to query blocks above
  64² positions; Table 6 measures the dense form)."""

  def call(x):
    return non_local.non_local_block(
        x, (block.theta_kernel[...], block.theta_bias[...]), (block.phi_kernel[...], block.phi_bias[...]),
        (block.g_kernel[...], block.g_bias[...]), (block.out_kernel[...], block.out_bias[...]))

  return call


def measure(name: str, fn, shape, repeats: int) -> dict:
  x = jax.random.normal(jax.random.key(0), shape)
  jitted = jax.jit(fn)
  memory = jitted.lower(x).compile().memory_analysis()
  extra = memory.temp_size_in_bytes + memory.output_size_in_bytes
  row = {"module": name, "shape": "×".join(map(str, shape)), "memory_mb": extra / 1e6,
         "temp_mb": memory.temp_size_in_bytes / 1e6, **time_ms(lambda: jitted(x), repeats)}
  if name in PAPER and shape == TABLE6_SHAPE:
    row["paper_memory_mb"], row["paper_ms"] = PAPER[name]
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement (minimum kept)")
  parser.add_argument("--skip-nonlocal", action="store_true", help="skip the 8 GB non-local block")
  args = parser.parse_args()
  rngs = nnx.Rngs(0)
  channels = TABLE6_SHAPE[-1]
  modules = [("tgm_trm", TensorLowRank(rank=RANK, rngs=rngs)), ("lgcr", LGCR(rank=RANK, rngs=rngs))]
  if not args.skip_nonlocal:
    modules.insert(0, ("nonlocal", _dense_non_local(NonLocal(channels, rngs=rngs))))
  rows = [measure(name, module, TABLE6_SHAPE, max(2, args.repeats // 10) if name == "nonlocal" else args.repeats)
          for name, module in modules]
  lgcr_720p = measure("lgcr", LGCR(rank=RANK, rngs=rngs), BOTTLENECK_720P, args.repeats)
  n, h, w, c = BOTTLENECK_720P
  naive_mb = RANK * n * c * h * w * 4 / 1e6  # the r×C×H×W stack of rank-1 tensors, float32
  lgcr_720p["naive_rank_stack_mb"] = naive_mb
  lgcr_720p["fraction_of_naive"] = lgcr_720p["memory_mb"] / naive_mb
  rows.append(lgcr_720p)
  columns = [("module", "module", ""), ("input", "shape", ""), ("memory MB", "memory_mb", ".1f"),
             ("min ms", "min_ms", ".3f"), ("median ms", "median_ms", ".3f"),
             ("paper MB", "paper_memory_mb", ".0f"), ("paper ms", "paper_ms", ".3f"),
             ("naive MB", "naive_rank_stack_mb", ".0f"), ("/naive", "fraction_of_naive", ".4f")]
  print_table(f"Table 6: non-localized modules, r = {RANK}, float32, memory = XLA temporaries + output, "
              f"on {device_description()} (paper: GPU, PyTorch)", columns, rows)
  print(f"LGCR at the 720p bottleneck needs {lgcr_720p['fraction_of_naive']:.4f} of the naive rank-stack "
        f"memory ({naive_mb / 1e3:.2f} GB): 1/{1 / lgcr_720p['fraction_of_naive']:.0f}.")
  write_json(args.json, {"benchmark": "global_context", "repeats": args.repeats, "rank": RANK, "rows": rows})


if __name__ == "__main__":
  main()
