"""simplenet_jax.export: each artifact equals the in-process network; the StableHLO one runs without the package,
the ONNX ones in onnxruntime."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from simplenet_jax import export
from simplenet_jax import inference

ROOT = pathlib.Path(__file__).resolve().parent.parent
SIZES = [(2, 20, 28), (1, 32, 32)]  # one not square, batch 2; one square

# A fresh process that knows only jax and numpy: loads the artifact, runs it at SIZES, saves the outputs.
_LOAD = """
import json, sys
sys.modules["simplenet_jax"] = None  # any import of the package now fails
import jax, numpy as np
exported = jax.export.deserialize(open(sys.argv[1], "rb").read())
inputs = np.load(sys.argv[2])
np.savez(sys.argv[3], **{k: np.asarray(exported.call(inputs[k])) for k in inputs.files})
print(json.dumps({"platforms": list(exported.platforms), "modules": sorted(m for m in sys.modules if m.startswith("simplenet_jax.")),
                  "input": str(exported.in_avals[0])}))
"""


def _run(*args, **kwargs):
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, check=False,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"}, **kwargs)


@pytest.fixture(scope="module")
def stablehlo(stablehlo_export):
  out, run = stablehlo_export
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith(f"wrote {out}: stablehlo, checkpoint step 4 (smoke") and "cpu, cuda, tpu" in run.stdout
  return out


@pytest.mark.slow
def test_stablehlo_equals_the_network_in_a_process_without_the_package(trained_workdir, stablehlo, tmp_path):
  rng = np.random.default_rng(0)
  inputs = {f"x{i}": rng.random((*size, 3), dtype=np.float32) for i, size in enumerate(SIZES)}
  np.savez(tmp_path / "inputs.npz", **inputs)
  run = _run("-c", _LOAD, str(stablehlo), str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"),
             cwd=tmp_path)  # not the repository: simplenet_jax is not importable from there
  assert run.returncode == 0, run.stderr
  facts = json.loads(run.stdout.splitlines()[-1])
  assert facts["modules"] == [] and facts["platforms"] == ["cpu", "cuda", "tpu"]
  assert facts["input"] == "float32[n,4*h,4*w,3]"
  _, network, _ = inference.load_model(trained_workdir)
  outputs = np.load(tmp_path / "outputs.npz")
  for key, image in inputs.items():
    expected = np.asarray(network(image))
    assert outputs[key].shape == image.shape
    assert np.abs(expected - image).max() > 1e-3  # the trained model changes the image: a real comparison
    np.testing.assert_allclose(outputs[key], expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_stablehlo_refuses_a_size_that_is_not_a_multiple_of_four(stablehlo):
  import jax  # pylint: disable=g-import-not-at-top
  exported = jax.export.deserialize(stablehlo.read_bytes())
  with pytest.raises(Exception, match="divisible by 4|multiple of 4|4\\*h"):
    exported.call(np.zeros((1, 21, 28, 3), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [
    ("folder", "error: --out {out} is a folder; pass a file name"),
    ("no_checkpoint", "error: workdir {workdir} has no checkpoint"),
    ("bad_step", "error: checkpoint '99' is not in"),
])
def test_bad_input_is_one_sentence(trained_workdir, tmp_path, case, message):
  out, workdir, extra = tmp_path / "model.stablehlo", trained_workdir, []
  if case == "folder":
    out = tmp_path
  elif case == "no_checkpoint":
    workdir = tmp_path / "empty"
    workdir.mkdir()
  else:
    extra = ["--checkpoint", "99"]
  run = _run("-m", "simplenet_jax.export", "--workdir", str(workdir), "--out", str(out), *extra, cwd=ROOT)
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
  assert run.stderr.startswith(message.format(out=out, workdir=workdir)) and len(run.stderr.splitlines()) == 1
  assert not (tmp_path / "model.stablehlo").exists()


def test_unknown_format_is_one_sentence(trained_workdir, tmp_path):
  with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of"):
    export.export_workdir(trained_workdir, tmp_path / "m", fmt="tflite")


# ONNX: one graph for every batch and size (onnx_graph; tests/test_onnx_graph.py checks every variant).
ONNX_SIZES = [(2, 20, 28), (1, 37, 45), (1, 33, 50)]  # batch 2; odd sizes, which the graph pads itself


@pytest.fixture(scope="module")
def onnx_model(onnx_export):
  out, run = onnx_export
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith(f"wrote {out}: onnx, checkpoint step 4 (smoke"), run.stdout
  assert ("for onnxruntime; input 'blurred' [N, H, W, 3] float32 in [0, 1], any H and W; onnxruntime matches"
          in run.stdout), run.stdout
  assert run.stderr.splitlines() == ["export: writing the ONNX graph",
                                     "export: checking the ONNX model in onnxruntime on a 45x61 image"], run.stderr
  return out


@pytest.mark.slow
def test_onnx_uses_deformconv_and_no_loop(onnx_model):
  import onnx  # pylint: disable=g-import-not-at-top
  ops = {node.op_type for node in onnx.load(onnx_model).graph.node}
  assert "DeformConv" in ops and "Loop" not in ops


@pytest.mark.slow
def test_onnx_equals_the_network_in_onnxruntime(trained_workdir, onnx_model):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  _, network, _ = inference.load_model(trained_workdir)
  network = inference.at_any_size(network)
  session = onnxruntime.InferenceSession(onnx_model.read_bytes(), providers=["CPUExecutionProvider"])
  assert [(i.name, i.shape) for i in session.get_inputs()] == [("blurred", ["N", "H", "W", 3])]
  rng = np.random.default_rng(1)
  for size in ONNX_SIZES:
    image = rng.random((*size, 3), dtype=np.float32)
    got = session.run(["sharp"], {"blurred": image})[0]
    expected = np.asarray(network(image))
    assert got.shape == image.shape
    assert np.abs(expected - image).max() > 1e-3  # the trained model changes the image: a real comparison
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_onnx_that_differs_from_the_network_is_not_written(trained_workdir, onnx_model, tmp_path, monkeypatch):
  """The export's own onnxruntime check: here the converter returns a model of other parameters."""
  import jax  # pylint: disable=g-import-not-at-top
  load_parameters = inference.load_parameters

  def other_parameters(*args, **kwargs):
    config, graphdef, params, step = load_parameters(*args, **kwargs)
    return config, graphdef, jax.tree.map(lambda p: p * 1.05, params), step

  monkeypatch.setattr(inference, "load_parameters", other_parameters)
  monkeypatch.setattr(export, "convert_onnx", lambda *args: onnx_model.read_bytes())
  out = tmp_path / "model.onnx"
  with pytest.raises(ValueError, match=r"^the ONNX model differs from the network by .* on a 45x61 image in "
                                       r"onnxruntime, so it was not written; export --format stablehlo"):
    export.export_workdir(trained_workdir, out, fmt="onnx")
  assert not out.exists()


