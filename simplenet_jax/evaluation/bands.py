"""Blur bands: a synthesized set's scores grouped by how far its camera moved during the exposure.

A model can gain on average and still harm what was nearly sharp; the bands show it. A synthesized set's
meta.json records each pair's motion ("trajectory_length_px"), both the demo's own (`synthesis.dataset`) and
the independent one (`synthesis.independent`); a data set without one has no bands.
"""

from __future__ import annotations

import json
import math

import numpy as np
from etils import epath

# (name, longest motion in px): a pair belongs to the first band its motion fits.
BANDS = (("nearly sharp", 1.0), ("mild", 15.0), ("heavy", math.inf))
META_FILE = "meta.json"


def band_of(length: float) -> str:
  return next(name for name, longest in BANDS if length <= longest)


def pair_bands(root: str | None) -> dict[str, str]:
  """{"scene/frame": band} of the test pairs of the synthesized set at `root`; {} for any other data."""
  meta_file = epath.Path(root) / META_FILE if root else None
  if meta_file is None or not meta_file.is_file():
    return {}
  try:
    pairs = json.loads(meta_file.read_text()).get("pairs", [])
  except (ValueError, AttributeError):
    return {}
  return {f"{p['scene']}/{p['frame'].removesuffix('.png')}": band_of(float(p["trajectory_length_px"]))
          for p in pairs if isinstance(p, dict) and p.get("split") == "test" and "trajectory_length_px" in p}


def band_summary(results, bands: dict[str, str]) -> dict[str, dict[str, float]]:
  """Per band with images, in BANDS order: images, the means of input_psnr, psnr, gain (dB), colour_shift and
  input_colour_shift (levels), the lowest gain, and how many came back unchanged."""
  summary = {}
  for name, _ in BANDS:
    members = [r for r in results if bands.get(r.name) == name]
    if not members:
      continue
    gains = [r.psnr - r.input_psnr for r in members]
    summary[name] = {"images": len(members),
                     "input_psnr": float(np.mean([r.input_psnr for r in members])),
                     "psnr": float(np.mean([r.psnr for r in members])),
                     "gain": float(np.mean(gains)), "worst_gain": float(min(gains)),
                     "colour_shift": float(np.mean([r.colour_shift for r in members])),
                     "input_colour_shift": float(np.mean([r.input_colour_shift for r in members])),
                     "unchanged": sum(r.unchanged for r in members)}
  return summary
