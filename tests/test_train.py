"""Training: end to end on tiny data, overfitting, exact resume, the schedule, sharding, bad runs."""

import functools
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.ndimage
import skimage.data
from flax import nnx

from configs import smoke
from simplenet_jax import checkpointing
from simplenet_jax import parallel
from simplenet_jax import train
from simplenet_jax.models import SimpleNet

ROOT = pathlib.Path(__file__).resolve().parent.parent


# For tests of how training runs (sharding, several processes, resuming, skipped steps, another optimizer),
# not of the layers: ResBlocks in the PVB and DR places. Such a model compiles in a fraction of the time, in
# each process (tests/test_deform_conv.py and test_blocks.py test the deformable layers, sharded too).
LIGHT_MODEL = {"model.use_pvb": False, "model.use_dr": False}


def smoke_config(data_root, **overrides):
  config = smoke.get_config()
  config.data.root = str(data_root)
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def saved_state(workdir, config, step=None):
  """The `TrainState` of a checkpoint in `workdir` (default: the latest)."""
  manager = checkpointing.create_manager(workdir, config.keep_checkpoints, read_only=True)
  _, state = train.create_train_state(config, train.make_optimizer(config))
  step = manager.latest_step() if step is None else step
  return checkpointing.restore(manager, step, checkpointing.abstract_like(state), None)


def params_of(workdir, config):
  """The parameters of the latest checkpoint in `workdir`, as numpy leaves."""
  return [np.asarray(leaf) for leaf in jax.tree.leaves(saved_state(workdir, config).params)]


@pytest.mark.slow
def test_end_to_end_writes_checkpoints_events_and_evaluates(data_root, tmp_path):
  config = smoke_config(data_root, deterministic=True)  # the GPU option compiles (and is ignored) on CPU
  result = train.train_and_evaluate(config, tmp_path)
  assert result["step"] == config.num_train_steps
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] == 6 and len(steps) <= config.keep_checkpoints + 1
  assert list(tmp_path.glob("events.out.tfevents.*")), "no TensorBoard events written"
  assert {"psnr", "input_psnr", "ssim_matlab", "ssim_python"} <= set(result["eval"])
  assert np.isfinite(result["train"]["loss"])


@pytest.mark.slow
def test_periodic_evaluations_open_the_test_split_once_and_read_no_image_headers(data_root, tmp_path, monkeypatch):
  from simplenet_jax.data import catalogue  # pylint: disable=g-import-not-at-top
  from simplenet_jax.data import images  # pylint: disable=g-import-not-at-top
  from simplenet_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  opened, headers, evals = [], [], []
  open_split, eval_iter = catalogue.open_split, pipeline.eval_iter
  monkeypatch.setattr(catalogue, "open_split", lambda data, split: opened.append(split) or open_split(data, split))
  monkeypatch.setattr(pipeline, "eval_iter", lambda *a, **k: evals.append(1) or eval_iter(*a, **k))
  monkeypatch.setattr(images, "inspect_image", lambda *a, **k: headers.append(a))
  train.train_and_evaluate(smoke_config(data_root, eval_every_steps=2), tmp_path)
  assert len(evals) == 3 and sorted(opened) == ["test", "train"] and not headers


@pytest.mark.slow
def test_loss_decreases_on_a_fixed_batch(data_root):
  """Overfit check: a few dozen steps on one batch cut the L1 loss substantially."""
  # A random tail (not the default identity start), so the first loss is far from what the net can reach.
  config = smoke_config(data_root, learning_rate=2e-3, **{"model.zero_init_tail": False})
  tx = train.make_optimizer(config)
  graphdef, state = train.create_train_state(config, tx)
  sharp = (skimage.data.astronaut()[:64, 100:164] / 255.0).astype(np.float32).reshape(
      4, 16, 64, 3)[:, :, :16]  # four 16×16 crops of a photo
  batch = {"sharp": jnp.asarray(sharp),
           "blur": jnp.asarray(scipy.ndimage.uniform_filter(sharp, size=(1, 1, 5, 1)))}
  step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx,
                                   learning_rate_fn=train.learning_rate_schedule(config),
                                   compute_dtype=jnp.float32))
  losses = []
  for _ in range(40):
    state, metrics = step(state, batch)
    losses.append(float(metrics.compute()["loss"]))
  assert losses[-1] < 0.5 * losses[0] and losses[-1] < min(losses[:10]), losses


