"""The tiling policy, shared by every client (`simplenet-deblur`, the web demo, `eval.py --tile`, the export).

Pure Python, no JAX: the command lines show these defaults in `--help` before they import JAX. The tiles
themselves are run and blended by `inference.tiled`.
"""

from __future__ import annotations

MIN_TILE = 16
MAX_TILE = 4096  # a 4096² tile of the paper's network already needs tens of GB
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 32  # pixels blended between neighbouring tiles
DEFAULT_MAX_PIXELS = 1_500_000  # above this, tile: whole-image inference of 12 MP needs tens of GB


def auto_tile(pixels: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
  """The tile size a photo of `pixels` gets when none is asked for: DEFAULT_TILE above `max_pixels`, else 0."""
  return DEFAULT_TILE if pixels > max_pixels else 0


def check_tiling(tile: int, overlap: int, *, whole_allowed: bool = True) -> None:
  """One sentence for a tile size or overlap that cannot work (`tile` 0: no tiling, if `whole_allowed`)."""
  if (tile or not whole_allowed) and not MIN_TILE <= tile <= MAX_TILE:
    raise ValueError(f"--tile must be from {MIN_TILE} to {MAX_TILE} pixels (or 0: no tiles), got {tile}.")
  if tile and not 0 <= overlap < tile:
    raise ValueError(f"--overlap must be at least 0 and smaller than the tile ({tile}), got {overlap}.")
