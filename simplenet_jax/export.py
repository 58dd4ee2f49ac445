"""Export: a workdir's trained network as one file that runs without this package.

    python -m simplenet_jax.export --workdir DIR --out FILE [--format stablehlo|onnx] [--checkpoint latest]

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

**onnx**: the network written as an ONNX graph of standard operators (opset 19, `onnx_graph`), the
parameters inside it: input ``"blurred"`` ``[N, H, W, 3]`` float32 in [0, 1] of any batch and size (the graph
reflect-pads to the multiple of 4 and crops back itself), output ``"sharp"``, the same shape. Every deformable
convolution is one ONNX ``DeformConv``; onnxruntime unfolds a layer's whole input at once, so memory grows
with the image (`README.md`, "Exporting the model", tiles large photos). Before writing, the export runs the
model in onnxruntime on a random image of `ONNX_CHECK_SIZE` (odd on both sides, so the padding is checked
too), a gated network also with its gate held open, and refuses to write it if it differs from the network by
more than `ONNX_TOLERANCE`.
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

from simplenet_jax import complexity
from simplenet_jax import inference
from simplenet_jax import paths
from simplenet_jax.models.simplenet import SIZE_MULTIPLE

PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("stablehlo", "onnx")
ONNX_TOLERANCE = 1e-4  # largest |ONNX − network| the export accepts on its check image
ONNX_CHECK_SIZE = (45, 61)  # odd: the check sees the graph's own padding and crop; small: a few seconds


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


def convert_onnx(graphdef: nnx.GraphDef, params: nnx.State) -> bytes:
  """The serialized ONNX model of the network `nnx.merge(graphdef, params)` (`onnx_graph.simplenet_model`)."""
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top,unused-import  (onnx_deviation's, checked early)
    from simplenet_jax import onnx_graph  # pylint: disable=g-import-not-at-top  (imports onnx)
  except ImportError as error:
    raise ValueError(f"--format onnx needs the onnx extra ({error}): pip install 'simplenet-jax[onnx]'") from None
  return onnx_graph.simplenet_model(nnx.merge(graphdef, params)).SerializeToString()


def onnx_deviation(artifact: bytes, network: inference.ApplyFn,
                   size: tuple[int, int] = ONNX_CHECK_SIZE) -> float:
  """The largest |ONNX model − network| on a random image of `size` (any H×W: `network` pads as the graph
  does, `inference.at_any_size`), the ONNX model run in onnxruntime."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).random((1, *size, 3), dtype=np.float32)
  session = onnxruntime.InferenceSession(artifact, providers=["CPUExecutionProvider"])
  got = session.run(None, {session.get_inputs()[0].name: image})[0]
  expected = np.asarray(network(image))
  return float(np.abs(got - expected).max()) if got.shape == expected.shape else math.inf


def gate_opened(graphdef: nnx.GraphDef, params: nnx.State) -> nnx.State | None:
  """The parameters with the demo's gate (`ModelConfig.residual_gate`) open on every image (its weights 0, its
  bias 1), or None for a network without one; `params` stay as they are."""
  model = nnx.merge(graphdef, jax.tree.map(lambda value: value, params))  # merge alone shares params' variables
  if model.gate is None:
    return None
  model.gate.kernel[...] = jnp.zeros_like(model.gate.kernel[...])
  model.gate.bias[...] = jnp.ones_like(model.gate.bias[...])
  return nnx.split(model)[1]


def onnx_graph_gate_opened(artifact: bytes) -> bytes:
  """The serialized ONNX model with its gate's constants set as `gate_opened` sets the parameters."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  from simplenet_jax import onnx_graph  # pylint: disable=g-import-not-at-top
  model = onnx.load_from_string(artifact)
  values = {onnx_graph.GATE_KERNEL: np.zeros, onnx_graph.GATE_BIAS: np.ones}
  for tensor in model.graph.initializer:
    if tensor.name in values:
      tensor.CopyFrom(numpy_helper.from_array(values.pop(tensor.name)(numpy_helper.to_array(tensor).shape,
                                                                        np.float32), tensor.name))
  if values:
    raise ValueError(f"the ONNX graph has no {sorted(values)}: its gate was not converted.")
  return model.SerializeToString()


def export_onnx(graphdef: nnx.GraphDef, params: nnx.State,
                say: Callable[[str], None] = lambda _: None) -> tuple[bytes, float]:
  """(`convert_onnx`'s model, its `onnx_deviation` from the network `nnx.merge(graphdef, params)`);
  ValueError, and nothing to write, if that exceeds `ONNX_TOLERANCE`. `say` hears each step as it starts."""
  say("export: writing the ONNX graph")
  artifact = convert_onnx(graphdef, params)
  height, width = ONNX_CHECK_SIZE
  say(f"export: checking the ONNX model in onnxruntime on a {height}x{width} image")
  deviation = onnx_deviation(artifact, inference.at_any_size(jax.jit(_network(graphdef, params))))
  open_params = gate_opened(graphdef, params)
  if open_params is not None:
    # A gate shut on the check's image gives the image back on both sides, whatever the other weights became:
    # the same graph with its gate's two constants held open checks every one of them.
    deviation = max(deviation, onnx_deviation(onnx_graph_gate_opened(artifact),
                                              inference.at_any_size(jax.jit(_network(graphdef, open_params)))))
  if not deviation <= ONNX_TOLERANCE:
    raise ValueError(f"the ONNX model differs from the network by {deviation:.2g} (more than "
                     f"{ONNX_TOLERANCE:g}) on a {height}x{width} image in onnxruntime, so it was not written; "
                     "export --format stablehlo instead and report this with your onnx and onnxruntime versions.")
  return artifact, deviation


def export_workdir(workdir: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "stablehlo",
                   checkpoint: str = "latest", say: Callable[[str], None] = lambda _: None,
                   overwrite: bool = False) -> dict:
  """Writes a workdir's checkpoint as `fmt` to `out` (an existing file only if `overwrite`); returns what was
  written (for the printed line). `say` hears its progress."""
  if fmt not in FORMATS:
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
  out = paths.user_path(out)
  if out.is_dir():
    raise ValueError(f"--out {out} is a folder; pass a file name, e.g. {out / f'simplenet.{fmt}'}.")
  if out.exists() and not overwrite:
    raise ValueError(f"--out {out} exists; pass --overwrite to replace it, or another --out.")
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
    artifact, deviation = export_onnx(graphdef, params, say)
    written.update(platforms=("onnxruntime",), input="'blurred' [N, H, W, 3] float32 in [0, 1], any H and W",
                   deviation=deviation)
  try:
    with paths.atomic_write(out) as f:  # a kill or a full disk never leaves half a model
      f.write(artifact)
  except OSError as error:
    raise ValueError(f"cannot write {out} ({error.strerror or paths.first_line(error)}); nothing was written; "
                     "free some space or pass another --out.") from None
  written["bytes"] = len(artifact)
  return written


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m simplenet_jax.export", description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a training workdir (holding checkpoints/)")
  parser.add_argument("--out", required=True, help="the file to write (a local path or a bucket URL)")
  parser.add_argument("--format", choices=FORMATS, default="stablehlo", help="default stablehlo")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)
  try:
    written = export_workdir(args.workdir, args.out, fmt=args.format, checkpoint=args.checkpoint,
                             say=lambda message: print(message, file=sys.stderr, flush=True),
                             overwrite=args.overwrite)
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