@pytest.mark.slow
def test_resume_is_exact(data_root, tmp_path):
  """4 steps straight == 2, stop, resume to 4 == a kill between checkpoints, resume to 4 (bit for bit)."""
  config = smoke_config(data_root, num_train_steps=4, eval_every_steps=100, **LIGHT_MODEL)
  train.train_and_evaluate(config, tmp_path / "straight")

  half = smoke_config(data_root, num_train_steps=2, eval_every_steps=100, **LIGHT_MODEL)
  train.train_and_evaluate(half, tmp_path / "resumed")
  train.train_and_evaluate(config, tmp_path / "resumed")

  calls = {"n": 0}
  real_global_batch = parallel.global_batch

  def dies_at_step_3(batch, mesh):  # like kill -9 once the checkpoint of step 2 is complete on disk
    calls["n"] += 1
    if calls["n"] == 3:
      deadline = time.time() + 60
      while not (tmp_path / "killed" / "checkpoints" / "2").exists() and time.time() < deadline:
        time.sleep(0.1)
      raise SystemExit("killed")
    return real_global_batch(batch, mesh)

  parallel.global_batch = dies_at_step_3
  try:
    with pytest.raises(SystemExit):
      train.train_and_evaluate(config, tmp_path / "killed")
  finally:
    parallel.global_batch = real_global_batch
  assert checkpointing.create_manager(tmp_path / "killed", 3, read_only=True).latest_step() == 2
  train.train_and_evaluate(config, tmp_path / "killed")

  straight = params_of(tmp_path / "straight", config)
  for name in ("resumed", "killed"):
    for a, b in zip(straight, params_of(tmp_path / name, config)):
      np.testing.assert_array_equal(a, b, err_msg=name)


def test_learning_rate_schedule_follows_the_formula():
  config = smoke.get_config()
  config.learning_rate, config.lr_decay_steps, config.lr_decay_rate = 1e-4, 630_000, 0.1 ** 0.5
  schedule = train.learning_rate_schedule(config)
  for step in (0, 629_999, 630_000, 1_260_000, 2_199_999):
    expected = 1e-4 * (0.1 ** 0.5) ** (step // 630_000)
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step
  assert float(schedule(1_260_000)) == pytest.approx(1e-5, rel=1e-6)


@pytest.mark.slow
def test_incompatible_checkpoint_is_refused_without_overwriting(data_root, workdir_copy):
  before = sorted(p.name for p in (workdir_copy / "checkpoints").iterdir())
  with pytest.raises(checkpointing.CheckpointMismatchError) as info:
    train.train_and_evaluate(smoke_config(data_root, **{"model.widths": (8, 8, 8)}), workdir_copy)
  assert str(info.value) == (
      f"workdir {workdir_copy} holds a checkpoint of a different model (widths: [4, 4, 4] in the checkpoint vs "
      "[8, 8, 8] now); use a new --workdir, or the config it was trained with.")
  assert sorted(p.name for p in (workdir_copy / "checkpoints").iterdir()) == before
  # How the network is computed (DCN tiles, remat) is no part of the model: such a checkpoint resumes.
  result = train.train_and_evaluate(smoke_config(data_root, num_train_steps=5, eval_every_steps=100,
                                                 **{"model.dcn_tile_bytes": 0, "model.remat": True}), workdir_copy)
  assert result["step"] == 5


def poison_batches(monkeypatch, bad_steps):
  """Training reads float32 batches (one compiled step) whose blurred input is NaN at the given 1-based steps."""
  real, steps = train.pipeline.train_dataset, iter(range(1, 10**6))

  def poisoned(batch):
    batch = {key: image.astype(np.float32) / 255 for key, image in batch.items()}
    if next(steps) in bad_steps:
      batch["blur"][:] = np.nan
    return batch

  monkeypatch.setattr(train.pipeline, "train_dataset", lambda *args, **kwargs: real(*args, **kwargs).map(poisoned))


@pytest.mark.slow
def test_an_isolated_non_finite_step_is_skipped_and_counted(data_root, tmp_path, monkeypatch):
  poison_batches(monkeypatch, {3})
  config = smoke_config(data_root, num_train_steps=5, checkpoint_every_steps=1, keep_checkpoints=10,
                        log_every_steps=1, eval_every_steps=100, **LIGHT_MODEL)
  result = train.train_and_evaluate(config, tmp_path)
  assert result["step"] == 5 and result["train"]["nonfinite_total"] == 1
  assert np.isfinite(result["train"]["loss"])
  before, skipped, after = (saved_state(tmp_path, config, step) for step in (2, 3, 4))
  # Step 3 changed neither the parameters nor Adam's moments; step 4 trained again.
  for a, b in zip(jax.tree.leaves((before.params, before.opt_state)), jax.tree.leaves((skipped.params,
                                                                                      skipped.opt_state))):
    if np.asarray(a).dtype.kind == "f":
      np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(skipped.params),
                                                      jax.tree.leaves(after.params)))
  assert int(skipped.opt_state.total_notfinite) == 1 and int(after.opt_state.notfinite_count) == 0


