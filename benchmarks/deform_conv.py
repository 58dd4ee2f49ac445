"""How much slower is `deform_conv2d` than a plain 3×3 conv of the same shape? Forward and forward+backward.

    python benchmarks/deform_conv.py [--json PATH] [--repeats N]

Both are jitted; the times are medians over `--repeats` runs after a warm-up, measured in one process so
that the ratio column is meaningful even on a busy machine (absolute times only mean something on a GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from simplenet_jax.ops import deform_conv2d

# (batch, height, width, channels): a PVB/DR layer at the three scales of a 256² crop, and a small one.
SHAPES = [(2, 64, 64, 64), (1, 128, 128, 32), (1, 64, 64, 128), (4, 32, 32, 32)]


def _median_seconds(fn, args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def benchmark_shape(shape, repeats: int) -> dict:
  n, h, w, c = shape
  keys = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(keys[0], shape)
  offset = 2.0 * jax.random.normal(keys[1], (n, h, w, 18))
  mask = jax.nn.sigmoid(jax.random.normal(keys[2], (n, h, w, 9)))
  kernel = jax.random.normal(keys[3], (3, 3, c, c)) / (3 * c ** 0.5)

  def plain(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), [(1, 1), (1, 1)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def deform(x, offset, mask, kernel):
    return deform_conv2d(x, offset, mask, kernel)

  plain_fwd = jax.jit(plain)
  plain_bwd = jax.jit(jax.grad(lambda x, k: jnp.sum(plain(x, k) ** 2), argnums=(0, 1)))
  deform_fwd = jax.jit(deform)
  deform_bwd = jax.jit(jax.grad(lambda *a: jnp.sum(deform(*a) ** 2), argnums=(0, 1, 2, 3)))
  row = {
      "shape": "×".join(map(str, shape)),
      "conv_fwd_ms": 1e3 * _median_seconds(plain_fwd, (x, kernel), repeats),
      "conv_fwd_bwd_ms": 1e3 * _median_seconds(plain_bwd, (x, kernel), repeats),
      "deform_fwd_ms": 1e3 * _median_seconds(deform_fwd, (x, offset, mask, kernel), repeats),
      "deform_fwd_bwd_ms": 1e3 * _median_seconds(deform_bwd, (x, offset, mask, kernel), repeats),
  }
  row["fwd_ratio"] = row["deform_fwd_ms"] / row["conv_fwd_ms"]
  row["fwd_bwd_ratio"] = row["deform_fwd_bwd_ms"] / row["conv_fwd_bwd_ms"]
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement (median)")
  args = parser.parse_args()
  rows = [benchmark_shape(shape, args.repeats) for shape in SHAPES]
  device = jax.devices()[0]
  print(f"deform_conv2d vs plain 3×3 conv (Cin = Cout, G = 1, float32) on {device.device_kind} "
        f"({platform.processor() or platform.machine()}), median of {args.repeats}")
  header = (f"{'N×H×W×C':<16}{'conv fwd ms':>12}{'dcn fwd ms':>12}{'ratio':>8}"
            f"{'conv f+b ms':>13}{'dcn f+b ms':>12}{'ratio':>8}")
  print(header)
  for r in rows:
    print(f"{r['shape']:<16}{r['conv_fwd_ms']:>12.2f}{r['deform_fwd_ms']:>12.2f}{r['fwd_ratio']:>8.1f}"
          f"{r['conv_fwd_bwd_ms']:>13.2f}{r['deform_fwd_bwd_ms']:>12.2f}{r['fwd_bwd_ratio']:>8.1f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": str(device.device_kind), "platform": jax.default_backend(), "repeats": args.repeats,
                 "jax": jax.__version__, "rows": rows}, f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
  main()
