"""The accelerator programs lower here, with no GPU or TPU: `jax.export` for ("tpu",) and ("cuda",) of the paper
config's 720p forward, its training step (8 × 256², float32 and bfloat16) on a 4-device mesh and the
evaluation path (pad, network, uint8, PSNR/SSIM). TPU modules hold no float64 (TPUs have none), no program
holds a host callback, and the deformable convolutions are tiled on every platform (the tiles are loops).

All exports run in one subprocess with 4 forced CPU devices (the mesh needs them at trace time).
"""

import json
import os
import pathlib
import sys

import pytest

from tests.recorded import recorded_run
from tests.recorded import run_recorded

pytestmark = pytest.mark.slow  # the whole file starts processes or compiles the paper-size model

ROOT = pathlib.Path(__file__).resolve().parent.parent

EXPORT_SCRIPT = r"""
import functools, json, re, sys, time
sys.path.insert(0, {root!r})
import jax, jax.numpy as jnp
from jax import export
from flax import nnx
from configs import gopro
from simplenet_jax import inference, parallel, photos, train
from simplenet_jax.evaluation import scoring
from simplenet_jax.models import SimpleNet
from tests.recorded import recorded_run
from tests.recorded import run_recorded

config = gopro.get_config()
graphdef, params = nnx.split(nnx.eval_shape(lambda: SimpleNet.from_config(config.model, rngs=nnx.Rngs(0))))
mesh = parallel.make_mesh()
replicated, batched = parallel.replicated(mesh), parallel.batch_sharding(mesh)
tx = train.make_optimizer(config)
state = jax.eval_shape(lambda: train.create_train_state(config, tx)[1])
state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), state)
batch = {{k: jax.ShapeDtypeStruct((8, 256, 256, 3), jnp.uint8, sharding=batched) for k in ("blur", "sharp")}}
image = jax.ShapeDtypeStruct((1, 720, 1280, 3), jnp.float32)
image_u8 = jax.ShapeDtypeStruct((1, 720, 1280, 3), jnp.uint8)

def forward(p, x):
  return nnx.merge(graphdef, p)(x)

def train_step(dtype):
  return jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx, compute_dtype=dtype,
                                   learning_rate_fn=train.learning_rate_schedule(config)),
                 in_shardings=(replicated, batched), out_shardings=(replicated, replicated), donate_argnums=(0,))

def evaluation(p, blur, sharp):  # what evaluate_pairs runs per batch: pad, network, crop, uint8, scores
  output = photos.to_uint8(inference.at_any_size(functools.partial(forward, p))(blur))
  return output, scoring.batch_scores(photos.to_uint8(blur), output, sharp)

programs = {{
    "forward_720p": (jax.jit(forward), (params, image)),
    "train_step_float32": (train_step(jnp.float32), (state, batch)),
    "train_step_bfloat16": (train_step(jnp.bfloat16), (state, batch)),
    "evaluation_720p": (jax.jit(evaluation), (params, image, image_u8)),
}}
results = {{}}
for name, (fn, args) in programs.items():
  for platform in ("tpu", "cuda"):
    start = time.perf_counter()
    exported = export.export(fn, platforms=(platform,))(*args)
    text = exported.mlir_module()
    results[f"{{name}}/{{platform}}"] = {{
        "seconds": time.perf_counter() - start, "platforms": list(exported.platforms),
        "devices": exported.nr_devices, "f64": bool(re.search(r"\bf64\b", text)),
        "custom_calls": sorted(set(re.findall(r"custom_call @([\w.]+)", text))),
        "loops": text.count("stablehlo.while"), "bf16": "bf16" in text}}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def exported(build_once):
  env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  folder = build_once("lowered", lambda folder: run_recorded(
      folder, sys.executable, "-c", EXPORT_SCRIPT.format(root=str(ROOT)), env=env, timeout=900))
  out = recorded_run(folder)  # once per test run, whichever worker comes first
  assert out.returncode == 0, out.stderr[-5000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


PROGRAMS = ("forward_720p", "train_step_float32", "train_step_bfloat16", "evaluation_720p")


@pytest.mark.parametrize("platform", ("tpu", "cuda"))
@pytest.mark.parametrize("program", PROGRAMS)
def test_program_lowers_for_the_accelerator(exported, program, platform):
  result = exported[f"{program}/{platform}"]
  assert result["platforms"] == [platform]
  assert result["devices"] == (4 if program.startswith("train_step") else 1)
  # No host callbacks (jax.debug.print, pure_callback, io_callback) or other custom calls in any program.
  assert not [c for c in result["custom_calls"] if "callback" in c.lower() or "python" in c.lower()], result
  # The deformable convolutions run as tile loops on the accelerator too (15 in a forward pass).
  assert result["loops"] >= 15, result


@pytest.mark.parametrize("program", PROGRAMS)
def test_tpu_modules_hold_no_float64(exported, program):
  assert not exported[f"{program}/tpu"]["f64"]


def test_bfloat16_step_computes_in_bfloat16(exported):
  assert exported["train_step_bfloat16/tpu"]["bf16"] and not exported["train_step_float32/tpu"]["bf16"]
