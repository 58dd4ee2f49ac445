"""Export: a workdir's trained network as one file that runs without this package.

    python -m simplenet_jax.export --workdir DIR --out FILE [--format stablehlo] [--checkpoint latest]

(`--format onnx` answers with the reason it is not offered yet: `ONNX_UNAVAILABLE`.)

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
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from simplenet_jax import inference
from simplenet_jax import paths
from simplenet_jax import summary
from simplenet_jax.models.simplenet import SIZE_MULTIPLE

PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("stablehlo", "onnx")
ONNX_UNAVAILABLE = (
    "ONNX export is not available yet: jax2onnx, the maintained converter, requires orbax-checkpoint<0.11.37 "
    "(this project pins 0.12.8) and converts this network only at one fixed size with its deformable "
    "convolutions untiled (README, Troubleshooting: ONNX); export --format stablehlo, which runs wherever jax "
    "runs.")


def input_spec() -> jax.ShapeDtypeStruct:
  """``[n, 4·h, 4·w, 3]`` float32, every dimension symbolic."""
  shape = jax.export.symbolic_shape(f"n, {SIZE_MULTIPLE}*h, {SIZE_MULTIPLE}*w")
  return jax.ShapeDtypeStruct((*shape, 3), jnp.float32)


def export_stablehlo(graphdef: nnx.GraphDef, params: nnx.State,
                     platforms: tuple[str, ...] = PLATFORMS) -> jax.export.Exported:
  """The network `nnx.merge(graphdef, params)` as a shape-polymorphic `jax.export.Exported`."""
  forward = jax.jit(lambda image: nnx.merge(graphdef, params)(image))
  return jax.export.export(forward, platforms=platforms)(input_spec())


def export_workdir(workdir: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "stablehlo",
                   checkpoint: str = "latest") -> dict:
  """Writes a workdir's checkpoint as `fmt` to `out`; returns what was written (for the printed line)."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
  if fmt == "onnx":
    raise ValueError(ONNX_UNAVAILABLE)
  out = paths.user_path(out)
  if out.is_dir():
    raise ValueError(f"--out {out} is a folder; pass a file name, e.g. {out / 'simplenet.stablehlo'}.")
  paths.check_writable(out.parent, "output folder", "--out")
  config, graphdef, params, step = inference.load_parameters(workdir, checkpoint)
  exported = export_stablehlo(graphdef, params)
  artifact = bytes(exported.serialize())
  out.write_bytes(artifact)
  return {"out": os.fspath(out), "format": fmt, "step": step, "config": config.get("name", "?"),
          "bytes": len(artifact), "platforms": exported.platforms,
          "parameters": summary.count_parameters(nnx.merge(graphdef, params))}


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m simplenet_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--out", required=True, help="the file to write (a local path or a bucket URL)")
  parser.add_argument("--format", choices=FORMATS, default="stablehlo", help="default stablehlo")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    written = export_workdir(args.workdir, args.out, fmt=args.format, checkpoint=args.checkpoint)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(f"wrote {written['out']}: {written['format']}, checkpoint step {written['step']} ({written['config']}, "
        f"{written['parameters']:,} parameters), {written['bytes'] / 2**20:.1f} MiB, for "
        f"{', '.join(written['platforms'])}; input [N, H, W, 3] float32 in [0, 1], H and W multiples of "
        f"{SIZE_MULTIPLE}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
