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
def stablehlo(trained_workdir, tmp_path_factory):
  out = tmp_path_factory.mktemp("export") / "simplenet.stablehlo"
  run = _run("-m", "simplenet_jax.export", "--workdir", str(trained_workdir), "--out", str(out), cwd=ROOT)
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
    ("size_with_stablehlo", "error: --size is for --format onnx; the StableHLO artifact takes every size."),
    ("size_not_multiple", "error: --size 30x28 must be at least 16 and a multiple of 4 on each side (the "
                          "network's two downsamplings), e.g. 32x28."),
    ("size_garbage", "error: --size 'big' is not HEIGHTxWIDTH in pixels, e.g. --size 720x1280."),
])
def test_bad_input_is_one_sentence(trained_workdir, tmp_path, case, message):
  out, workdir, extra = tmp_path / "model.stablehlo", trained_workdir, []
  if case == "folder":
    out = tmp_path
  elif case == "no_checkpoint":
    workdir = tmp_path / "empty"
    workdir.mkdir()
  elif case == "size_with_stablehlo":
    extra = ["--size", "32x32"]
  elif case.startswith("size_"):
    extra = ["--format", "onnx", "--size", "30x28" if case == "size_not_multiple" else "big"]
  else:
    extra = ["--checkpoint", "99"]
  run = _run("-m", "simplenet_jax.export", "--workdir", str(workdir), "--out", str(out), *extra, cwd=ROOT)
  assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
  assert run.stderr.startswith(message.format(out=out, workdir=workdir)) and len(run.stderr.splitlines()) == 1
  assert not (tmp_path / "model.stablehlo").exists()


def test_unknown_format_is_one_sentence(trained_workdir, tmp_path):
  with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of"):
    export.export_workdir(trained_workdir, tmp_path / "m", fmt="tflite")


# ONNX: one artifact per size (jax2onnx converts a fixed H×W, export.py's docstring says why), batch symbolic.
ONNX_SIZES = {"20x28": (2, 20, 28), "32x32": (1, 32, 32)}


@pytest.fixture(scope="module")
def onnx_models(trained_workdir, tmp_path_factory):
  """{size: path} of the two ONNX exports; the first through the command line, the second in process."""
  folder = tmp_path_factory.mktemp("onnx")
  first, second = ONNX_SIZES
  run = _run("-m", "simplenet_jax.export", "--workdir", str(trained_workdir), "--out", str(folder / f"{first}.onnx"),
             "--format", "onnx", "--size", first, cwd=ROOT)
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith(f"wrote {folder / first}.onnx: onnx, checkpoint step 4 (smoke"), run.stdout
  assert "for onnxruntime; input 'blurred' [N, 20, 28, 3] float32 in [0, 1]; onnxruntime matches" in run.stdout
  with pytest.MonkeyPatch.context() as patch:  # its DCNs in many tiles: the ONNX Loop path
    patch.setattr(inference, "load_parameters", _with_tiles(inference.load_parameters, TILE_BYTES))
    written = export.export_workdir(trained_workdir, folder / f"{second}.onnx", fmt="onnx", size=second)
  assert 0 <= written["deviation"] <= export.ONNX_TOLERANCE
  return {size: folder / f"{size}.onnx" for size in ONNX_SIZES}


TILE_BYTES = 1 << 13  # a few output rows per tile in the smoke model's 32×32 deformable convolutions


def _with_tiles(load_parameters, tile_bytes):
  """`inference.load_parameters` whose network tiles every DCN by `tile_bytes` (the same parameters)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from simplenet_jax.models import SimpleNet  # pylint: disable=g-import-not-at-top

  def load(*args, **kwargs):
    config, _, params, step = load_parameters(*args, **kwargs)
    config.model.dcn_tile_bytes = tile_bytes
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0))))
    return config, graphdef, params, step

  return load


@pytest.mark.slow
def test_onnx_keeps_the_dcn_tiles_as_loops(onnx_models):
  import onnx  # pylint: disable=g-import-not-at-top
  loops = {size: [n for n in onnx.load(path).graph.node if n.op_type == "Loop"] for size, path in onnx_models.items()}
  assert not loops["20x28"]  # the workdir's budget: one tile at this size
  assert loops["32x32"] and all(n.input[0] for n in loops["32x32"])  # each Loop has its trip count


@pytest.mark.slow
def test_onnx_equals_the_network_in_onnxruntime(trained_workdir, onnx_models):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  _, network, _ = inference.load_model(trained_workdir)
  rng = np.random.default_rng(1)
  for size, path in onnx_models.items():
    session = onnxruntime.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("blurred", ["b", *ONNX_SIZES[size][1:], 3])]
    image = rng.random((*ONNX_SIZES[size], 3), dtype=np.float32)
    got = session.run(["sharp"], {"blurred": image})[0]
    expected = np.asarray(network(image))
    assert got.shape == image.shape
    assert np.abs(expected - image).max() > 1e-3  # the trained model changes the image: a real comparison
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_onnx_that_differs_from_the_network_is_not_written(trained_workdir, onnx_models, tmp_path, monkeypatch):
  """The export's own onnxruntime check: here the converter returns a model of other parameters."""
  import jax  # pylint: disable=g-import-not-at-top
  load_parameters = inference.load_parameters

  def other_parameters(*args, **kwargs):
    config, graphdef, params, step = load_parameters(*args, **kwargs)
    return config, graphdef, jax.tree.map(lambda p: p * 1.05, params), step

  monkeypatch.setattr(inference, "load_parameters", other_parameters)
  monkeypatch.setattr(export, "convert_onnx", lambda *args: onnx_models["32x32"].read_bytes())
  out = tmp_path / "model.onnx"
  with pytest.raises(ValueError, match=r"^the ONNX model differs from the network by .* on a 32x32 image in "
                                       r"onnxruntime, so it was not written; export --format stablehlo"):
    export.export_workdir(trained_workdir, out, fmt="onnx", size="32x32")
  assert not out.exists()
