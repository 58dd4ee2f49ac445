"""Model complexity: parameters per block type, FLOPs and output shape, without compiling or allocating.

    python -m simplenet_jax.complexity --config configs/gopro.py [--size H W] [--batch N]

The model is built abstractly (`nnx.eval_shape`), the output shape comes from `jax.eval_shape` and the FLOPs
from XLA's cost analysis of the lowered (not compiled) forward pass. The last line is
`total parameters: N`.
"""

from __future__ import annotations

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from simplenet_jax.config_files import load_config
from simplenet_jax.models import LGCR
from simplenet_jax.models import PVB
from simplenet_jax.models import DeformableResBlock
from simplenet_jax.models import ResBlock
from simplenet_jax.models import SimpleNet
from simplenet_jax.models.global_context import NonLocal
from simplenet_jax.models.global_context import TensorLowRank

BLOCK_TYPES = (("ResBlock", ResBlock), ("PVB", PVB), ("DR", DeformableResBlock), ("LGCR", LGCR),
               ("NonLocal", NonLocal), ("TGM+TRM", TensorLowRank))
PAPER_TYPES = ("ResBlock", "PVB", "DR", "LGCR")  # always listed; the Table 5/6 alternatives only when used
OTHER = "head/down/up/tail convs"


def count_parameters(module: nnx.Module) -> int:
  return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def parameters_by_block_type(model: nnx.Module) -> dict[str, tuple[int, int]]:
  """{block type: (number of blocks, parameters)}; what no block holds is counted as the plain convs."""
  table = {name: (0, 0) for name, _ in BLOCK_TYPES}
  for _, node in nnx.iter_graph(model):
    for name, block_type in BLOCK_TYPES:
      if type(node) is block_type:
        count, params = table[name]
        table[name] = (count + 1, params + count_parameters(node))
  table = {name: entry for name, entry in table.items() if name in PAPER_TYPES or entry[0]}
  in_blocks = sum(params for _, params in table.values())
  # The plain convs (head, down-, up-sampling, tail) are the model's own direct children.
  convs = sum(1 for path, node in nnx.iter_graph(model)
              if len(path) == 1 and isinstance(node, (nnx.Conv, nnx.ConvTranspose)))
  table[OTHER] = (convs, count_parameters(model) - in_blocks)
  return table


def forward_cost(model: nnx.Module, shape: tuple[int, ...]) -> tuple[jax.ShapeDtypeStruct, float]:
  """(output shape, FLOPs of one forward pass) for an input of `shape`, from the lowered computation."""
  graphdef, state = nnx.split(model)
  image = jax.ShapeDtypeStruct(shape, jnp.float32)

  def forward(state, image):
    return nnx.merge(graphdef, state)(image)

  output = jax.eval_shape(forward, state, image)
  cost = jax.jit(forward).lower(state, image).cost_analysis()
  return output, float(cost["flops"]) if cost and "flops" in cost else float("nan")


def train_step_flops(config) -> float:
  """FLOPs of one training step (forward, backward, Adam) at `config.batch_size` × crop², lowered only."""
  from simplenet_jax import train  # the training stack is only needed for this line of the summary

  tx = train.make_optimizer(config)
  graphdef, state = nnx.eval_shape(lambda: train.create_train_state(config, tx))  # no allocation
  crop = config.data.crop_size
  batch = {k: jax.ShapeDtypeStruct((config.batch_size, crop, crop, 3), jnp.float32) for k in ("blur", "sharp")}
  step = functools.partial(train.train_step, graphdef=graphdef, tx=tx, compute_dtype=jnp.float32,
                           learning_rate_fn=train.learning_rate_schedule(config))
  cost = jax.jit(step).lower(state, batch).cost_analysis()
  return float(cost["flops"]) if cost and "flops" in cost else float("nan")


def summarize(config, size: tuple[int, int] = (720, 1280), batch: int = 1) -> str:
  model = nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0)))
  shape = (batch, *size, 3)
  output, flops = forward_cost(model, shape)
  total = count_parameters(model)
  m = config.model
  lines = [
      f"SimpleNet ({config.get('name', 'config')}): widths {'/'.join(map(str, m.widths))}, "
      f"deform_groups {m.deform_groups}, LGCR rank {m.lgcr_rank} softmax over {m.lgcr_softmax_axes}, "
      f"PVB {m.use_pvb}, DR {m.use_dr}, global context {m.global_context}",
      f"{'block type':<26}{'blocks':>8}{'parameters':>14}",
  ]
  for name, (count, params) in parameters_by_block_type(model).items():
    lines.append(f"{name:<26}{count:>8}{params:>14,}")
  lines += [
      f"input {'×'.join(map(str, shape))} → output {'×'.join(map(str, output.shape))} ({output.dtype})",
      f"forward FLOPs (XLA cost analysis): {flops / 1e9:,.1f} G (≈ {flops / 2e9:,.1f} G multiply-adds)",
      f"model size: {total * 4 / 1e6:.1f} MB in float32",
  ]
  if "batch_size" in config and "data" in config:
    lines.append(f"training step FLOPs at batch {config.batch_size} × {config.data.crop_size}² "
                 f"(XLA cost analysis): {train_step_flops(config) / 1e9:,.1f} G")
  lines.append(f"total parameters: {total}")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m simplenet_jax.complexity", description=__doc__.split("\n")[0])
  parser.add_argument("--config", required=True, help="experiment config file, e.g. configs/gopro.py")
  parser.add_argument("--size", nargs=2, type=int, default=(720, 1280), metavar=("H", "W"),
                      help="input height and width (multiples of 4); default 720 1280")
  parser.add_argument("--batch", type=int, default=1, help="batch size of the input; default 1")
  args = parser.parse_args(argv)
  try:
    print(summarize(load_config(args.config), tuple(args.size), args.batch))
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
