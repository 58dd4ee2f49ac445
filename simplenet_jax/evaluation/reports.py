"""Reports of an evaluation: results.csv, summary.json, the deblurred PNGs and the worst and best pictures.

Every path may be a local folder or a bucket URL (`etils.epath`).
"""

from __future__ import annotations

import csv
import heapq
import io
import json

import numpy as np
from etils import epath

from simplenet_jax import paths
from simplenet_jax import photos
from simplenet_jax.evaluation import scoring


def side_by_side(blur, output, sharp) -> np.ndarray:
  """blur | output | sharp as one uint8 ``[H, 3W, 3]`` picture; [0, 1] floats are rounded as a PNG holds them."""
  return np.concatenate([photos.as_uint8(image) for image in (blur, output, sharp)], axis=1)


class Extremes:
  """The `count` lowest- and highest-scored items seen so far (a running bottom-k and top-k).

  Only 2·`count` items are held however many are offered; of equal scores the earliest is kept.
  """

  def __init__(self, count: int):
    self.count = count
    self._low = []  # (-score, -order, item): heapq pops the highest score, of equal ones the latest
    self._high = []  # (score, -order, item): heapq pops the lowest score, of equal ones the latest
    self._offered = 0

  def wants(self, value: float) -> bool:
    """Whether an item of this score would be kept (so that it is only built when needed)."""
    return self.count > 0 and (len(self._low) < self.count or value < -self._low[0][0] or
                               len(self._high) < self.count or value > self._high[0][0])

  def add(self, value: float, item) -> None:
    self._offered += 1
    for heap, entry in ((self._low, (-value, -self._offered, item)), (self._high, (value, -self._offered, item))):
      if len(heap) < self.count:
        heapq.heappush(heap, entry)
      elif self.count:
        heapq.heappushpop(heap, entry)

  def lowest(self) -> list:
    """The kept items of the lowest scores, lowest first."""
    return [item for *_, item in sorted(self._low, reverse=True)]  # orders are unique: items never compared

  def highest(self) -> list:
    """The kept items of the highest scores, highest first."""
    return [item for *_, item in sorted(self._high, reverse=True)]


def write_extremes(out: epath.Path, extremes: Extremes) -> None:
  """OUT/worst/NN_<scene>_<frame>.png and OUT/best/NN_…png (rank NN from 01), replacing an earlier run's."""
  for folder, items in (("worst", extremes.lowest()), ("best", extremes.highest())):
    for old in (out / folder).glob("[0-9][0-9]_*.png"):
      old.unlink()
    for rank, (name, picture) in enumerate(items, 1):
      photos.write_png(out / folder / f"{rank:02d}_{name.replace('/', '_')}.png", picture)


def write_results(results: list[scoring.ImageResult], out: epath.Path, extra: dict) -> dict:
  """`results.csv` (one row per image) and `summary.json` (means and the run's facts) in `out`."""
  out.mkdir(parents=True, exist_ok=True)
  conventions = list(results[0].ssim) if results else []
  aligned = list(results[0].aligned) if results and results[0].aligned is not None else []
  table = io.StringIO()
  writer = csv.writer(table)
  writer.writerow(["scene", "name", "input_psnr"] + [f"input_ssim_{c}" for c in conventions] + ["psnr"] +
                  [f"ssim_{c}" for c in conventions] + [f"{k}_{scoring.ALIGNED}" for k in aligned] +
                  ["input_colour_shift", "colour_shift", "unchanged", "seconds"])
  for r in results:
    scene, name = r.name.split("/", 1) if "/" in r.name else ("", r.name)
    writer.writerow([scene, name, f"{r.input_psnr:.6f}"] + [f"{r.input_ssim[c]:.8f}" for c in conventions] +
                    [f"{r.psnr:.6f}"] + [f"{r.ssim[c]:.8f}" for c in conventions] +
                    [f"{r.aligned[k]:.8f}" for k in aligned] +
                    [f"{r.input_colour_shift:.4f}", f"{r.colour_shift:.4f}", int(r.unchanged), f"{r.seconds:.4f}"])
  with paths.atomic_write(out / "results.csv", "w") as f:
    f.write(table.getvalue())
  summary = {**scoring.mean_metrics(results), **scoring.worst_cases(results),
             "seconds": float(np.mean([r.seconds for r in results])) if results else 0,
             "images": len(results), "conventions": conventions, **extra}
  with paths.atomic_write(out / "summary.json", "w") as f:
    f.write(json.dumps(summary, indent=2) + "\n")
  return summary


def summary_text(summary: dict, *, saved_images: bool = False) -> str:
  """What `eval.py` prints of an evaluation's summary: the means beside the blurred input's, the worst image,
  and where the files are. RealBlur's aligned scores lead when they are the headline."""
  lines = [f"{summary['images']} images, checkpoint step {summary['checkpoint_step']} ({summary['config']}):"]
  unaligned = ""
  if summary["headline"] == scoring.ALIGNED:
    lines.append(f"  RealBlur protocol (ECC-aligned, valid region): PSNR {summary['psnr_aligned']:.2f} dB, SSIM "
                 f"{summary['ssim_aligned']:.4f} (blurred input {summary['input_psnr_aligned']:.2f} dB, "
                 f"{summary['input_ssim_aligned']:.4f})")
    unaligned = "unaligned "
  lines.append(f"  {unaligned}PSNR {summary['psnr']:.2f} dB (blurred input {summary['input_psnr']:.2f} dB)")
  for c in summary["conventions"]:
    lines.append(f"  {unaligned}SSIM ({c} convention) {summary[f'ssim_{c}']:.4f} "
                 f"(blurred input {summary[f'input_ssim_{c}']:.4f})")
  lines.append(f"  colour shift (largest channel-mean offset) {summary['colour_shift']:.2f} levels (blurred input "
               f"{summary['input_colour_shift']:.2f}); worst image: PSNR {summary['worst_psnr_gain']:+.2f} dB, "
               f"colour shift {summary['worst_colour_shift_excess']:+.2f} levels beyond its input's")
  if summary.get("unchanged"):
    lines.append(f"  unchanged (the output is the input, byte for byte): {summary['unchanged']} of "
                 f"{summary['images']} images")
  for band, stats in summary.get("bands", {}).items():
    lines.append(f"  {band} ({stats['images']} images, input {stats['input_psnr']:.2f} dB): PSNR gain "
                 f"{stats['gain']:+.2f} dB (worst {stats['worst_gain']:+.2f}), colour shift "
                 f"{stats['colour_shift']:.2f} levels (input {stats['input_colour_shift']:.2f})"
                 + (f", {stats['unchanged']} unchanged" if summary.get("unchanged") else ""))
  saved = ", images/, worst/, best/" if saved_images else ""
  lines.append(f"  files: {summary['out']}/results.csv, summary.json{saved}")
  return "\n".join(lines)
