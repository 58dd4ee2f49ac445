"""One command for a GPU or TPU session: how fast and how large are the paper's programs on this device?

    python benchmarks/accelerator.py [--json PATH] [--repeats N] [--tile-bytes B] [--smoke]

Measures, on the default JAX device, with the paper config (`configs/gopro.py`, widths 32/64/128):

* the 720p forward (1 × 720 × 1280) in float32 and bfloat16 (`compute_dtype`, as training uses it);
* the training step (`simplenet_jax.train.train_step`, L1 + Adam, batch 8 × 256², state donated) in float32
  and bfloat16: steps/s;
* achieved FLOP/s (XLA's cost analysis of the untiled reference program, backward = 2 × forward) against
  the device's published dense peak (bf16 for bf16; for float32 the rate XLA's default precision uses:
  TF32 on NVIDIA Ampere and later, bf16 passes on TPU);
* the device's peak memory after each program (`device.memory_stats()`, where the platform reports it);
* evaluation images/s at 720p with all metrics (`loop.evaluate_pairs`, PSNR and both SSIMs);
* the input pipeline's training pairs/s on this host (`data.pipeline.train_dataset` over a TFDS build of 1280×720
  pairs synthesized here, 256² crops, `--workers` processes).

Timing: every program is compiled and run once (warm-up), then timed `--repeats` times with
`block_until_ready`; the median is reported (and the compile time, which dominates a short session). The
whole run takes about 3–4 minutes on one GPU or TPU chip, most of it compiling. `--smoke` runs everything at
tiny widths and sizes on any machine (the test suite does, so that this script never rots).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import device_description
from common import print_table
from common import write_json

import jax
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import skimage.data
from flax import nnx
from PIL import Image

from configs import gopro
from model import forward_flops
from simplenet_jax import inference
from simplenet_jax import train
from simplenet_jax.data import catalogue
from simplenet_jax.data import pipeline
from simplenet_jax.evaluation import loop
from simplenet_jax.models import SimpleNet

# Published dense peaks, TFLOP/s per chip: (bf16, the float32 matmul rate under XLA's default precision).
PEAK_TFLOPS = {
    "H200": (989, 495), "H100": (989, 495), "A100": (312, 156), "L4": (121, 60), "A10": (125, 62.5),
    "V100": (125, 15.7), "T4": (65, 8.1), "TPU v2": (45, 45), "TPU v3": (123, 123), "TPU v4": (275, 275),
    "TPU v5 lite": (197, 197), "TPU v5e": (197, 197), "TPU v5p": (459, 459), "TPU v6 lite": (918, 918),
    "TPU v6e": (918, 918),
}


def peak_flops(device) -> dict[str, float | None]:
  """{"bfloat16", "float32"} peak FLOP/s of `device` from its kind, None where unknown (e.g. a CPU)."""
  kind = device.device_kind
  for name, (bf16, f32) in sorted(PEAK_TFLOPS.items(), key=lambda item: -len(item[0])):
    if name.lower() in kind.lower():
      return {"bfloat16": bf16 * 1e12, "float32": f32 * 1e12}
  return {"bfloat16": None, "float32": None}


def peak_memory_gib(device) -> float | None:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return stats["peak_bytes_in_use"] / (1 << 30) if stats and "peak_bytes_in_use" in stats else None


def timed(fn, repeats: int) -> dict:
  """Compile + first run, then the median of `repeats` synchronized runs, in ms."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(1e3 * (time.perf_counter() - start))
  return {"median_ms": statistics.median(times), "min_ms": min(times), "compile_s": compile_s}


def forward_row(config, shape, dtype: str, repeats: int, flops: float) -> dict:
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  compute = train.COMPUTE_DTYPES[dtype]
  params = jax.tree.map(lambda p: p.astype(compute), params)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x, compute_dtype=compute))
  image = jnp.asarray(np.random.default_rng(0).uniform(size=shape), jnp.float32)
  row = {"workload": "forward", "shape": "×".join(map(str, shape[:3])), "dtype": dtype, "gflop": flops / 1e9,
         **timed(lambda: forward(params, image), repeats)}
  row["per_s"] = 1e3 / row["median_ms"]
  return row


def train_row(config, shape, dtype: str, repeats: int, flops: float) -> dict:
  tx = train.make_optimizer(config)
  graphdef, state = train.create_train_state(config, tx)
  step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx,
                                   compute_dtype=train.COMPUTE_DTYPES[dtype],
                                   learning_rate_fn=train.learning_rate_schedule(config)), donate_argnums=(0,))
  rng = np.random.default_rng(1)
  batch = {k: jnp.asarray(rng.uniform(size=shape), jnp.float32) for k in ("blur", "sharp")}
  holder = {"state": state}

  def run():
    holder["state"], metrics = step(holder["state"], batch)
    return metrics

  row = {"workload": "train step", "shape": "×".join(map(str, shape[:3])), "dtype": dtype, "gflop": flops / 1e9,
         **timed(run, repeats)}
  row["per_s"] = 1e3 / row["median_ms"]
  return row


def _photo_pairs(count: int, height: int, width: int) -> list[dict]:
  """Blur/sharp pairs from scikit-image photos resized to height × width (a horizontal box blur)."""
  photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
  pairs = []
  for i in range(count):
    sharp = np.asarray(Image.fromarray(photos[i % len(photos)]).resize((width, height), Image.BILINEAR))
    blur = np.round(scipy.ndimage.uniform_filter(sharp.astype(np.float32), size=(1, 9, 1))).astype(np.uint8)
    pairs.append({"blur": blur, "sharp": sharp, "name": f"photo/{i:06d}"})
  return pairs