@pytest.mark.slow
def test_a_streak_of_non_finite_steps_stops_with_a_clear_message_and_keeps_good_checkpoints(
    data_root, tmp_path, monkeypatch):
  poison_batches(monkeypatch, {3, 5, 6, 7})  # an isolated one, then a streak ending inside a log window
  config = smoke_config(data_root, num_train_steps=12, checkpoint_every_steps=2, keep_checkpoints=10,
                        log_every_steps=2, eval_every_steps=100, max_consecutive_nonfinite=3, **LIGHT_MODEL)
  with pytest.raises(train.NonFiniteError) as info:
    train.train_and_evaluate(config, tmp_path)
  message = str(info.value)
  assert message.startswith("training stopped at step 8: the loss or a gradient became NaN or infinite in 3 "
                            "consecutive steps (config.max_consecutive_nonfinite = 3); the last good checkpoint "
                            "(step 6) is intact in ")
  assert message.endswith("Lower --config.learning_rate or set --config.grad_clip_norm.")
  manager = checkpointing.create_manager(tmp_path, 10, read_only=True)
  assert manager.all_steps() == [2, 4, 6]
  for step in manager.all_steps():
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(saved_state(tmp_path, config, step).params))


@pytest.mark.slow
@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "config.batch_size must be a positive integer, got 0."),
    ("compute_dtype", "float16", "config.compute_dtype must be one of ['bfloat16', 'float32']"),
    ("lr_decay_rate", 1.5, "config.lr_decay_rate must be in (0, 1], got 1.5."),
    ("adam_eps", 0.0, "config.adam_eps must be in (0, 1), got 0.0."),
    ("model.dcn_tile_bytes", -1, "config.model.dcn_tile_bytes must be a non-negative int (0 = one tile), got -1."),
    ("matmul_precision", "fp32", "config.matmul_precision must be one of ['default', 'high', 'highest']"),
])
def test_bad_training_config_is_one_sentence(data_root, tmp_path, field, value, message):
  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(smoke_config(data_root, **{field: value}), tmp_path)
  assert message in str(info.value)
  assert not (tmp_path / "checkpoints").exists()


