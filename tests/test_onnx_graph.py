"""simplenet_jax.onnx_graph: the ONNX graph, run in onnxruntime, equals the JAX network (the independent
reference) at odd sizes and batch 2, for every global-context slot, with every parameter randomised."""

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
import pytest
from flax import nnx

from simplenet_jax import inference
from simplenet_jax import onnx_graph
from simplenet_jax.models import ModelConfig
from simplenet_jax.models import SimpleNet
from simplenet_jax.models import blocks
from simplenet_jax.models.config import GLOBAL_CONTEXTS

pytestmark = pytest.mark.slow  # onnxruntime on every variant at several sizes: the whole suite's tier

SIZES = [(2, 20, 28), (1, 37, 45), (1, 33, 50)]  # batch 2; odd sizes, which the graph pads and crops itself
TOLERANCE = 1e-4  # export.ONNX_TOLERANCE
# Every variant the config allows in the slot: each global_context ("resblock" is Table 3's Baseline2);
# LGCR's per-pixel softmax; offset groups that the PVB fuse's per-branch DeformConvs must slice; the demo's gate.
VARIANTS = {kind: dict(global_context=kind) for kind in GLOBAL_CONTEXTS} | {
    "lgcr_softmax_c": dict(lgcr_softmax_axes="c"),
    "deform_groups_2": dict(deform_groups=2), "deform_groups_4": dict(deform_groups=4),
    "residual_gate": dict(residual_gate=True)}


def randomize(model: nnx.Module, seed: int = 0) -> None:
  """Every parameter random (fan-in normals, 1-D ones small), so that no layer hides behind a zero
  initialisation: offsets of about a pixel, masks away from 1/2, a tail that changes the image."""
  rng = np.random.default_rng(seed)
  for path, param in nnx.iter_graph(model):
    if isinstance(param, nnx.Param):
      value = np.asarray(param[...])
      if value.ndim >= 2:
        new = rng.normal(size=value.shape) / np.sqrt(np.prod(value.shape[:-1]))
      else:
        new = rng.normal(size=value.shape) * 0.1 + (0.25 if "slopes" in str(path[-1]) else 0.0)
      param[...] = jnp.asarray(new, value.dtype)


def model_and_session(variant: str):
  model = SimpleNet(ModelConfig((8, 12, 16), lgcr_rank=4, **VARIANTS[variant]), rngs=nnx.Rngs(0))
  randomize(model)
  if model.gate is not None:  # the first test batch's two images on either side of the gate's threshold
    logits = np.asarray(model.residual_and_gate(jnp.asarray(first_batch()))[1])[:, 0]
    model.gate.bias[...] -= logits.mean()
  proto = onnx_graph.simplenet_model(model)
  session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
  return model, proto, session


def first_batch() -> np.ndarray:
  """The first test batch, the one the gate's threshold is set on (its size a multiple of 4 already)."""
  return np.random.default_rng(1).random((*SIZES[0], 3), dtype=np.float32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_equals_the_network_in_onnxruntime(variant):
  model, _, session = model_and_session(variant)
  network = inference.at_any_size(jax.jit(lambda image: model(image)))
  rng = np.random.default_rng(1)
  for size in SIZES:
    image = rng.random((*size, 3), dtype=np.float32)
    got = session.run(["sharp"], {"blurred": image})[0]
    expected = np.asarray(network(image))
    assert got.shape == image.shape
    changed = np.abs(expected - image).max(axis=(1, 2, 3))
    if size == SIZES[0] and model.gate is not None:  # one image left exactly as it was, the other changed
      assert sorted(changed > 0) == [False, True], changed
    elif model.gate is None:
      assert changed.max() > 0.5  # every layer randomised: the network really transforms it
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE, err_msg=f"{variant} at {size}")


def test_the_graph_is_standard_onnx_at_any_size():
  model, proto, session = model_and_session("lgcr")
  onnx.checker.check_model(proto, full_check=True)
  assert [(o.domain, o.version) for o in proto.opset_import] == [("", onnx_graph.OPSET)]
  assert [(i.name, i.shape) for i in session.get_inputs()] == [("blurred", ["N", "H", "W", 3])]
  assert [(o.name, o.shape) for o in session.get_outputs()] == [("sharp", ["N", "H", "W", 3])]
  ops = [node.op_type for node in proto.graph.node]
  assert "Loop" not in ops and "Scan" not in ops and "If" not in ops
  # One ONNX DeformConv (the PVB fuse: one per branch) for each deformable convolution of the model.
  layers = {".".join(map(str, path)) for path, node in nnx.iter_graph(model) if isinstance(node, blocks.DeformConv)}
  deform = [node for node in proto.graph.node if node.op_type == "DeformConv"]
  assert {node.name.split(".part")[0] for node in deform} == layers and len(layers) == 15
  assert len(deform) == len(layers) + 6 * 3  # six PVB fuses in four parts each
  (pad,) = [node for node in proto.graph.node if node.op_type == "Pad"]
  assert onnx.helper.get_node_attr_value(pad, "mode") == b"reflect"


@pytest.mark.parametrize("variant", ["lgcr", "lgcr_softmax_c", "nonlocal", "tgm_trm"])
def test_each_global_context_block_alone_equals_its_module(variant):
  """The slot's block on a random feature map: in the whole network its change is small beside the rest
  (LGCR's softmax spreads over C·H·W values), so each block is also compared alone, on its own change."""
  model = SimpleNet(ModelConfig((8, 12, 16), lgcr_rank=4, **VARIANTS[variant]), rngs=nnx.Rngs(0))
  randomize(model)
  g = onnx_graph.Graph()
  onnx_graph.block(g, "lgcr", model.lgcr, "x")
  shape = ["N", "C", "H", "W"]
  graph = onnx.helper.make_graph(
      g.nodes, "slot", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
      [onnx.helper.make_tensor_value_info(g.nodes[-1].output[0], onnx.TensorProto.FLOAT, shape)], g.initializers)
  proto = onnx.helper.make_model_gen_version(graph, opset_imports=[onnx.helper.make_opsetid("", onnx_graph.OPSET)])
  session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
  x = np.random.default_rng(2).normal(size=(2, 7, 9, 16)).astype(np.float32)  # NHWC, C = the 1/4-scale width
  got = session.run(None, {"x": x.transpose(0, 3, 1, 2)})[0].transpose(0, 2, 3, 1)
  expected = np.asarray(model.lgcr(x))
  change = np.abs(expected - x).max()
  assert change > 1e-3
  np.testing.assert_allclose(got - x, expected - x, rtol=0, atol=1e-4 * change)
