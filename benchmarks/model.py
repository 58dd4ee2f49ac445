"""SimpleNet end to end: forward at 256² and 720p and one training step at batch 8 × 256², JAX against the
PyTorch reference of the same network (benchmarks/torch_reference.py), with achieved FLOP/s as a fraction
of this machine's measured matmul FLOP/s (the limit here).

    python benchmarks/model.py [--json PATH] [--repeats N] [--no-torch] [--skip-720p] [--skip-train]

* The JAX training step is the project's own `simplenet_jax.train.train_step` (L1 loss, Adam, default
  config), jitted with its state donated; PyTorch's is forward, L1, backward and ``torch.optim.Adam``.
* Model FLOPs are XLA's cost analysis of the forward pass with the simple deformable convolution
  (`deform_conv2d_reference`: the tiled one hides its work in a loop that cost analysis counts once); a
  training step counts as 3× its forward (backward ≈ 2× forward).
* The limit is the best float32 matmul rate measured here (2048² × 2048², JAX and torch).
* Times are minima of ``--repeats`` runs after a warm-up (benchmarks/common.py), all float32, weights
  random but the same in both frameworks.
"""

from __future__ import annotations

import argparse
import functools

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import device_description
from common import import_torch
from common import print_table
from common import time_ms
from common import write_json

TORCH = import_torch()  # before simplenet_jax.train loads TensorFlow (common.import_torch says why)

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import default as default_config
from simplenet_jax import train
from simplenet_jax.models import SimpleNet
from simplenet_jax.models import blocks
from simplenet_jax.ops.deform_conv_reference import deform_conv2d_reference

FORWARD_SIZES = {"forward 256²": (1, 256, 256), "forward 720p": (1, 720, 1280)}
TRAIN_BATCH = (8, 256, 256)


def matmul_flops_per_second(torch, repeats: int) -> dict:
  """float32 FLOP/s of a 2048³ matmul in JAX (and torch): the machine's practical compute limit."""
  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  matmul = jax.jit(jnp.dot)
  rates = {"jax_matmul_gflops": 2 * n ** 3 / time_ms(lambda: matmul(a, a), repeats)["min_ms"] / 1e6}
  if torch is not None:
    t = torch.randn(n, n)
    rates["torch_matmul_gflops"] = 2 * n ** 3 / time_ms(lambda: t @ t, repeats, sync=lambda _: None)["min_ms"] / 1e6
  rates["limit_gflops"] = max(rates.values())
  return rates


def forward_flops(model: SimpleNet, shape) -> float:
  """FLOPs of one forward pass, from XLA's cost analysis with the untiled reference deformable conv."""
  graphdef, state = nnx.split(model)
  original = blocks.deform_conv2d
  blocks.deform_conv2d = lambda *args, tile_bytes=None, **kwargs: deform_conv2d_reference(*args, **kwargs)
  try:
    lowered = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, jax.ShapeDtypeStruct((*shape, 3),
                                                                                                 jnp.float32))
    return float(lowered.cost_analysis()["flops"])
  finally:
    blocks.deform_conv2d = original


def jax_forward_ms(model: SimpleNet, image: np.ndarray, repeats: int) -> float:
  graphdef, state = nnx.split(model)
  forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
  x = jnp.asarray(image)
  return time_ms(lambda: forward(state, x), repeats)["min_ms"]


def jax_train_step_ms(config, batch: dict, repeats: int) -> float:
  tx = train.make_optimizer(config)
  graphdef, state = train.create_train_state(config, tx)
  step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx,
                                   learning_rate_fn=train.learning_rate_schedule(config),
                                   compute_dtype=jnp.float32), donate_argnums=(0,))
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics

  return time_ms(run, repeats)["min_ms"]


def torch_forward_ms(torch, twin, image: np.ndarray, repeats: int) -> float:
  x = torch.from_numpy(image).permute(0, 3, 1, 2).contiguous()

  def run():
    with torch.no_grad():
      return twin(x)

  return time_ms(run, repeats, sync=lambda _: None)["min_ms"]