def test_adam_eps_is_the_one_optax_uses(data_root):
  """One step from a zero gradient in all but one leaf: Adam's update is lr·m̂ / (√v̂ + ε), so a large ε
  shrinks the first step by a factor that a formula predicts."""
  steps = {}
  for eps in (1e-8, 1e-2):
    config = smoke_config(data_root, adam_eps=eps)
    tx = train.make_optimizer(config)
    params = {"w": jnp.zeros((3,))}
    updates, _ = tx.update({"w": jnp.full((3,), 0.1)}, tx.init(params), params)
    steps[eps] = float(updates["w"][0])
  lr = smoke_config(data_root).learning_rate
  # first step: m̂ = g, v̂ = g², so the update is −lr·g / (|g| + ε)
  assert steps[1e-8] == pytest.approx(-lr * 0.1 / (0.1 + 1e-8), rel=1e-5)
  assert steps[1e-2] == pytest.approx(-lr * 0.1 / (0.1 + 1e-2), rel=1e-5)


@pytest.mark.slow
def test_train_psnr_of_an_exact_prediction_is_finite(data_root):
  """The untrained network is the identity (zero tail), so a pair with sharp == blur has MSE 0."""
  config = smoke_config(data_root)
  tx = train.make_optimizer(config)
  graphdef, state = train.create_train_state(config, tx)
  image = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx, compute_dtype=jnp.float32,
                                   learning_rate_fn=train.learning_rate_schedule(config)))
  _, metrics = step(state, {"blur": image, "sharp": image})
  assert float(metrics.compute()["psnr"]) == pytest.approx(100.0)


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--config", "configs/nope.py"],
     "error: config file configs/nope.py does not exist; pass one of the files in configs/, e.g. --config "
     "configs/gopro.py."),
    (["--config=configs/smoke.py", "--config.no_such_field=3"],
     "error: --config.no_such_field: the config configs/smoke.py has no field 'no_such_field'; did you mean "),
    (["--config", "configs/smoke.py", "--config.data.num_worker=0"],
     "error: --config.data.num_worker: the config configs/smoke.py has no field 'data.num_worker'; did you mean "
     "--config.data.num_workers?"),
])
def test_first_contact_command_line_mistakes_are_one_sentence(tmp_path, args, message):
  done = subprocess.run([sys.executable, "train.py", *args, "--workdir", str(tmp_path / "w")], cwd=ROOT,
                        capture_output=True, text=True, timeout=300, check=False)
  assert done.returncode == 1 and "Traceback" not in done.stderr
  assert done.stderr.strip().splitlines()[-1].startswith(message)
  assert not (tmp_path / "w").exists()


def test_a_good_command_line_passes_the_check():
  from simplenet_jax import config_files  # pylint: disable=g-import-not-at-top
  argv = ["train.py", "--config", str(ROOT / "configs/smoke.py"), "--workdir", "w", "--config.model.widths=(4,4,4)",
          "--config.data.hflip=False", "--noconfig.data.vflip"]
  assert config_files.command_line_error(argv) is None


@pytest.mark.slow
def test_bfloat16_train_step_keeps_the_image_and_the_residual_add_float32(data_root):
  """The batch's sharp image is the float32 model's own prediction, so the float32 loss is ~0 and the bf16
  loss is the mean bf16 error. The tail is scaled so that the residual is ~0.02 (a trained model's is
  small too): bf16 rounds it by ~1e-4, while a bf16 image or add would round the output by ~6e-4 on
  average (the bound fails by 2× then)."""
  config = smoke_config(data_root, **{"model.zero_init_tail": False})
  tx = train.make_optimizer(config)
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(0))
  model.tail.kernel[...] = model.tail.kernel[...] * 0.02
  graphdef, params = nnx.split(model)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  blur = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 16, 16, 3)), jnp.float32)
  batch = {"blur": blur, "sharp": jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))(params, blur)}
  assert float(jnp.abs(batch["sharp"] - blur).max()) > 0.005  # the network changes the image
  losses = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx, compute_dtype=dtype,
                                     learning_rate_fn=train.learning_rate_schedule(config)))
    _, metrics = step(state, batch)
    losses[dtype] = float(metrics.compute()["loss"])
  assert losses[jnp.float32] < 1e-6
  assert 1e-6 < losses[jnp.bfloat16] < 3e-4, losses