def test_a_model_with_bounded_offsets_exports_at_any_size_with_the_same_results():
  """`configs/gopro_tpu.py`'s deformable convs clip their offsets and sample by matmuls, whose blocks need static
  sizes: loaded for inference and export, it samples by gathers (the same function), the ONNX graph with a
  Clip."""
  import jax  # pylint: disable=import-outside-toplevel
  import onnxruntime  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from configs import smoke  # pylint: disable=import-outside-toplevel
  from simplenet_jax.models import SimpleNet  # pylint: disable=import-outside-toplevel

  config = smoke.get_config()
  config.model.widths, config.model.dcn_max_offset, config.model.dcn_sampling = (4, 4, 8), 0.5, "matmul"
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(3))
  rng = np.random.default_rng(0)
  for _, module in nnx.iter_graph(model):  # offsets large enough for the bound to bite, a residual to see
    if isinstance(module, nnx.Conv):
      module.kernel[...] = jax.numpy.asarray(rng.normal(scale=0.1, size=module.kernel.shape), jax.numpy.float32)
  graphdef, params = nnx.split(model)
  image = rng.uniform(size=(1, 20, 28, 3)).astype(np.float32)
  want = np.asarray(jax.jit(lambda x: nnx.merge(graphdef, params)(x))(image))
  fields = inference.any_size_fields(config.model)
  assert (fields["dcn_sampling"], fields["dcn_tile_bytes"]) == ("gather", 1 << 20)
  any_size = nnx.split(nnx.eval_shape(lambda: SimpleNet.from_config(fields, rngs=nnx.Rngs(0))))[0]
  exported = export.export_stablehlo(any_size, params, platforms=("cpu",))
  np.testing.assert_allclose(np.asarray(exported.call(image)), want, atol=2e-5)
  session = onnxruntime.InferenceSession(export.convert_onnx(graphdef, params), providers=["CPUExecutionProvider"])
  got = session.run(None, {session.get_inputs()[0].name: image})[0]
  np.testing.assert_allclose(got, want, atol=2e-4)
  unbounded = smoke.get_config()
  unbounded.model.widths = config.model.widths
  free = SimpleNet.from_config(unbounded.model, rngs=nnx.Rngs(3))
  nnx.update(free, params)
  assert np.abs(np.asarray(free(image)) - want).max() > 1e-3  # the bound changed the result


