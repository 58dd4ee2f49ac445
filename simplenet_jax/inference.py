"""Applying a trained network to whole images: the ×8 geometric self-ensemble and tiling with blended seams.

Both wrap an ``apply_fn`` that maps ``[N, H, W, 3]`` float images in [0, 1] of any size to the same shape
(`evaluate.deblur` pads to the network's multiple of 4 and crops back).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

ApplyFn = Callable[[jax.Array], jax.Array]


def _transform(x: jax.Array, k: int) -> jax.Array:
  """The k-th of the 8 symmetries of the square (k // 2 quarter turns, then a horizontal flip if k is odd)."""
  x = jnp.rot90(x, k // 2, axes=(1, 2))
  return x[:, :, ::-1] if k % 2 else x


def _inverse(x: jax.Array, k: int) -> jax.Array:
  x = x[:, :, ::-1] if k % 2 else x
  return jnp.rot90(x, -(k // 2), axes=(1, 2))


def self_ensemble(apply_fn: ApplyFn, image: jax.Array) -> jax.Array:
  """Mean of the network's outputs over the 8 flips × quarter turns, each mapped back (8× the cost)."""
  return sum(_inverse(apply_fn(_transform(image, k)), k) for k in range(8)) / 8


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  if tile >= size:
    return [0]
  step = tile - overlap
  starts = list(range(0, size - tile, step)) + [size - tile]
  return sorted(set(starts))


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
  """1 inside the tile, rising linearly over `overlap` pixels at each edge that meets another tile."""
  weights = np.ones(length, np.float32)
  ramp = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
  if overlap and not at_start:
    weights[:overlap] = ramp
  if overlap and not at_end:
    weights[-overlap:] = ramp[::-1]
  return weights


def tiled(apply_fn: ApplyFn, image: jax.Array, tile: int, overlap: int) -> jax.Array:
  """Runs `apply_fn` on overlapping `tile`×`tile` windows of ``[1, H, W, 3]`` and blends them linearly.

  Memory then depends on the tile, not the image. LGCR's global context becomes per-tile, so the result
  is an approximation of the whole-image output (exact when the tile covers the image). Every window has
  the same shape, so the network compiles once.
  """
  if tile < 16:
    raise ValueError(f"--tile must be at least 16 pixels, got {tile}.")
  if not 0 <= overlap < tile:
    raise ValueError(f"--overlap must be at least 0 and smaller than the tile ({tile}), got {overlap}.")
  _, height, width, channels = image.shape
  tile_h, tile_w = min(tile, height), min(tile, width)
  total = np.zeros((height, width, channels), np.float32)
  weight = np.zeros((height, width, 1), np.float32)
  rows, cols = _tile_starts(height, tile_h, overlap), _tile_starts(width, tile_w, overlap)
  for top in rows:
    for left in cols:
      window = image[:, top:top + tile_h, left:left + tile_w]
      out = np.asarray(apply_fn(window))[0]
      w = (_ramp(tile_h, overlap, top == rows[0], top == rows[-1])[:, None, None] *
           _ramp(tile_w, overlap, left == cols[0], left == cols[-1])[None, :, None])
      total[top:top + tile_h, left:left + tile_w] += out * w
      weight[top:top + tile_h, left:left + tile_w] += w
  return jnp.asarray(total / weight)[None]


def deblur_image(apply_fn: ApplyFn, image: jax.Array, *, tile: int = 0, overlap: int = 32,
                 ensemble: bool = False) -> jax.Array:
  """``[1, H, W, 3]`` in [0, 1] → deblurred, optionally self-ensembled and/or tiled (`tile` 0 = whole)."""
  fn = (lambda x: self_ensemble(apply_fn, x)) if ensemble else apply_fn
  return tiled(fn, image, tile, overlap) if tile else fn(image)
