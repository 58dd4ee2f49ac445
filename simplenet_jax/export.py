"""Export: a workdir's trained network as one file that runs without this package.

    python -m simplenet_jax.export --workdir DIR --out FILE [--format stablehlo|onnx] [--size HxW]
                                   [--checkpoint latest]

**stablehlo** (default): `jax.export` of the network with a symbolic batch, height and width, lowered for
cpu, cuda and tpu in one artifact, the parameters inside it as constants. Its input is ``[N, H, W, 3]``
float32 in [0, 1] with H and W multiples of 4 (`SIZE_MULTIPLE`, the network's two downsamplings); its output
has the same shape, as `inference.load_model`'s network gives it (clip to [0, 1] before saving). Other sizes:
reflect-pad H and W up to the next multiple of 4 and crop the output back, as `inference.pad_to_multiple`
does (`README.md`, "Export", shows it). Loading needs only jax:

    exported = jax.export.deserialize(open("simplenet.stablehlo", "rb").read())
    out = exported.call(image)          # on whichever of cpu, cuda, tpu jax runs on

The DCN layers tile their rows for a 1280-pixel-wide image (`ops.deform_conv.tile_rows`): the export cannot
divide the tile budget by a width it does not know.

**onnx**: `jax2onnx` of the same network for one input size (`--size`, default 720x1280, GoPro's frames)
and a symbolic batch; each DCN's tile loop becomes an ONNX ``Loop``, so onnxruntime needs about 9 KB per
pixel (8 GiB at 720x1280). The size is fixed because jax2onnx 0.17 cannot lower a symbolic H or W through
the network's downsamplings (its `lower_dimexpr` finds no origin for ``h`` in ``4*h``; `README.md`,
Troubleshooting: ONNX). Before writing, the export runs the ONNX model in onnxruntime on a random image of
that size and refuses to write it if it differs from the network by more than `ONNX_TOLERANCE`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from simplenet_jax import inference
from simplenet_jax import paths
from simplenet_jax import complexity
from simplenet_jax import tiling
from simplenet_jax.models.simplenet import SIZE_MULTIPLE

PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("stablehlo", "onnx")
DEFAULT_ONNX_SIZE = (720, 1280)
ONNX_TOLERANCE = 1e-4  # largest |ONNX − network| the export accepts on its check image
ONNX_BYTES_PER_PIXEL = 9_000  # onnxruntime's peak memory per input pixel, measured at 256² and 720x1280
MIN_SIZE = tiling.MIN_TILE  # pixels: smaller images leave the 1/4 scale a few pixels


def _network(graphdef: nnx.GraphDef, params: nnx.State) -> inference.ApplyFn:
  """The network with its parameters as constants: what each format converts."""
  return lambda image: nnx.merge(graphdef, params)(image)


def input_spec() -> jax.ShapeDtypeStruct:
  """``[n, 4·h, 4·w, 3]`` float32, every dimension symbolic."""
  shape = jax.export.symbolic_shape(f"n, {SIZE_MULTIPLE}*h, {SIZE_MULTIPLE}*w")
  return jax.ShapeDtypeStruct((*shape, 3), jnp.float32)


def export_stablehlo(graphdef: nnx.GraphDef, params: nnx.State,
                     platforms: tuple[str, ...] = PLATFORMS) -> jax.export.Exported:
  """The network `nnx.merge(graphdef, params)` as a shape-polymorphic `jax.export.Exported`."""
  return jax.export.export(jax.jit(_network(graphdef, params)), platforms=platforms)(input_spec())


def convert_onnx(graphdef: nnx.GraphDef, params: nnx.State, size: tuple[int, int]) -> bytes:
  """The serialized ONNX model of the network at ``[B, H, W, 3]`` (B symbolic)."""
  try:
    import jax2onnx  # pylint: disable=g-import-not-at-top  (only this format needs it; a slow import)
    import onnxruntime  # pylint: disable=g-import-not-at-top,unused-import  (onnx_deviation's, checked early)
  except ImportError as error:
    raise ValueError(f"--format onnx needs jax2onnx and onnxruntime ({error}); install them with "
                     "pip install -e '.[onnx]' (scripts/setup.sh does).") from None
  for name in ("jax2onnx", "onnx_ir"):  # a converter's notes about its own graph, not the user's business
    logging.getLogger(name).setLevel(logging.ERROR)
  spec = jax.ShapeDtypeStruct((*jax.export.symbolic_shape("b"), *size, 3), jnp.float32)
  model = jax2onnx.to_onnx(_network(graphdef, params), [spec], model_name="simplenet",
                           input_names=["blurred"], output_names=["sharp"])
  return model.SerializeToString()


def onnx_deviation(artifact: bytes, network: inference.ApplyFn, size: tuple[int, int]) -> float:
  """The largest |ONNX model − network| on a random image of `size`, the ONNX model run in onnxruntime."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3  # not its notes on initializers the converter left unused
  session = onnxruntime.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
  got = session.run(None, {session.get_inputs()[0].name: image})[0]
  expected = np.asarray(network(image))
  return float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf


