"""SimpleNet as an ONNX graph, written node by node from a network's parameters with the `onnx` package.

`simplenet_model(model)` is pure: a `SimpleNet` (its parameters and the variant its config chose) in, an
`onnx.ModelProto` out. The graph is the one `models/simplenet.py` computes, with the standard operators of
opset `OPSET` only, so any ONNX runtime runs it at any size:

* input ``"blurred"`` ``[N, H, W, 3]`` float32 in [0, 1], N, H and W symbolic; output ``"sharp"``, the same
  shape (clip to [0, 1] before saving), as `inference.make_deblur_fn` gives it without tiling;
* inside, the image goes NCHW, is reflect-padded up to the network's multiple of 4 with pads computed from
  its `Shape` (`pad_to_multiple`, as `inference.pad_to_multiple` does), runs the network and is cropped back;
* every deformable convolution is one ONNX ``DeformConv`` (no ``Loop``): its offset channel
  ``g·2·kh·kw + 2k`` is the row offset of kernel point k in offset group g and ``+1`` the column offset,
  which is `ops.deform_conv2d`'s (torchvision's) layout in NCHW, and its mask is ``G·kh·kw`` channels.

One function per layer kind, in the order of `models/blocks.py` and `models/global_context.py`, each taking
the module it writes; initializers and nodes are named by the module's path (``encoder1.pvb.fuse.kernel``),
so a graph viewer shows Fig. 2's structure.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
from flax import nnx
from onnx import TensorProto
from onnx import helper
from onnx import numpy_helper

from simplenet_jax.models import blocks
from simplenet_jax.models import global_context
from simplenet_jax.models import simplenet
from simplenet_jax.models.simplenet import SIZE_MULTIPLE

# DeformConv entered ONNX in opset 19; everything else used here is older (ReduceMean's axes input: 18,
# Shape's start: 15, Softmax over one axis: 13).
OPSET = 19
GATE_KERNEL, GATE_BIAS = "gate.kernel", "gate.bias"  # the gate's constants (export's check holds it open by them)
INPUT, OUTPUT = "blurred", "sharp"


class Graph:
  """The nodes and initializers of the graph being written; `op` appends a node and returns its output."""

  def __init__(self):
    self.nodes: list[onnx.NodeProto] = []
    self.initializers: list[onnx.TensorProto] = []
    self._counts: collections.Counter[str] = collections.Counter()

  def _unique(self, name: str) -> str:
    self._counts[name] += 1
    return name if self._counts[name] == 1 else f"{name}_{self._counts[name] - 1}"

  def const(self, name: str, value, dtype=np.float32) -> str:
    name = self._unique(name)
    self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype)), name))
    return name

  def ints(self, name: str, values) -> str:
    return self.const(name, np.asarray(values, np.int64).reshape(-1), np.int64)

  def op(self, op_type: str, *inputs: str, name: str, output: str | None = None, **attributes) -> str:
    name = self._unique(name)
    output = output or name
    self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=name, **attributes))
    return output


def _param(variable) -> np.ndarray:
  return np.asarray(variable[...], np.float32)


def _pair(value) -> list[int]:
  return [value] * 2 if isinstance(value, int) else list(value)


# --- models/blocks.py ---------------------------------------------------------------------------------------


def conv(g: Graph, scope: str, layer: nnx.Conv, x: str) -> str:
  """`nnx.Conv` (HWIO kernel, explicit padding) as ONNX ``Conv`` (OIHW; both cross-correlate, no flip)."""
  inputs = [x, g.const(f"{scope}.kernel", _param(layer.kernel).transpose(3, 2, 0, 1))]
  if layer.bias is not None:
    inputs.append(g.const(f"{scope}.bias", _param(layer.bias)))
  (top, bottom), (left, right) = layer.padding
  return g.op("Conv", *inputs, name=scope, kernel_shape=list(layer.kernel_size), pads=[top, left, bottom, right],
              strides=_pair(layer.strides), dilations=_pair(layer.kernel_dilation))


def up_conv(g: Graph, scope: str, layer: nnx.ConvTranspose, x: str) -> str:
  """`blocks.up_conv4x4` as ONNX ``ConvTranspose(k=4, s=2, pads=1)``: Flax's transposed conv does not flip its
  kernel (it is a fractionally strided correlation), ONNX's (PyTorch's) does, hence the flip here."""
  if tuple(layer.kernel_size) != (4, 4) or layer.padding != ((2, 2), (2, 2)) or _pair(layer.strides) != [2, 2]:
    raise ValueError(f"{scope}: only blocks.up_conv4x4 (4×4, stride 2, padding 2) has an ONNX form here.")
  weight = _param(layer.kernel)[::-1, ::-1].transpose(2, 3, 0, 1)  # [Cin, Cout, 4, 4]
  return g.op("ConvTranspose", x, g.const(f"{scope}.kernel", weight), g.const(f"{scope}.bias", _param(layer.bias)),
              name=scope, kernel_shape=[4, 4], strides=[2, 2], pads=[1, 1, 1, 1])


def relu(g: Graph, scope: str, x: str) -> str:
  return g.op("Relu", x, name=f"{scope}.relu")


def resblock(g: Graph, scope: str, block: blocks.ResBlock, x: str) -> str:
  """`blocks.ResBlock`: conv-ReLU-conv-ReLU-conv + identity."""
  y = relu(g, f"{scope}.conv1", conv(g, f"{scope}.conv1", block.conv1, x))
  y = relu(g, f"{scope}.conv2", conv(g, f"{scope}.conv2", block.conv2, y))
  return g.op("Add", x, conv(g, f"{scope}.conv3", block.conv3, y), name=f"{scope}.add")


def deform_conv(g: Graph, scope: str, layer: blocks.DeformConv, x: str,
                parts: list[tuple[str, int]] | None = None) -> str:
  """`blocks.DeformConv` as ONNX ``DeformConv``: offsets and sigmoid mask by 3×3 convs of ``x``.

  ``parts`` [(name, channels)], if given, are ``x``'s channel blocks in order (``x`` their concatenation):
  the layer is then the sum of one ``DeformConv`` per block, each with its rows of the kernel and its offset
  groups. The result is the same; the point is memory, since onnxruntime unfolds a layer's whole input at
  once (channels × 9 × H × W floats: 4.2 GB for the 128-channel PVB fuse at 720p, 1.1 GB per 32-channel
  block). A block that would cut an offset group in two keeps the layer whole.
  """
  offset = conv(g, f"{scope}.offset_conv", layer.offset_conv, x)
  if layer.max_offset:  # config.model.dcn_max_offset: offsets clipped (the sampling method does not matter here)
    offset = g.op("Clip", offset, g.const(f"{scope}.offset_min", np.float32(-layer.max_offset)),
                  g.const(f"{scope}.offset_max", np.float32(layer.max_offset)), name=f"{scope}.offset_clip")
  mask = g.op("Sigmoid", conv(g, f"{scope}.mask_conv", layer.mask_conv, x), name=f"{scope}.mask")
  kernel = _param(layer.kernel).transpose(3, 2, 0, 1)  # [Cout, Cin, 3, 3]
  channels, taps = kernel.shape[1], kernel.shape[2] * kernel.shape[3]
  groups = layer.mask_conv.out_features // taps
  pieces = _offset_group_blocks(parts or [(x, channels)], channels, groups)
  if pieces is None:
    pieces = [(x, 0, channels, 0, groups)]
  bias = g.const(f"{scope}.bias", _param(layer.bias))
  terms = []
  for i, (source, start, stop, first, count) in enumerate(pieces):
    suffix = "" if len(pieces) == 1 else f".part{i}"
    block_offset, block_mask = offset, mask
    if count != groups:  # this block's offset groups: their channels of the offset and mask maps
      block_offset = _channels(g, f"{scope}.offset{suffix}", offset, 2 * taps * first, 2 * taps * (first + count))
      block_mask = _channels(g, f"{scope}.mask{suffix}", mask, taps * first, taps * (first + count))
    terms.append(g.op(
        "DeformConv", source, g.const(f"{scope}.kernel{suffix}", kernel[:, start:stop]), block_offset,
        bias if i == 0 else "", block_mask, name=f"{scope}{suffix}", kernel_shape=list(kernel.shape[2:]),
        pads=[1, 1, 1, 1], offset_group=count))
  return terms[0] if len(terms) == 1 else g.op("Sum", *terms, name=f"{scope}.sum")


def _offset_group_blocks(parts, channels, groups):
  """[(part, first channel, end channel, first offset group, offset groups)] of ``parts``, or None if a part
  does not hold whole offset groups and does not lie inside one."""
  size, start, found = channels // groups, 0, []
  for name, width in parts:
    stop = start + width
    if start % size == 0 and width % size == 0:
      found.append((name, start, stop, start // size, width // size))
    elif start // size == (stop - 1) // size:
      found.append((name, start, stop, start // size, 1))
    else:
      return None
    start = stop
  return found


def _channels(g: Graph, name: str, x: str, start: int, stop: int) -> str:
  return g.op("Slice", x, g.ints(f"{name}.start", [start]), g.ints(f"{name}.stop", [stop]),
              g.ints(f"{name}.axis", [1]), name=name)


def pvb(g: Graph, scope: str, block: blocks.PVB, x: str) -> str:
  """`blocks.PVB` (Li et al. 2021, Sec. 3.2, eqs. 6–8)."""
  channels = block.dilated1.out_features
  # eq. 6: Feat_c = Concat(ReLU(Conv_d1), ReLU(Conv_d2), ReLU(Conv_d3), DeformConv)
  branches = [relu(g, f"{scope}.{name}", conv(g, f"{scope}.{name}", getattr(block, name), x))
              for name in ("dilated1", "dilated2", "dilated3")]
  branches.append(deform_conv(g, f"{scope}.deform", block.deform, x))
  feat_c = g.op("Concat", *branches, name=f"{scope}.feat_c", axis=1)
  # eq. 7: Feat_fused = DeformConv(Feat_c, W_f), one DeformConv per branch; eq. 8: Out = I + Feat_fused
  fused = deform_conv(g, f"{scope}.fuse", block.fuse, feat_c, [(b, channels) for b in branches])
  return g.op("Add", x, fused, name=f"{scope}.add")


def deformable_resblock(g: Graph, scope: str, block: blocks.DeformableResBlock, x: str) -> str:
  """`blocks.DeformableResBlock`, DR (Li et al. 2021, Sec. 3.3, eq. 9): Conv2D(ReLU(DeformConv(I))) + I."""
  y = relu(g, f"{scope}.deform", deform_conv(g, f"{scope}.deform", block.deform, x))
  return g.op("Add", x, conv(g, f"{scope}.conv", block.conv, y), name=f"{scope}.add")


# --- models/global_context.py -------------------------------------------------------------------------------


def _pooled_vectors(g: Graph, scope: str, x: str) -> list[str]:
  """Eq. 1 (GAP), ``ops.global_context.axis_pooled_vectors`` in NCHW: v_c [N, C], v_h [N, H], v_w [N, W]."""
  return [g.op("ReduceMean", x, g.ints(f"{scope}.{axis}_axes", axes), name=f"{scope}.v_{axis}", keepdims=0)
          for axis, axes in (("c", [2, 3]), ("h", [1, 3]), ("w", [1, 2]))]


def _cp_reconstruction(g: Graph, scope: str, frag_c: str, frag_h: str, frag_w: str, x: str) -> str:
  """Eq. 2, ``Σ_i v_ci ⊗ v_hi ⊗ v_wi`` of fragments ``[N, r, L]`` → ``[N, C, H, W]`` (``x``'s shape): the H⊗W
  outer product ``[N, r, H·W]`` and one matmul with ``v_c``, as ``ops.global_context.cp_reconstruction``."""
  spatial = g.op("Mul", g.op("Unsqueeze", frag_h, g.ints(f"{scope}.at3", [3]), name=f"{scope}.v_h_col"),
                 g.op("Unsqueeze", frag_w, g.ints(f"{scope}.at2", [2]), name=f"{scope}.v_w_row"),
                 name=f"{scope}.spatial")
  spatial = g.op("Reshape", spatial, g.ints(f"{scope}.rank_positions", [0, 0, -1]), name=f"{scope}.positions")
  frag_c = g.op("Transpose", frag_c, name=f"{scope}.v_c_t", perm=[0, 2, 1])
  raw = g.op("MatMul", frag_c, spatial, name=f"{scope}.cp")
  return g.op("Reshape", raw, g.op("Shape", x, name=f"{scope}.shape"), name=f"{scope}.gcrw_raw")


def lgcr(g: Graph, scope: str, block: global_context.LGCR, x: str) -> str:
  """`global_context.LGCR` (Li et al. 2021, Sec. 3.1, eqs. 1–5), ``ops.global_context`` in NCHW."""
  fragments = []
  for axis, vector in zip("chw", _pooled_vectors(g, scope, x)):
    # eq. 1: Conv1D (1 → r channels, zero padding 1) and PReLU, per axis
    kernel = _param(getattr(block, f"kernel_{axis}")).T[:, None, :]  # [r, 1, 3]
    slopes = _param(getattr(block, f"slopes_{axis}"))[:, None]  # [r, 1]: per rank, over the axis
    vector = g.op("Unsqueeze", vector, g.ints(f"{scope}.at1_{axis}", [1]), name=f"{scope}.v_{axis}_1")
    fragment = g.op("Conv", vector, g.const(f"{scope}.kernel_{axis}", kernel), name=f"{scope}.conv1d_{axis}",
                    kernel_shape=[3], pads=[1, 1])
    fragments.append(g.op("PRelu", fragment, g.const(f"{scope}.slopes_{axis}", slopes), name=f"{scope}.frag_{axis}"))
  # eq. 2: CP rank-r reconstruction
  raw = _cp_reconstruction(g, scope, *fragments, x)
  # eq. 3: softmax over all C·H·W values of each sample, or over the channels of each pixel
  if block.softmax_axes == "chw":
    flat = g.op("Reshape", raw, g.ints(f"{scope}.per_sample", [0, -1]), name=f"{scope}.flat")
    weight = g.op("Reshape", g.op("Softmax", flat, name=f"{scope}.softmax", axis=-1),
                  g.op("Shape", x, name=f"{scope}.shape"), name=f"{scope}.gcrw")
  else:
    weight = g.op("Softmax", raw, name=f"{scope}.gcrw", axis=1)
  # eq. 4: Rr = Conv3D(I, W_G) on the one-channel volume [N, 1, C, H, W]
  volume = g.op("Unsqueeze", x, g.ints(f"{scope}.at1", [1]), name=f"{scope}.volume")
  kernel_3d = _param(block.kernel_3d)[None, None]  # [1, 1, 3, 3, 3]: (channel, row, column) offsets
  residual = g.op("Conv", volume, g.const(f"{scope}.kernel_3d", kernel_3d), name=f"{scope}.conv3d",
                  kernel_shape=[3, 3, 3], pads=[1] * 6)
  residual = g.op("Squeeze", residual, g.ints(f"{scope}.axis1", [1]), name=f"{scope}.raw_residual")
  # eq. 5: Out = Rr ⊙ GCRW + I
  return g.op("Add", g.op("Mul", residual, weight, name=f"{scope}.refine"), x, name=f"{scope}.add")


def non_local(g: Graph, scope: str, block: global_context.NonLocal, x: str) -> str:
  """`global_context.NonLocal` (Wang et al. 2018, eqs. 1 and 6): ``x + W_z · softmax(θᵀφ) g``.

  The whole ``[N, HW, HW]`` attention matrix, as Wang et al. compute it (13 GB at the 720p bottleneck): ONNX
  has no loop-free form of the JAX module's blocks of queries, so large images go through in tiles.
  """
  def embed(name: str) -> str:
    kernel = _param(getattr(block, f"{name}_kernel")).T[:, :, None, None]
    y = g.op("Conv", x, g.const(f"{scope}.{name}_kernel", kernel),
             g.const(f"{scope}.{name}_bias", _param(getattr(block, f"{name}_bias"))), name=f"{scope}.{name}",
             kernel_shape=[1, 1])
    return g.op("Reshape", y, g.ints(f"{scope}.{name}_positions", [0, 0, -1]), name=f"{scope}.{name}_flat")

  theta, phi, values = embed("theta"), embed("phi"), embed("g")  # each [N, D, HW]
  queries = g.op("Transpose", theta, name=f"{scope}.queries", perm=[0, 2, 1])
  weights = g.op("Softmax", g.op("MatMul", queries, phi, name=f"{scope}.logits"), name=f"{scope}.attention",
                 axis=-1)
  y = g.op("MatMul", weights, g.op("Transpose", values, name=f"{scope}.values", perm=[0, 2, 1]),
           name=f"{scope}.y")  # [N, HW, D]
  z = g.op("Add", g.op("MatMul", y, g.const(f"{scope}.out_kernel", _param(block.out_kernel)), name=f"{scope}.w_z"),
           g.const(f"{scope}.out_bias", _param(block.out_bias)), name=f"{scope}.z")  # [N, HW, C]
  z = g.op("Reshape", g.op("Transpose", z, name=f"{scope}.z_t", perm=[0, 2, 1]),
           g.op("Shape", x, name=f"{scope}.shape"), name=f"{scope}.z_map")
  return g.op("Add", x, z, name=f"{scope}.add")


def tgm_trm(g: Graph, scope: str, block: global_context.TensorLowRank, x: str) -> str:
  """`global_context.TensorLowRank`, T+T: ``X ⊙ Σ_i λ_i σ(a_ci v_c) ⊗ σ(a_hi v_h) ⊗ σ(a_wi v_w)``."""
  fragments = []
  for axis, vector in zip("chw", _pooled_vectors(g, scope, x)):
    # TGM: sigmoid(a_i · v) → [N, r, L]
    vector = g.op("Unsqueeze", vector, g.ints(f"{scope}.at1_{axis}", [1]), name=f"{scope}.v_{axis}_1")
    scales = g.const(f"{scope}.scales_{axis}", _param(getattr(block, f"scales_{axis}"))[:, None])
    fragments.append(g.op("Sigmoid", g.op("Mul", vector, scales, name=f"{scope}.scaled_{axis}"),
                          name=f"{scope}.frag_{axis}"))
  # TRM: the λ-weighted rank-1 sum
  fragments[0] = g.op("Mul", fragments[0], g.const(f"{scope}.rank_weights", _param(block.rank_weights)[:, None]),
                      name=f"{scope}.weighted_c")
  attention = _cp_reconstruction(g, scope, *fragments, x)
  return g.op("Mul", x, attention, name=f"{scope}.out")


# --- models/simplenet.py ------------------------------------------------------------------------------------


def block(g: Graph, scope: str, module: nnx.Module, x: str) -> str:
  """Any module that can sit in a Stage's or the global-context slot (ablations put a ResBlock there)."""
  writers = [(blocks.ResBlock, resblock), (blocks.PVB, pvb), (blocks.DeformableResBlock, deformable_resblock),
             (global_context.LGCR, lgcr), (global_context.NonLocal, non_local),
             (global_context.TensorLowRank, tgm_trm)]
  if isinstance(module, global_context.Identity):
    return x
  for kind, write in writers:
    if isinstance(module, kind):
      return write(g, scope, module, x)
  raise ValueError(f"{scope} is a {type(module).__name__}, which has no ONNX form here.")


def stage(g: Graph, scope: str, module: simplenet.Stage, x: str) -> str:
  """`simplenet.Stage`: ResBlock → PVB (→ DR)."""
  x = block(g, f"{scope}.pvb", module.pvb, block(g, f"{scope}.resblock", module.resblock, x))
  return x if module.dr is None else block(g, f"{scope}.dr", module.dr, x)


def network(g: Graph, model: simplenet.SimpleNet, image: str) -> str:
  """`SimpleNet.__call__` on NCHW ``image`` (H, W multiples of 4): ``image + decode(lgcr(encode(image)))``."""
  skip1 = stage(g, "encoder1", model.encoder1, relu(g, "head", conv(g, "head", model.head, image)))
  skip2 = stage(g, "encoder2", model.encoder2, relu(g, "down1", conv(g, "down1", model.down1, skip1)))
  features = stage(g, "encoder3", model.encoder3, relu(g, "down2", conv(g, "down2", model.down2, skip2)))
  x = stage(g, "decoder3", model.decoder3, block(g, "lgcr", model.lgcr, features))
  x = g.op("Add", relu(g, "up2", up_conv(g, "up2", model.up2, x)), skip2, name="skip2")
  x = stage(g, "decoder2", model.decoder2, x)
  x = g.op("Add", relu(g, "up1", up_conv(g, "up1", model.up1, x)), skip1, name="skip1")
  x = stage(g, "decoder1", model.decoder1, x)
  x = conv(g, "tail", model.tail, x)
  if model.gate is not None:  # `SimpleNet.gate_logit` > 0 (`simplenet.is_blurred`), as [N, 1, 1, 1]
    energies = [g.op("Log", g.op("Add", g.op("ReduceMean", g.op("Mul", f, f, name=f"gate.{k}.square"),
                                             g.ints(f"gate.{k}.axes", [2, 3]), name=f"gate.{k}.mean", keepdims=0),
                                 g.const(f"gate.{k}.epsilon", simplenet.GATE_EPSILON), name=f"gate.{k}.add"),
                     name=f"gate.{k}.log") for k, f in enumerate((skip1, skip2, features))]
    logit = g.op("Gemm", g.op("Concat", *energies, name="gate.energies", axis=1),
                 g.const(GATE_KERNEL, _param(model.gate.kernel)), g.const(GATE_BIAS, _param(model.gate.bias)),
                 name="gate.linear")
    blurred = g.op("Greater", logit, g.const("gate.threshold", np.zeros(1)), name="gate.blurred")
    gate = g.op("Unsqueeze", g.op("Cast", blurred, name="gate.cast", to=TensorProto.FLOAT),
                g.ints("gate.hw", [2, 3]), name="gate")
    x = g.op("Mul", x, gate, name="gated")
  return g.op("Add", image, x, name="residual")


def pad_to_multiple(g: Graph, image: str) -> tuple[str, str]:
  """(``image`` [N, C, H, W] reflect-padded at the bottom and right up to multiples of `SIZE_MULTIPLE`, its
  [H, W]): the two stride-2 convs then round-trip, as `inference.pad_to_multiple` does it in JAX."""
  size = g.op("Shape", image, name="input_hw", start=2)  # [H, W]
  multiple = g.ints("size_multiple", [SIZE_MULTIPLE])
  # (m − size mod m) mod m: ONNX's integer Mod follows the divisor's sign, but positive operands need no rule
  pad = g.op("Mod", g.op("Sub", multiple, g.op("Mod", size, multiple, name="remainder"), name="shortfall"),
             multiple, name="pad_hw")
  pads = g.op("Concat", g.ints("no_pad", [0] * 6), pad, name="pads", axis=0)  # begins of N, C, H, W; ends
  return g.op("Pad", image, pads, name="padded", mode="reflect"), size


def simplenet_model(model: simplenet.SimpleNet) -> onnx.ModelProto:
  """The ONNX model of ``model`` at any batch and size: ``"blurred"`` [N, H, W, 3] → ``"sharp"``."""
  g = Graph()
  image = g.op("Transpose", INPUT, name="nchw", perm=[0, 3, 1, 2])
  padded, size = pad_to_multiple(g, image)
  sharp = network(g, model, padded)
  sharp = g.op("Slice", sharp, g.ints("crop_start", [0, 0]), size, g.ints("crop_axes", [2, 3]), name="crop")
  g.op("Transpose", sharp, name="nhwc", output=OUTPUT, perm=[0, 2, 3, 1])
  shape = ["N", "H", "W", 3]
  graph = helper.make_graph(g.nodes, "simplenet", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
                            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, shape)], g.initializers)
  return helper.make_model_gen_version(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                       producer_name="simplenet_jax")
