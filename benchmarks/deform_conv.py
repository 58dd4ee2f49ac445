"""How much slower is `deform_conv2d` than a plain 3×3 conv of the same shape? Forward and forward+backward,
against the simple gather version (`deform_conv2d_reference`) and `torchvision.ops.deform_conv2d`.

    python benchmarks/deform_conv.py [--json PATH] [--repeats N] [--no-torch]

All JAX functions are jitted; forward+backward is the gradient of ``sum(out²)`` with respect to every input
(x and kernel for the plain conv; x, offset, mask and kernel for the deformable ones). torchvision's
columns appear when torch and torchvision are installed (the optional ``torch`` extra); its inputs are the
same numbers in NCHW, and the table's last column checks that its output matches ours. Times are the
minimum of ``--repeats`` runs after a warm-up (benchmarks/common.py says why), measured in one process so
that the ratio columns are meaningful even on a busy machine.
"""

from __future__ import annotations

import argparse

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import import_torch
from common import print_table
from common import time_ms
from common import write_json

import jax
import jax.numpy as jnp
import numpy as np

from simplenet_jax.ops import deform_conv2d
from simplenet_jax.ops.deform_conv_reference import deform_conv2d_reference

# (batch, height, width, channels): a PVB/DR layer at the three scales of a 256² crop, and a small one.
SHAPES = [(2, 64, 64, 64), (1, 128, 128, 32), (1, 64, 64, 128), (4, 32, 32, 32)]


def _inputs(shape):
  n, h, w, c = shape
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], shape)
  offset = 2.0 * jax.random.normal(keys[1], (n, h, w, 18))
  mask = jax.nn.sigmoid(jax.random.normal(keys[2], (n, h, w, 9)))
  kernel = jax.random.normal(keys[3], (3, 3, c, c)) / (3 * c ** 0.5)
  return x, offset, mask, kernel


def _plain(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(1, 1), (1, 1)],
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _jax_pair(fn, argnums):
  """(jitted forward, jitted gradient of sum(out²) w.r.t. argnums)."""
  return jax.jit(fn), jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a) ** 2), argnums=argnums))


def _torchvision_times(torch, args, repeats: int, jax_out) -> dict:
  """torchvision.ops.deform_conv2d forward and forward+backward on the same numbers, NCHW."""
  from torchvision.ops import deform_conv2d as tv_deform_conv2d  # pylint: disable=import-outside-toplevel
  x, offset, mask, kernel = (torch.from_numpy(np.array(a)) for a in args)
  x, offset, mask = (a.permute(0, 3, 1, 2).contiguous() for a in (x, offset, mask))
  weight = kernel.permute(3, 2, 0, 1).contiguous()

  def forward():
    with torch.no_grad():
      return tv_deform_conv2d(x, offset, weight, padding=(1, 1), mask=mask)

  leaves = [a.clone().requires_grad_(True) for a in (x, offset, mask, weight)]

  def forward_backward():
    for leaf in leaves:
      leaf.grad = None
    out = tv_deform_conv2d(leaves[0], leaves[1], leaves[3], padding=(1, 1), mask=leaves[2])
    (out ** 2).sum().backward()
    return leaves[0].grad

  difference = float(np.abs(forward().permute(0, 2, 3, 1).numpy() - np.asarray(jax_out)).max())
  return {"torchvision_fwd_ms": time_ms(forward, repeats, sync=lambda _: None)["min_ms"],
          "torchvision_fwd_bwd_ms": time_ms(forward_backward, repeats, sync=lambda _: None)["min_ms"],
          "max_abs_diff_vs_torchvision": difference}


def benchmark_shape(shape, repeats: int, torch) -> dict:
  x, offset, mask, kernel = _inputs(shape)
  plain_fwd, plain_bwd = _jax_pair(_plain, (0, 1))
  fast_fwd, fast_bwd = _jax_pair(deform_conv2d, (0, 1, 2, 3))
  simple_fwd, simple_bwd = _jax_pair(deform_conv2d_reference, (0, 1, 2, 3))
  row = {"shape": "×".join(map(str, shape))}
  for name, fn, args in (("conv_fwd", plain_fwd, (x, kernel)), ("conv_fwd_bwd", plain_bwd, (x, kernel)),
                         ("deform_fwd", fast_fwd, (x, offset, mask, kernel)),
                         ("deform_fwd_bwd", fast_bwd, (x, offset, mask, kernel)),
                         ("simple_fwd", simple_fwd, (x, offset, mask, kernel)),
                         ("simple_fwd_bwd", simple_bwd, (x, offset, mask, kernel))):
    row[f"{name}_ms"] = time_ms(lambda fn=fn, args=args: fn(*args), repeats)["min_ms"]
  if torch is not None:
    row.update(_torchvision_times(torch, (x, offset, mask, kernel), repeats, fast_fwd(x, offset, mask, kernel)))
    row["torchvision_over_deform_fwd_bwd"] = row["torchvision_fwd_bwd_ms"] / row["deform_fwd_bwd_ms"]
  row["fwd_ratio"] = row["deform_fwd_ms"] / row["conv_fwd_ms"]
  row["fwd_bwd_ratio"] = row["deform_fwd_bwd_ms"] / row["conv_fwd_bwd_ms"]
  row["simple_over_deform_fwd_bwd"] = row["simple_fwd_bwd_ms"] / row["deform_fwd_bwd_ms"]
  return row


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (minimum kept)")
  parser.add_argument("--no-torch", action="store_true", help="skip torchvision even when it is installed")
  parser.add_argument("--shapes", nargs="*", help="N×H×W×C shapes (default: %(default)s)",
                      default=["x".join(map(str, s)) for s in SHAPES])
  args = parser.parse_args(argv)
  torch = None if args.no_torch else import_torch()
  shapes = [tuple(int(v) for v in s.replace("×", "x").split("x")) for s in args.shapes]
  rows = [benchmark_shape(shape, args.repeats, torch) for shape in shapes]
  columns = [("N×H×W×C", "shape", ""), ("conv fwd", "conv_fwd_ms", ".2f"), ("dcn fwd", "deform_fwd_ms", ".2f"),
             ("ratio", "fwd_ratio", ".1f"), ("conv f+b", "conv_fwd_bwd_ms", ".2f"),
             ("dcn f+b", "deform_fwd_bwd_ms", ".2f"), ("ratio", "fwd_bwd_ratio", ".1f"),
             ("simple fwd", "simple_fwd_ms", ".2f"), ("simple f+b", "simple_fwd_bwd_ms", ".2f"),
             ("tv fwd", "torchvision_fwd_ms", ".2f"), ("tv f+b", "torchvision_fwd_bwd_ms", ".2f"),
             ("tv/dcn f+b", "torchvision_over_deform_fwd_bwd", ".1f"),
             ("|dcn−tv|", "max_abs_diff_vs_torchvision", ".0e")]
  from common import device_description  # pylint: disable=import-outside-toplevel
  print_table(f"deform_conv2d vs plain 3×3 conv, simple gather version and torchvision (Cin = Cout, G = 1, "
              f"float32, ms, min of {args.repeats}) on {device_description()}", columns, rows)
  write_json(args.json, {"benchmark": "deform_conv", "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
  main()
