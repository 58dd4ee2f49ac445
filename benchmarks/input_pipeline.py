"""Input pipeline: CPU ms per 256² training pair and pairs/s with 0, 1, 2 grain workers, per record design.

    python benchmarks/input_pipeline.py [--json PATH] [--pairs 12] [--copies 16] [--workers 0 1 2] [--smoke]

A GoPro-sized set (1280×720 pairs, synthesized here, so it runs on any machine: `--pairs` of them, each
hard-linked `--copies` times under other scene names, so that an epoch is not tiny) is read by

* **before**: the old pipeline's work: decode both full-frame PNGs, crop, convert to float32 in the worker;
* **after**: `pipeline.train_dataset` over the TFDS builds of each `storage` (`builders`): raw uint8 `tiles`
  (256², the default), BasicSR `subimages` (512², stride 256) and whole `frames`; uint8 leaves the workers.

CPU ms per pair is the process CPU time (all threads) with 0 workers over the pairs read; pairs/s is wall
time after the first batch (worker start-up is not counted). Also: each build's size on disk and build time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

from common import print_table  # noqa: F401  (sets sys.path first)
from common import write_json

from absl import flags
import grain
import numpy as np

from configs import gopro
from simplenet_jax.data import builders
from simplenet_jax.data import catalogue
from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data import pipeline
from simplenet_jax.data.synthesis import dataset


@dataclasses.dataclass(frozen=True)
class _BeforeDecode(grain.transforms.Map):
  """The old pipeline's element: both PNG files of a pair decoded in full."""

  pairs: tuple

  def map(self, index: int) -> dict:
    pair = self.pairs[index]
    return {"blur": images.read_rgb(pair.blur), "sharp": images.read_rgb(pair.sharp)}


@dataclasses.dataclass(frozen=True)
class _BeforeCropToFloat(grain.transforms.RandomMap):
  size: int

  def random_map(self, pair: dict, rng: np.random.Generator) -> dict:
    height, width = pair["blur"].shape[:2]
    top, left = rng.integers(0, height - self.size + 1), rng.integers(0, width - self.size + 1)
    return {key: np.ascontiguousarray(pair[key][top:top + self.size, left:left + self.size]).astype(np.float32) / 255
            for key in ("blur", "sharp")}


def _before_dataset(data, batch: int):
  pairs = tuple(layouts.list_pairs("folder", data.root, "train"))
  stream = (grain.MapDataset.range(len(pairs)).seed(data.seed).shuffle().repeat().map(_BeforeDecode(pairs))
            .random_map(_BeforeCropToFloat(data.crop_size)).batch(batch, drop_remainder=True))
  return stream.to_iter_dataset(grain.ReadOptions(num_threads=data.read_threads)).mp_prefetch(
      grain.MultiprocessingOptions(num_workers=data.num_workers, per_worker_buffer_size=data.worker_buffer_size))


def measure(make_dataset, batches: int) -> tuple[float, float]:
  """(wall seconds, process CPU seconds) of `batches` batches after the first."""
  iterator = iter(make_dataset())
  try:
    next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
      next(iterator)
    return time.perf_counter() - wall, time.process_time() - cpu
  finally:
    iterator.close()


def _size_mb(folder: str) -> float:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files
             if ".array_record" in f) / 2**20


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--json", help="write the results to this JSON file")
  parser.add_argument("--pairs", type=int, default=12, help="1280×720 train pairs to synthesize")
  parser.add_argument("--copies", type=int, default=16,
                      help="hard-linked copies of each pair (grain's index shuffle costs ~40/N ms an element over N "
                           "elements: 12 pairs alone would cost 3.5 ms a pair, GoPro's 2,103 cost 0.04)")
  parser.add_argument("--batches", type=int, default=25, help="timed batches of 8 per measurement")
  parser.add_argument("--workers", type=int, nargs="*", default=[0, 1, 2])
  parser.add_argument("--smoke", action="store_true", help="tiny frames and crops (seconds; for the tests)")
  args = parser.parse_args(argv)
  flags.FLAGS(sys.argv[:1])  # grain's worker processes read absl flags
  size, crop, batch, batches = ((720, 1280), 256, 8, args.batches) if not args.smoke else ((96, 128), 32, 2, 2)
  if args.smoke:
    args.pairs, args.copies, args.workers = 2, 2, [0, 1]

  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "gopro_sized")
    unique = os.path.join(tmp, "unique")
    dataset.synthesize_dataset(unique, train_pairs=args.pairs, test_pairs=1, size=size, progress=False)
    for copy in range(args.copies):  # scene names differ, pixels repeat
      for split in ("train", "test"):
        for pair in layouts.list_pairs("folder", unique, split):
          for path in (pair.blur, pair.sharp):
            target = os.path.join(root, split, f"{pair.scene}_{copy}", path.parent.name, path.name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.link(path, target)
    num_pairs = args.pairs * args.copies
    png_mb = sum(os.path.getsize(p) for pair in layouts.list_pairs("folder", root, "train")
                 for p in (pair.blur, pair.sharp)) / 2**20
    data = gopro.get_config().data
    data.dataset, data.root, data.crop_size = "folder", root, crop
    designs = [("before: PNG frames, full decode, float32", None, png_mb, None)]
    for storage in builders.STORAGES:
      out = os.path.join(tmp, f"tfds_{storage}")
      start = time.perf_counter()
      catalogue.build("folder", root, out, storage=storage)
      designs.append((f"after: {storage}, raw uint8", storage, _size_mb(out), time.perf_counter() - start))
    for label, storage, disk_mb, build_s in designs:
      row = {"design": label, "disk_mb_per_pair": disk_mb / num_pairs,
             "build_s_per_pair": None if build_s is None else build_s / num_pairs}
      for workers in args.workers:
        data.num_workers = workers
        if storage is None:
          make = lambda: _before_dataset(data, batch)  # noqa: E731
        else:
          data.storage, data.tfds_dir = storage, os.path.join(tmp, f"tfds_{storage}")
          make = lambda: pipeline.train_dataset(data, batch)  # noqa: E731
        wall, cpu = measure(make, batches)
        row[f"pairs_per_s_{workers}w"] = batches * batch / wall
        if workers == 0:
          row["cpu_ms_per_pair"] = 1e3 * cpu / (batches * batch)
      rows.append(row)
      print(row, flush=True)
  columns = [("design", "design", ""), ("CPU ms/pair", "cpu_ms_per_pair", ".1f")]
  columns += [(f"pairs/s {w}w", f"pairs_per_s_{w}w", ".1f") for w in args.workers]
  columns += [("disk MB/pair", "disk_mb_per_pair", ".2f"), ("build s/pair", "build_s_per_pair", ".2f")]
  print_table(f"{crop}² training pairs from {size[1]}×{size[0]} frames, batch {batch}, {os.cpu_count()} cores",
              columns, rows)
  write_json(args.json, {"benchmark": "input_pipeline", "frame": list(size), "crop": crop, "batch": batch,
                         "pairs": args.pairs, "copies": args.copies, "rows": rows})


if __name__ == "__main__":
  main()
