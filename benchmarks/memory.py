"""How much device memory do the paper's training step and 720p forward need? XLA's memory analysis of the
compiled programs, for DCN tile budgets and with or without remat, with nothing allocated or run.

    python benchmarks/memory.py [--json PATH] [--tile-bytes 0 1048576 ...] [--remat both|on|off]
                                [--dtypes float32 bfloat16] [--skip-train] [--skip-720p] [--smoke]

The programs are the project's own: `simplenet_jax.train.train_step` (L1, Adam; the paper config
`configs/gopro.py`, batch 8 × 256² on one device) and the jitted forward of `SimpleNet` at 1 × 720 × 1280.
Both are compiled here (XLA:CPU); the DCN tiling depends only on the shapes and `config.model.dcn_tile_bytes`,
so the program is the one an accelerator gets, although another backend's fusion and scheduling change
the exact figure. "temp" is XLA's temporaries; "total" adds the arguments and outputs that are not aliased
(donated). `--smoke` runs tiny widths and sizes (for the test suite).
"""

from __future__ import annotations

import argparse
import functools
import time

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import device_description
from common import print_table
from common import write_json

import jax
import jax.numpy as jnp
from flax import nnx

from configs import gopro
from simplenet_jax import train
from simplenet_jax.models import SimpleNet

GIB = 1 << 30


def _analysis(compiled) -> dict:
  stats = compiled.memory_analysis()
  temp = stats.temp_size_in_bytes
  total = temp + stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
  return {"temp_gib": temp / GIB, "total_gib": total / GIB}


def train_step_memory(config, batch_shape, dtype: str) -> dict:
  """Memory of one compiled training step (state donated, as the trainer runs it)."""
  tx = train.make_optimizer(config)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0))))
  abstract_state = jax.eval_shape(lambda: train.create_train_state(config, tx)[1])
  batch = {k: jax.ShapeDtypeStruct(batch_shape, jnp.uint8) for k in ("blur", "sharp")}  # as the pipeline feeds it
  step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx,
                                   learning_rate_fn=train.learning_rate_schedule(config),
                                   compute_dtype=train.COMPUTE_DTYPES[dtype]), donate_argnums=(0,))
  return _analysis(step.lower(abstract_state, batch).compile())


def forward_memory(config, image_shape, dtype: str) -> dict:
  model = nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model)
  compute = train.COMPUTE_DTYPES[dtype]
  params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, compute), params)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x, compute_dtype=compute))
  return _analysis(forward.lower(params, jax.ShapeDtypeStruct(image_shape, jnp.float32)).compile())


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--tile-bytes", type=int, nargs="*", default=[0, 1 << 20, 16 << 20, 64 << 20],
                      help="DCN im2col budgets to compare (0 = one tile; default: %(default)s)")
  parser.add_argument("--remat", choices=("off", "on", "both"), default="both")
  parser.add_argument("--dtypes", nargs="*", default=["float32"], choices=sorted(train.COMPUTE_DTYPES))
  parser.add_argument("--skip-train", action="store_true")
  parser.add_argument("--skip-720p", action="store_true")
  parser.add_argument("--smoke", action="store_true", help="tiny widths and sizes (seconds; for the tests)")
  args = parser.parse_args(argv)

  config = gopro.get_config()
  train_shape, image_shape = (8, 256, 256, 3), (1, 720, 1280, 3)
  if args.smoke:
    config.model.widths, config.model.lgcr_rank = (4, 4, 8), 2
    train_shape, image_shape = (2, 16, 24, 3), (1, 20, 28, 3)
  remats = {"off": [False], "on": [True], "both": [False, True]}[args.remat]
  rows = []
  for tile_bytes in args.tile_bytes:
    for remat in remats:
      config.model.dcn_tile_bytes, config.model.remat = tile_bytes, remat
      for dtype in args.dtypes:
        common = {"tile_bytes": tile_bytes, "tile": f"{tile_bytes / (1 << 20):g} MiB" if tile_bytes else "one",
                  "remat": remat, "dtype": dtype}
        if not args.skip_train:
          start = time.perf_counter()
          row = {"workload": "train step", "shape": "×".join(map(str, train_shape[:3])), **common,
                 **train_step_memory(config, train_shape, dtype)}
          rows.append({**row, "compile_s": time.perf_counter() - start})
          print(rows[-1], flush=True)
        if not args.skip_720p and not remat:  # remat changes nothing without a backward pass
          start = time.perf_counter()
          row = {"workload": "forward", "shape": "×".join(map(str, image_shape[:3])), **common,
                 **forward_memory(config, image_shape, dtype)}
          rows.append({**row, "compile_s": time.perf_counter() - start})
          print(rows[-1], flush=True)
  columns = [("workload", "workload", ""), ("N×H×W", "shape", ""), ("DCN tile", "tile", ""),
             ("remat", "remat", ""), ("dtype", "dtype", ""), ("temp GiB", "temp_gib", ".2f"),
             ("total GiB", "total_gib", ".2f"), ("compile s", "compile_s", ".0f")]
  print_table(f"XLA memory analysis of the compiled programs (widths {tuple(config.model.widths)}), compiled on "
              f"{device_description()}", columns, rows)
  write_json(args.json, {"benchmark": "memory", "widths": list(config.model.widths), "rows": rows})


if __name__ == "__main__":
  main()
