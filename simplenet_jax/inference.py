"""Inference: a workdir's trained network applied to whole images of any size (SPEC §5).

One path serves `eval.py`, training's periodic evaluation, `simplenet-deblur` and the benchmarks:

* `load_model(workdir)`: the config, a jitted ``network`` (``[N, H, W, 3]`` floats in [0, 1], H and W
  multiples of 4) and the checkpoint's step; `gate=False` applies a gated network's residual to every image.
* `make_deblur_fn(network, ensemble=…, tile=…)`: the function that deblurs ``[N, H, W, 3]`` of any size.
  It reflect-pads to the network's multiple of 4 and crops back (`pad_to_multiple`), and optionally averages
  the ×8 flips/rotations (`self_ensemble`) and/or runs overlapping tiles with blended seams (`tiled`).
* `run_batch(deblur_fn, images, batch_size)`: uint8 outputs of same-sized images, as a saved PNG holds them,
  at one compiled shape per image size; `same_shape_batches` groups a stream of pairs into such batches.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm
from etils import epath
from flax import nnx

from simplenet_jax import checkpointing
from simplenet_jax import paths
from simplenet_jax import photos
from simplenet_jax import tiling
from simplenet_jax.models import SimpleNet
from simplenet_jax.models.simplenet import SIZE_MULTIPLE
from simplenet_jax.ops.deform_conv import DEFAULT_TILE_BYTES

ApplyFn = Callable[[jax.Array], jax.Array]  # [N, H, W, 3] float in [0, 1] → the same shape


def load_model(workdir: str | os.PathLike, checkpoint: str = "latest", *, gate: bool = True
               ) -> tuple[ml_collections.ConfigDict, ApplyFn, int]:
  """(the config it was trained with, the jitted network, the checkpoint's step) from a workdir.

  `checkpoint` is "latest", "best" (by evaluation PSNR) or a step number. Only the parameters are read.
  `gate=False` adds the residual to every image, whatever a gated network's gate (`ModelConfig.residual_gate`)
  decides: what the network does without it (`eval.py --no-gate`). A network without a gate is the same
  either way.
  """
  config, graphdef, params, step = load_parameters(workdir, checkpoint)
  forward = jax.jit(lambda params, image: nnx.merge(graphdef, params)(image) if gate
                    else image + nnx.merge(graphdef, params).residual_and_gate(image)[0].astype(image.dtype))
  return config, functools.partial(forward, params), step


def any_size_fields(model_config) -> dict:
  """`config.model` with the deformable convs sampling by gathers in bounded tiles: photos, videos and exports
  come in any size, and the matmul sampling (`config.model.dcn_sampling`, chosen for training on TPUs) sizes
  its blocks when it is traced and builds its weights in full on a CPU. Execution fields: the results are
  the same."""
  fields = dict(model_config)
  if fields.get("dcn_sampling", "gather") != "gather":
    fields.update(dcn_sampling="gather", dcn_tile_bytes=DEFAULT_TILE_BYTES)
  return fields


def load_parameters(workdir: str | os.PathLike, checkpoint: str = "latest"
                    ) -> tuple[ml_collections.ConfigDict, nnx.GraphDef, nnx.State, int]:
  """(config, the network's graphdef, its parameters, step) of a workdir's checkpoint (see `load_model`);
  `nnx.merge(graphdef, params)` is the trained `SimpleNet`, its deformable convs sampling by gathers
  (`any_size_fields`)."""
  paths.check_reachable(workdir, "workdir")
  manager = checkpointing.create_manager(workdir, keep=1, read_only=True)
  steps = manager.all_steps()
  if not steps:
    raise ValueError(f"workdir {workdir} has no checkpoint in {checkpointing.checkpoint_dir(workdir)}; train "
                     "first (python train.py --config ... --workdir ...) or pass the workdir you trained in.")
  if checkpoint == "latest":
    step = manager.latest_step()
  elif checkpoint == "best":
    step = manager.best_step() if manager.best_step() is not None else manager.latest_step()
  elif checkpoint.isdigit() and int(checkpoint) in steps:
    step = int(checkpoint)
  else:
    raise ValueError(f"checkpoint {checkpoint!r} is not in {workdir}; use latest, best or one of the saved "
                     f"steps {sorted(steps)}.")
  try:
    config, graphdef, params = _read_parameters(manager, step)
  except (FileNotFoundError, KeyError, ValueError) as error:  # tensorstore reports damaged files as ValueError
    intact = [other for other in sorted(steps) if other != step and _intact(manager, other)]
    reason = (str(error).split(": ", 1)[1].rstrip(".") if isinstance(error, checkpointing.CheckpointDamagedError)
              else f"incomplete or corrupt: {paths.first_line(error)}")
    hint = (f"pass --checkpoint with one of the intact steps {intact}" if intact else
            "no other checkpoint there is intact; train again")
    raise ValueError(f"the checkpoint of step {step} in {workdir} is damaged ({reason}); {hint}.") from None
  return config, graphdef, params, step


def _read_parameters(manager, step: int):
  config = ml_collections.ConfigDict(checkpointing.saved_meta(manager, step)["config"])
  model = nnx.eval_shape(lambda: SimpleNet.from_config(any_size_fields(config.model), rngs=nnx.Rngs(0)))
  graphdef, abstract_params = nnx.split(model)
  return config, graphdef, checkpointing.restore_params(manager, step, abstract_params)


def _intact(manager, step: int) -> bool:
  try:
    _read_parameters(manager, step)
  except (FileNotFoundError, KeyError, ValueError):
    return False
  return True


def pad_to_multiple(image: jax.Array, multiple: int = SIZE_MULTIPLE) -> tuple[jax.Array, tuple[int, int]]:
  """Reflect-pads the H and W of ``[N, H, W, C]`` up to a multiple; returns the padded batch and (H, W)."""
  height, width = image.shape[1:3]
  pad_h, pad_w = -height % multiple, -width % multiple
  if pad_h > height - 1 or pad_w > width - 1:  # reflection needs at least pad + 1 pixels
    raise ValueError(f"image of {height}×{width} pixels is too small to deblur; it needs at least "
                     f"{multiple}×{multiple}.")
  padded = jnp.pad(image, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
  return padded, (height, width)


def at_any_size(network: ApplyFn) -> ApplyFn:
  """The network on a batch of any H×W: pad by reflection, apply, crop back."""

  def apply(image: jax.Array) -> jax.Array:
    padded, (height, width) = pad_to_multiple(image)
    return network(padded)[:, :height, :width]

  return apply


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


def tiled(apply_fn: ApplyFn, image: jax.Array, tile: int, overlap: int,
          progress: Callable[[int, int], None] | None = None) -> jax.Array:
  """Runs `apply_fn` on overlapping `tile`×`tile` windows of ``[1, H, W, 3]`` and blends them linearly.

  Memory then depends on the tile, not the image. LGCR's global context becomes per-tile, so the result
  is an approximation of the whole-image output (exact when the tile covers the image). Every window has
  the same shape, so the network compiles once. `progress(done, total)` is called after every window.
  """
  tiling.check_tiling(tile, overlap, whole_allowed=False)
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
      if progress is not None:
        progress(rows.index(top) * len(cols) + cols.index(left) + 1, len(rows) * len(cols))
  return jnp.asarray(total / weight)[None]


def make_deblur_fn(network: ApplyFn, *, ensemble: bool = False, tile: int = 0, overlap: int = tiling.DEFAULT_OVERLAP,
                   progress: Callable[[int, int], None] | None = None) -> ApplyFn:
  """The function that deblurs ``[N, H, W, 3]`` floats in [0, 1] of any size with `network`.

  The whole batch goes through the network at once, also for the ×8 `ensemble` (each orientation is padded
  to the network's multiple of 4 on its own). With `tile` > 0 (overlapping tiles of that size, `overlap`
  pixels blended), images go one at a time, and `progress(done, total)` follows each image's tiles.
  """
  tiling.check_tiling(tile, overlap)
  padded = at_any_size(network)
  whole = (lambda x: self_ensemble(padded, x)) if ensemble else padded
  if not tile:
    return whole
  one = functools.partial(tiled, whole, tile=tile, overlap=overlap, progress=progress)
  return lambda images: jnp.concatenate([one(images[i:i + 1]) for i in range(images.shape[0])])


def same_shape_batches(pairs: Iterable[dict], batch_size: int) -> Iterator[list[dict]]:
  """Runs of consecutive pairs of one image size, at most `batch_size` long, in the pairs' order."""
  batch = []
  for pair in pairs:
    if batch and (len(batch) == batch_size or np.shape(pair["blur"]) != np.shape(batch[0]["blur"])):
      yield batch
      batch = []
    batch.append(pair)
  if batch:
    yield batch


def run_batch(deblur_fn: ApplyFn, images: list[np.ndarray], batch_size: int) -> np.ndarray:
  """uint8 outputs of same-sized uint8 (or [0, 1]) images, as a saved PNG would hold them; uint8 goes to the
  device as it is.

  A short batch (the end of a run of one size) is filled up with copies of its last image, so that the
  network sees one shape per image size and compiles once for it.
  """
  filled = np.stack(list(images) + [images[-1]] * (batch_size - len(images)))
  return np.asarray(photos.to_uint8(deblur_fn(photos.to_float(filled))))[:len(images)]


def frames_fn(network: ApplyFn, height: int, width: int, *, tile: int | None = None,
              overlap: int = tiling.DEFAULT_OVERLAP, max_pixels: int = tiling.DEFAULT_MAX_PIXELS,
              ensemble: bool = False, batch_size: int = 1) -> Callable[[list[np.ndarray]], np.ndarray]:
  """The function that deblurs a list of uint8 height×width frames of a video (at most `batch_size` per call,
  one compiled shape): what `deblur_photos` does to a photo of that size (the same tiling and ensemble), in
  batches."""
  size = tile if tile is not None else tiling.auto_tile(height * width, max_pixels)
  deblur_fn = make_deblur_fn(network, ensemble=ensemble, tile=size, overlap=overlap)
  return lambda frames: run_batch(deblur_fn, frames, batch_size)


@dataclasses.dataclass
class PhotoRun:
  done: int  # photos deblurred and written
  skipped: int  # outputs that existed already (kept)
  failures: list[tuple[str, str]]  # (photo, the reason in one sentence) of each photo that failed


def deblur_photos(network: ApplyFn, files: list[pathlib.Path], out: epath.Path, *, tile: int | None = None,
                  overlap: int = tiling.DEFAULT_OVERLAP, max_pixels: int = tiling.DEFAULT_MAX_PIXELS,
                  ensemble: bool = False, overwrite: bool = False) -> PhotoRun:
  """Deblurs each photo into `out` (`photos.output_path`) at its own bit depth and with its alpha channel.

  `tile` None tiles the photos of more than `max_pixels` (`auto_tile`); 0 never tiles. A photo that cannot be
  read or is too small is a failure, and the others are still processed; an existing output is kept unless
  `overwrite`.
  """
  deblur_fns = {}  # by tile size: the whole photo (0) and/or tiles
  run = PhotoRun(0, 0, [])
  out.mkdir(parents=True, exist_ok=True)
  for source in tqdm.tqdm(files, desc="deblurring", unit="photo"):
    target = photos.output_path(out, source)
    if target.exists() and not overwrite:
      run.skipped += 1
      continue
    try:
      photo = photos.read_photo(source)
    except photos.PhotoError as error:
      run.failures.append((str(source), str(error)))
      continue
    except MemoryError:
      run.failures.append((str(source), "too large to decode in this machine's memory"))
      continue
    except photos.READ_ERRORS as error:
      run.failures.append((str(source), f"unreadable image ({paths.first_line(error)})"))
      continue
    size = tile if tile is not None else tiling.auto_tile(photo.rgb.shape[0] * photo.rgb.shape[1], max_pixels)
    if size not in deblur_fns:
      deblur_fns[size] = make_deblur_fn(network, ensemble=ensemble, tile=size, overlap=overlap)
    try:
      result = np.asarray(deblur_fns[size](photo.rgb[None]))[0]
    except ValueError as error:  # a photo too small for the network
      run.failures.append((str(source), str(error)))
      continue
    try:
      photos.write_photo(target, result, photo.alpha, photo.bits)
    except OSError as error:  # a full disk or a folder gone read-only: every later photo would fail too
      raise ValueError(f"cannot write {target} ({error.strerror or paths.first_line(error)}); the {run.done} "
                       "photo(s) written before it are complete; free some space and rerun, which keeps them."
                       ) from None
    run.done += 1
  return run