def torch_train_step_ms(torch, twin, batch: dict, learning_rate: float, repeats: int) -> float:
  blur, sharp = (torch.from_numpy(np.array(batch[k])).permute(0, 3, 1, 2).contiguous() for k in ("blur", "sharp"))
  optimizer = torch.optim.Adam(twin.parameters(), lr=learning_rate, betas=(0.9, 0.999))

  def run():
    optimizer.zero_grad(set_to_none=True)
    loss = (twin(blur) - sharp).abs().mean()
    loss.backward()
    optimizer.step()
    return loss

  return time_ms(run, repeats, sync=lambda _: None)["min_ms"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (minimum kept)")
  parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
  parser.add_argument("--skip-720p", action="store_true")
  parser.add_argument("--skip-train", action="store_true")
  args = parser.parse_args()
  torch = None if args.no_torch else TORCH
  if torch is not None:
    import torch_reference  # pylint: disable=import-outside-toplevel

  config = default_config.get_config()
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(config.seed))
  if torch is not None:
    torch_reference.randomize(model)  # the same random weights in both, no zero layers to shortcut
    twin = torch_reference.from_jax(model).float()
  limits = matmul_flops_per_second(torch, max(args.repeats, 5))
  rng = np.random.default_rng(0)
  rows = []
  for name, shape in FORWARD_SIZES.items():
    if name.endswith("720p") and args.skip_720p:
      continue
    image = rng.uniform(size=(*shape, 3)).astype(np.float32)
    row = {"workload": name, "shape": "×".join(map(str, shape)), "gflop": forward_flops(model, shape) / 1e9}
    row["jax_ms"] = jax_forward_ms(model, image, args.repeats)
    if torch is not None:
      row["torch_ms"] = torch_forward_ms(torch, twin, image, args.repeats)
    rows.append(row)
  if not args.skip_train:
    batch = {k: jnp.asarray(rng.uniform(size=(*TRAIN_BATCH, 3)).astype(np.float32)) for k in ("blur", "sharp")}
    row = {"workload": "train step", "shape": "×".join(map(str, TRAIN_BATCH)),
           "gflop": 3 * forward_flops(model, TRAIN_BATCH) / 1e9}
    row["jax_ms"] = jax_train_step_ms(config, batch, args.repeats)
    if torch is not None:
      row["torch_ms"] = torch_train_step_ms(torch, twin, batch, config.learning_rate, args.repeats)
    rows.append(row)
  for row in rows:
    for framework in ("jax", "torch"):
      if f"{framework}_ms" in row:
        rate = row["gflop"] / row[f"{framework}_ms"] * 1e3
        row[f"{framework}_gflops"] = rate
        row[f"{framework}_fraction_of_limit"] = rate / limits["limit_gflops"]
    if "torch_ms" in row:
      row["torch_over_jax"] = row["torch_ms"] / row["jax_ms"]
  columns = [("workload", "workload", ""), ("N×H×W", "shape", ""), ("GFLOP", "gflop", ".1f"),
             ("JAX ms", "jax_ms", ".0f"), ("GFLOP/s", "jax_gflops", ".1f"),
             ("of limit", "jax_fraction_of_limit", ".2f"), ("torch ms", "torch_ms", ".0f"),
             ("GFLOP/s", "torch_gflops", ".1f"), ("of limit", "torch_fraction_of_limit", ".2f"),
             ("torch/JAX", "torch_over_jax", ".2f")]
  print_table(f"SimpleNet (default config, float32), min of {args.repeats}, on {device_description()}; "
              f"limit = {limits['limit_gflops']:.1f} GFLOP/s float32 matmul", columns, rows)
  write_json(args.json, {"benchmark": "model", "repeats": args.repeats, **limits, "rows": rows})


if __name__ == "__main__":
  main()