def test_an_existing_file_is_kept_unless_overwrite(trained_workdir, tmp_path):
  out = tmp_path / "model.stablehlo"
  out.write_bytes(b"an earlier export")
  with pytest.raises(ValueError, match=r"^--out .*model.stablehlo exists; pass --overwrite to replace it, or another"):
    export.export_workdir(trained_workdir, out)
  assert out.read_bytes() == b"an earlier export"


@pytest.mark.slow
def test_onnx_check_holds_a_shut_gate_open(monkeypatch):
  """A gated network whose gate is shut on the check's image (as initialised: logit 0) gives that image back
  in onnxruntime and in JAX alike, whatever the other weights became: the check must see them with the gate
  held open. Here the converter writes every weight but the gate's 5% off."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from simplenet_jax.models import ModelConfig  # pylint: disable=g-import-not-at-top
  from simplenet_jax.models import SimpleNet  # pylint: disable=g-import-not-at-top
  graphdef, params = nnx.split(SimpleNet(ModelConfig((8, 12, 16), lgcr_rank=4, residual_gate=True,
                                                     zero_init_tail=False), rngs=nnx.Rngs(3)))
  artifact, deviation = export.export_onnx(graphdef, params)
  assert deviation <= export.ONNX_TOLERANCE
  gate = nnx.merge(graphdef, params).gate  # the check held a copy open, not the network it was given
  assert not np.any(np.asarray(gate.kernel[...])) and not np.any(np.asarray(gate.bias[...]))
  opened = export.onnx_graph_gate_opened(artifact)
  assert export.onnx_deviation(artifact, lambda x: x) == 0.0  # shut: the image itself
  assert export.onnx_deviation(opened, lambda x: x) > 1e-3  # open: the network's residual added
  convert = export.convert_onnx

  def off(graphdef, params):
    model = nnx.merge(graphdef, jax.tree.map(lambda p: p * 1.05, params))
    model.gate.kernel[...] = jax.numpy.zeros_like(model.gate.kernel[...])  # the gate as it was: shut
    model.gate.bias[...] = jax.numpy.zeros_like(model.gate.bias[...])
    return convert(*nnx.split(model))

  monkeypatch.setattr(export, "convert_onnx", off)
  with pytest.raises(ValueError, match=r"^the ONNX model differs from the network by"):
    export.export_onnx(graphdef, params)