SHARDING_SCRIPT = """
import json, sys, functools
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {root!r})
from configs import smoke
from simplenet_jax import parallel, train
config = smoke.get_config()
config.model.use_pvb = config.model.use_dr = False  # LIGHT_MODEL
tx = train.make_optimizer(config)
graphdef, state = train.create_train_state(config, tx)
rng = np.random.default_rng(0)
batch = {{k: rng.uniform(size=(4, 16, 16, 3)).astype(np.float32) for k in ("blur", "sharp")}}
losses = {{}}
for n in (1, 4):
  mesh = parallel.make_mesh(jax.devices()[:n])
  rep = parallel.replicated(mesh)
  step = jax.jit(functools.partial(train.train_step, graphdef=graphdef, tx=tx, compute_dtype=jnp.float32,
                                   learning_rate_fn=train.learning_rate_schedule(config)),
                 in_shardings=(rep, parallel.batch_sharding(mesh)), out_shardings=(rep, rep))
  s = jax.device_put(state, rep)
  for _ in range(2):
    s, metrics = step(s, parallel.global_batch(batch, mesh))
  losses[n] = float(metrics.compute()["loss"])
try:
  parallel.check_batch_size(6, parallel.make_mesh())
  error = None
except ValueError as e:
  error = str(e)
rounded = [parallel.round_up_batch_size(b, parallel.make_mesh()) for b in (1, 4, 6, 8)]
print(json.dumps({{"devices": jax.device_count(), "losses": losses, "error": error, "rounded": rounded}}))
"""


@pytest.mark.slow
def test_four_cpu_devices_match_one_device():
  env = {**os.environ, "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", SHARDING_SCRIPT.format(root=str(ROOT))], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  assert result["losses"]["4"] == pytest.approx(result["losses"]["1"], abs=1e-5)
  assert result["error"] == ("config.batch_size=6 must be a positive multiple of the 4 devices of the mesh; "
                             "use e.g. --config.batch_size=8.")
  assert result["rounded"] == [4, 4, 8, 8]  # round_up_batch_size: the next multiple of the 4 devices


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_progress_eta_reads_in_days_past_24_hours(caplog):
  """clu's progress note: at 1 step/s with 108,000 steps left the ETA is 1 day 6 hours (a clock format
  that wraps at 24 h would read 06:00:00)."""
  config = smoke_config("unused", num_train_steps=110_000)
  report = train.progress_reporter(config, writer=None)
  train.quiet_library_logs()
  with caplog.at_level("INFO"):
    report(1000, t=0.0)  # the first call only starts the clock
    assert report(2000, t=1000.0)
  notes = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
  assert notes and "1.0 steps/s" in notes[-1] and "ETA: 1d6h0m" in notes[-1], notes


TWO_PROCESS_SCRIPT = """
import json, logging, sys
sys.path.insert(0, {root!r})
from configs import smoke
from simplenet_jax import parallel, train
logging.basicConfig()
config = smoke.get_config()
config.model.use_pvb = config.model.use_dr = False  # LIGHT_MODEL
config.data.root = {data!r}
config.num_train_steps = int(sys.argv[2])
config.log_every_steps = config.checkpoint_every_steps = config.eval_every_steps = 10_000
config.distributed.enabled = True
config.distributed.coordinator_address = {address!r}
config.distributed.num_processes = 2
config.distributed.process_id = int(sys.argv[1])
parallel.initialize_distributed(config.distributed)
reporter = train.progress_reporter


def announcing(config, writer):  # tells the test that training runs (and at which step)
  report = reporter(config, writer)

  def call(step):
    print(f"step {{step}}", flush=True)
    return report(step)
  return call


train.progress_reporter = announcing
logging.getLogger().setLevel(logging.INFO)  # for the "resuming" line
result = train.train_and_evaluate(config, {workdir!r})
import jax
print(json.dumps({{"process": jax.process_index(), "count": jax.process_count(), "step": result["step"],
                  "loss": result["train"].get("loss")}}), flush=True)
"""