def export_onnx(graphdef: nnx.GraphDef, params: nnx.State, size: tuple[int, int],
                say: Callable[[str], None] = lambda _: None) -> tuple[bytes, float]:
  """(`convert_onnx`'s model, its `onnx_deviation` from the network `nnx.merge(graphdef, params)`);
  ValueError, and nothing to write, if that exceeds `ONNX_TOLERANCE`. `say` hears each step as it starts."""
  say("export: converting the network with jax2onnx (about half a minute)")
  artifact = convert_onnx(graphdef, params, size)
  say(f"export: checking the ONNX model in onnxruntime on a {size[0]}x{size[1]} image "
      f"(about {ONNX_BYTES_PER_PIXEL * size[0] * size[1] / 2**30:.1f} GiB of memory)")
  deviation = onnx_deviation(artifact, jax.jit(_network(graphdef, params)), size)
  if not deviation <= ONNX_TOLERANCE:
    raise ValueError(f"the ONNX model differs from the network by {deviation:.2g} (more than "
                     f"{ONNX_TOLERANCE:g}) on a {size[0]}x{size[1]} image in onnxruntime, so it was not written; "
                     "export --format stablehlo instead and report this with your jax2onnx version.")
  return artifact, deviation


def parse_size(text: str) -> tuple[int, int]:
  """``"720x1280"`` → (720, 1280); one ValueError sentence for anything else or a size the network refuses."""
  height, _, width = text.lower().partition("x")
  if not (height.strip().isdigit() and width.strip().isdigit()):
    raise ValueError(f"--size {text!r} is not HEIGHTxWIDTH in pixels, e.g. --size 720x1280.")
  size = int(height), int(width)
  if min(size) < MIN_SIZE or any(n % SIZE_MULTIPLE for n in size):
    raise ValueError(f"--size {text} must be at least {MIN_SIZE} and a multiple of {SIZE_MULTIPLE} on each side "
                     f"(the network's two downsamplings), e.g. "
                     f"{'x'.join(str(max(MIN_SIZE, -(-n // SIZE_MULTIPLE) * SIZE_MULTIPLE)) for n in size)}.")
  return size


def export_workdir(workdir: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "stablehlo",
                   checkpoint: str = "latest", size: str | None = None,
                   say: Callable[[str], None] = lambda _: None) -> dict:
  """Writes a workdir's checkpoint as `fmt` to `out`; returns what was written (for the printed line).
  `size` (``"HxW"``) is the ONNX model's input size, `DEFAULT_ONNX_SIZE` if None; `say` hears its progress."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
  if fmt == "stablehlo" and size is not None:
    raise ValueError("--size is for --format onnx; the StableHLO artifact takes every size.")
  hw = parse_size(size) if size is not None else DEFAULT_ONNX_SIZE
  out = paths.user_path(out)
  if out.is_dir():
    raise ValueError(f"--out {out} is a folder; pass a file name, e.g. {out / f'simplenet.{fmt}'}.")
  paths.check_writable(out.parent, "output folder", "--out")
  config, graphdef, params, step = inference.load_parameters(workdir, checkpoint)
  written = {"out": os.fspath(out), "format": fmt, "step": step, "config": config.get("name", "?"),
             "parameters": complexity.count_parameters(nnx.merge(graphdef, params))}
  if fmt == "stablehlo":
    exported = export_stablehlo(graphdef, params)
    artifact = bytes(exported.serialize())
    written.update(platforms=exported.platforms,
                   input=f"[N, H, W, 3] float32 in [0, 1], H and W multiples of {SIZE_MULTIPLE}")
  else:
    artifact, deviation = export_onnx(graphdef, params, hw, say)
    written.update(platforms=("onnxruntime",), input=f"'blurred' [N, {hw[0]}, {hw[1]}, 3] float32 in [0, 1]",
                   deviation=deviation)
  out.write_bytes(artifact)
  written["bytes"] = len(artifact)
  return written


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m simplenet_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--out", required=True, help="the file to write (a local path or a bucket URL)")
  parser.add_argument("--format", choices=FORMATS, default="stablehlo", help="default stablehlo")
  parser.add_argument("--size", default=None, help="onnx only: the input's HEIGHTxWIDTH, multiples of 4 "
                      f"(default {DEFAULT_ONNX_SIZE[0]}x{DEFAULT_ONNX_SIZE[1]})")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    written = export_workdir(args.workdir, args.out, fmt=args.format, checkpoint=args.checkpoint,
                             size=args.size, say=lambda message: print(message, file=sys.stderr, flush=True))
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  check = f"; onnxruntime matches the network to {written['deviation']:.1g}" if "deviation" in written else ""
  print(f"wrote {written['out']}: {written['format']}, checkpoint step {written['step']} ({written['config']}, "
        f"{written['parameters']:,} parameters), {written['bytes'] / 2**20:.1f} MiB, for "
        f"{', '.join(written['platforms'])}; input {written['input']}{check}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