def evaluation_row(config, size, count: int) -> dict:
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
  pairs = [{**p, "blur": p["blur"] / np.float32(255), "sharp": p["sharp"] / np.float32(255)}
           for p in _photo_pairs(count + 1, *size)]
  apply_fn = inference.at_any_size(functools.partial(forward, params))
  start = time.perf_counter()
  loop.evaluate_pairs(apply_fn, pairs[:1])  # compiles the network and the metrics for this size
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  loop.evaluate_pairs(apply_fn, pairs[1:])
  seconds = time.perf_counter() - start
  return {"workload": "evaluation + metrics", "shape": f"{count}×{size[0]}×{size[1]}", "dtype": "float32",
          "median_ms": 1e3 * seconds / count, "per_s": count / seconds, "compile_s": compile_s}


def input_pipeline_row(size, crop: int, batch: int, workers: int, batches: int) -> dict:
  """Training pairs/s of the grain pipeline over a TFDS build of PNG pairs of `size` in a temporary folder."""
  config = gopro.get_config()
  with tempfile.TemporaryDirectory() as root:
    for pair in _photo_pairs(4, *size):
      for kind in ("blur", "sharp"):
        folder = f"{root}/train/scene/{kind}"
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(pair[kind]).save(f"{folder}/{pair['name'].split('/')[1]}.png")
    data = config.data
    data.dataset, data.root, data.crop_size, data.num_workers = "folder", root, crop, workers
    data.tfds_dir = f"{root}/tfds"
    catalogue.build("folder", root, data.tfds_dir)
    dataset = pipeline.train_dataset(data, batch)
    iterator = iter(dataset)
    try:
      next(iterator)  # start-up (worker processes) is not counted
      start = time.perf_counter()
      for _ in range(batches):
        next(iterator)
      seconds = time.perf_counter() - start
    finally:
      iterator.close()
  return {"workload": f"input pipeline ({workers} workers)",
          "shape": f"{batch}×{crop}×{crop} from {size[0]}×{size[1]}",
          "dtype": "uint8→float32", "median_ms": 1e3 * seconds / (batches * batch),
          "per_s": batches * batch / seconds}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--repeats", type=int, default=10, help="timed runs per program (median reported)")
  parser.add_argument("--tile-bytes", type=int, default=None,
                      help="config.model.dcn_tile_bytes (default: the config's, %(default)s = unchanged)")
  parser.add_argument("--workers", type=int, default=4, help="input pipeline worker processes")
  parser.add_argument("--eval-images", type=int, default=8, help="720p pairs timed in the evaluation row")
  parser.add_argument("--smoke", action="store_true", help="tiny widths and sizes, any machine (the tests)")
  args = parser.parse_args(argv)

  config = gopro.get_config()
  forward_shape, train_shape, eval_size, source_size, crop = (1, 720, 1280, 3), (8, 256, 256, 3), (720, 1280), (
      720, 1280), 256
  if args.smoke:
    # Tiny, and ResBlocks in place of PVB/DR: the script's every path in seconds of compiling, not minutes.
    config.model.widths, config.model.lgcr_rank = (4, 4, 8), 2
    config.model.use_pvb = config.model.use_dr = False
    forward_shape, train_shape, eval_size, source_size, crop = (1, 36, 44, 3), (2, 32, 32, 3), (36, 44), (
        48, 64), 16
    args.repeats, args.eval_images = min(args.repeats, 2), min(args.eval_images, 2)
  if args.tile_bytes is not None:
    config.model.dcn_tile_bytes = args.tile_bytes
  device = jax.devices()[0]
  peaks = peak_flops(device)
  model = nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0)))
  forward_gflop = forward_flops(model, forward_shape[:3])
  train_gflop = 3 * forward_flops(model, train_shape[:3])

  rows = []
  for dtype in ("float32", "bfloat16"):
    rows.append(forward_row(config, forward_shape, dtype, args.repeats, forward_gflop))
    rows[-1]["peak_memory_gib"] = peak_memory_gib(device)
    print(rows[-1], flush=True)
  for dtype in ("float32", "bfloat16"):
    rows.append(train_row(config, train_shape, dtype, args.repeats, train_gflop))
    rows[-1]["peak_memory_gib"] = peak_memory_gib(device)
    print(rows[-1], flush=True)
  for row in rows:
    row["tflops"] = row["gflop"] / row["median_ms"] / 1e3
    if peaks[row["dtype"]]:
      row["fraction_of_peak"] = row["tflops"] * 1e12 / peaks[row["dtype"]]
  rows.append(evaluation_row(config, eval_size, args.eval_images))
  print(rows[-1], flush=True)
  rows.append(input_pipeline_row(source_size, crop, train_shape[0], args.workers, 3 if args.smoke else 25))
  print(rows[-1], flush=True)

  columns = [("workload", "workload", ""), ("shape", "shape", ""), ("dtype", "dtype", ""),
             ("ms", "median_ms", ".2f"), ("per s", "per_s", ".2f"), ("TFLOP/s", "tflops", ".2f"),
             ("of peak", "fraction_of_peak", ".2f"), ("peak GiB", "peak_memory_gib", ".2f"),
             ("compile s", "compile_s", ".1f")]
  print_table(f"SimpleNet (widths {tuple(config.model.widths)}, DCN tiles {config.model.dcn_tile_bytes} B) on "
              f"{device_description()}, median of {args.repeats}", columns, rows)
  write_json(args.json, {"benchmark": "accelerator", "smoke": args.smoke, "repeats": args.repeats,
                         "widths": list(config.model.widths), "dcn_tile_bytes": config.model.dcn_tile_bytes,
                         "peak_flops": peaks, "rows": rows})


if __name__ == "__main__":
  main()