@pytest.mark.slow
def test_two_processes_stop_together_on_sigterm_resume_and_match_one_process(data_root, tmp_path):
  """jax.distributed over gloo, each process feeding half of the batch. Only process 0 is preempted; JAX's
  preemption service makes both save the same step and stop (a flag of its own would leave process 0 in
  orbax's save barrier and process 1 in the next step's all-reduce). The same command resumes both; their
  loss is the one of a single process trained as far; the checkpoint the two wrote restores in one process.
  (One test for all of it: each start of two processes costs a compile in each.)"""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  workdir = tmp_path / "two"

  def start(num_train_steps):
    script = TWO_PROCESS_SCRIPT.format(root=str(ROOT), data=str(data_root), workdir=str(workdir),
                                       address=f"localhost:{_free_port()}")
    return [subprocess.Popen([sys.executable, "-u", "-c", script, str(i), str(num_train_steps)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]

  def finish(procs):
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, stderr) in zip(procs, outs):
      assert p.returncode == 0, stderr[-3000:]
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outs], [err for _, err in outs]

  procs = start(100_000)
  try:
    for line in procs[0].stdout:  # wait until training runs
      if line.startswith("step 3"):
        break
    procs[0].send_signal(signal.SIGTERM)
    stopped, errs = finish(procs)
  finally:
    for p in procs:
      p.kill()
  assert sorted(r["process"] for r in stopped) == [0, 1] and all(r["count"] == 2 for r in stopped)
  step = stopped[0]["step"]
  assert stopped[1]["step"] == step and 3 < step < 100_000
  assert all("stopped at step %d; the checkpoint is saved" % step in err for err in errs), errs[1][-2000:]
  assert checkpointing.create_manager(workdir, 3, read_only=True).all_steps() == [step]

  resumed, errs = finish(start(step + 2))  # the same command resumes
  assert [r["step"] for r in resumed] == [step + 2] * 2
  assert all(f"resuming from the checkpoint of step {step}" in err for err in errs), errs[1][-2000:]
  assert resumed[0]["loss"] == pytest.approx(resumed[1]["loss"], abs=1e-6)

  # One process, the whole batch, straight to the same step; its last log window is the same two steps.
  single = train.train_and_evaluate(
      smoke_config(data_root, num_train_steps=step + 2, log_every_steps=step, checkpoint_every_steps=10_000,
                   eval_every_steps=10_000, **LIGHT_MODEL), tmp_path / "one")
  assert resumed[0]["loss"] == pytest.approx(single["train"]["loss"], abs=1e-5)

  # The two-process checkpoint restores in this (single) process and training continues from it.
  result = train.train_and_evaluate(smoke_config(data_root, num_train_steps=step + 3, eval_every_steps=10_000,
                                                 **LIGHT_MODEL), workdir)
  assert result["step"] == step + 3


@pytest.mark.slow
def test_a_checkpoint_of_another_optimizer_structure_is_one_sentence(data_root, tmp_path, monkeypatch):
  """An earlier version's workdir (Adam without `apply_if_finite`, say) cannot resume: one sentence, not
  orbax's tree diff; its parameters still evaluate."""
  default = train.make_optimizer
  monkeypatch.setattr(train, "make_optimizer", lambda config: optax.apply_if_finite(
      optax.chain(optax.scale(1.0), optax.adam(train.learning_rate_schedule(config))), 5))
  train.train_and_evaluate(smoke_config(data_root, num_train_steps=2, eval_every_steps=100, **LIGHT_MODEL), tmp_path)
  monkeypatch.setattr(train, "make_optimizer", default)
  with pytest.raises(checkpointing.CheckpointMismatchError) as info:
    train.train_and_evaluate(smoke_config(data_root, num_train_steps=4, **LIGHT_MODEL), tmp_path)
  assert str(info.value).startswith("the checkpoint of step 2 in ") and "another structure" in str(info.value)
  assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_skipped_and_training_resumes_from_the_one_before(data_root, workdir_copy,
                                                                                           capsys):
  from test_checkpointing import _flip_bytes  # pylint: disable=g-import-not-at-top
  _flip_bytes(workdir_copy / "checkpoints" / "4")
  result = train.train_and_evaluate(smoke_config(data_root, num_train_steps=5, eval_every_steps=100), workdir_copy)
  err = capsys.readouterr().err
  assert "the checkpoint of step 4 in" in err and "is damaged" in err and "Skipped it" in err
  assert "resuming from the checkpoint of step 2, the newest intact one" in err
  assert result["step"] == 5


def test_a_second_trainer_on_a_busy_workdir_stops_at_once(data_root, tmp_path):
  from simplenet_jax import workdir_lock  # pylint: disable=g-import-not-at-top
  with workdir_lock.WorkdirLock(tmp_path / "run"):
    with pytest.raises(workdir_lock.WorkdirBusyError, match=r"is in use by another run \(pid"):
      train.train_and_evaluate(smoke_config(data_root), tmp_path / "run")
  assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []  # nothing written; the lock released


def test_a_workdir_that_cannot_be_written_is_one_sentence_before_any_work(data_root, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(ValueError) as info:
    train.train_and_evaluate(smoke_config(data_root), blocker / "run")
  assert str(info.value) == (f"cannot write to the workdir {blocker / 'run'} (Not a directory); pass --workdir "
                             "with a writable folder.")


def test_l1_loss_has_no_gradient_at_a_tie():
  """The loss is mean |pred − target| and its gradient sign(pred − target) / n, 0 where they are equal (as
  PyTorch's L1Loss): on 8-bit targets many pixels tie, and JAX's own |x| would push each of them down."""
  rng = np.random.default_rng(0)
  target = rng.integers(0, 256, (2, 5, 7, 3)) / 255.0
  pred = np.where(rng.random(target.shape) < 0.4, target, rng.integers(0, 256, target.shape) / 255.0)
  assert (pred == target).mean() > 0.3
  loss, grad = jax.value_and_grad(train.l1_loss)(jnp.asarray(pred, jnp.float32), jnp.asarray(target, jnp.float32))
  assert float(loss) == pytest.approx(np.abs(pred - target).mean(), rel=1e-6)
  np.testing.assert_array_equal(np.asarray(grad), np.sign(pred - target).astype(np.float32) / pred.size)


def test_gated_loss_fits_the_residual_to_blurred_pairs_and_the_gate_to_blur():
  """`gated_loss` against its formula in NumPy: the L1 of the ungated prediction over the pairs whose target
  differs from their input, plus GATE_LOSS_WEIGHT × the mean of two logistic losses (inputs: blurred or not;
  targets: never); the prediction applies each image's residual whole or not at all."""
  rng = np.random.default_rng(4)
  sharp = rng.integers(0, 256, (3, 5, 7, 3)) / 255.0
  blur = sharp.copy()
  blur[0] = rng.integers(0, 256, (5, 7, 3)) / 255.0
  blur[2, 1, 2, 0] = 1.0 - blur[2, 1, 2, 0]  # one pixel differs: blurred all the same; pair 1 is its own target
  residual = rng.normal(size=blur.shape) * 0.1
  gate, sharp_gate = np.array([[1.3], [-0.4], [-2.0]]), np.array([[0.7], [-1.1], [0.2]])
  loss, pred = train.gated_loss(*(jnp.asarray(a, jnp.float32) for a in (blur, sharp, residual, gate, sharp_gate)))
  labels = np.array([1.0, 0.0, 1.0])
  l1 = np.abs(blur + residual - sharp).mean(axis=(1, 2, 3))[[0, 2]].mean()
  softplus = lambda z: np.log1p(np.exp(z))  # -log sigmoid(-z)
  logistic = (np.mean(softplus(gate[:, 0]) - labels * gate[:, 0]) + np.mean(softplus(sharp_gate[:, 0]))) / 2
  assert float(loss) == pytest.approx(l1 + train.GATE_LOSS_WEIGHT * logistic, rel=1e-5)
  expected = blur + residual * (gate[:, 0] > 0)[:, None, None, None]
  np.testing.assert_allclose(np.asarray(pred), expected, atol=1e-6)
