"""Training (Sec. 3.5, SPEC §3): `train_and_evaluate(config, workdir)`, behind train.py and the notebooks.

L1 loss, Adam, exponentially decayed learning rate; a pure `train_step` jitted once over a device mesh (batch
sharded, parameters replicated); orbax checkpoints that resume exactly (model, optimizer, step and data
iterator); clu metrics to TensorBoard; periodic full-resolution evaluation on the test split.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
from flax import nnx

from simplenet_jax import checkpointing
from simplenet_jax import inference
from simplenet_jax import parallel
from simplenet_jax import paths
from simplenet_jax import photos
from simplenet_jax import workdir_lock
from simplenet_jax.data import catalogue
from simplenet_jax.data import pipeline
from simplenet_jax.evaluation import loop as evaluation
from simplenet_jax.evaluation import reports
from simplenet_jax.evaluation import scoring
from simplenet_jax.models import ModelConfig
from simplenet_jax.models import SimpleNet
from simplenet_jax.models import simplenet

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteError(RuntimeError):
  """The loss or a gradient became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState


@flax.struct.dataclass
class Largest(clu_metrics.Metric):
  """The largest value over the merged steps."""

  value: jax.Array

  @classmethod
  def from_model_output(cls, values: jax.Array, **_) -> Largest:
    return cls(value=jnp.asarray(values))

  def merge(self, other: Largest) -> Largest:
    return type(self)(value=jnp.maximum(self.value, other.value))

  def compute(self) -> jax.Array:
    return self.value


def _mean_of_applied(name: str) -> type[clu_metrics.Average]:
  """The mean of output `name` over the steps that were applied (a skipped step's NaN would poison it)."""
  return clu_metrics.Average.from_fun(lambda finite, **out: {"values": out[name][None], "mask": finite[None]})


TrainMetrics = clu_metrics.Collection.create(
    loss=_mean_of_applied("loss"),
    psnr=_mean_of_applied("psnr"),
    grad_norm=_mean_of_applied("grad_norm"),
    learning_rate=clu_metrics.LastValue.from_output("learning_rate"),
    nonfinite_streak=Largest.from_output("nonfinite_streak"),  # the longest run of skipped steps
    nonfinite_total=clu_metrics.LastValue.from_output("nonfinite_total"),  # skipped since step 0
)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """lr · rate^⌊step / decay_steps⌋ (staircase exponential decay, Sec. 3.5)."""
  return optax.exponential_decay(config.learning_rate, transition_steps=config.lr_decay_steps,
                                 decay_rate=config.lr_decay_rate, staircase=True)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam (after optional clipping). A step whose gradient is NaN or infinite is skipped (the parameters and
  Adam's moments stay as they were); the host stops the run at `config.max_consecutive_nonfinite` in a row."""
  adam = optax.adam(learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
  if config.grad_clip_norm > 0:
    adam = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adam)
  return optax.apply_if_finite(adam, max_consecutive_errors=config.max_consecutive_nonfinite)


def create_train_state(config: ml_collections.ConfigDict,
                       tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(config.seed))
  graphdef, params = nnx.split(model)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


MIN_MSE = 1e-10  # train PSNR at most 100 dB


def l1_loss(pred: jax.Array, target: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
  """Mean |pred − target| (over `axis`; None: all), with the gradient sign(pred − target), 0 where they are
  equal, as PyTorch's L1Loss.

  JAX differentiates |x| at 0 as 1. Targets are 8-bit, and the zero-initialised network predicts its input, so
  many pixels start exactly on their target (every pixel of an unblurred pair): that gradient would push all of
  them darker.
  """
  diff = pred - target
  return jnp.mean(diff * jax.lax.stop_gradient(jnp.sign(diff)), axis=axis)


GATE_LOSS_WEIGHT = 1.0


def gated_loss(blur: jax.Array, sharp: jax.Array, residual: jax.Array, gate: jax.Array,
               sharp_gate: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The loss of a network with the demo's gate (`ModelConfig.residual_gate`), and its gated prediction.

  The residual is fitted, ungated, to the blurred pairs (L1), and the gate (logits `gate` of the inputs and
  `sharp_gate` of the targets, [N, 1]) learns which images are blurred (logistic loss, weighted
  GATE_LOSS_WEIGHT): every input that differs from its target is, and every target is not. Each target is
  its own input's content unblurred, so the gate cannot tell them apart by content, only by blur. A pair whose
  target is its input, byte for byte, counts as unblurred and is left out of the L1: with L1 on such pairs,
  a few hundred steps pulled the whole residual to zero.
  """
  blurred = jnp.any(blur != sharp, axis=(1, 2, 3)).astype(jnp.float32)
  per_pair = l1_loss(blur + residual, sharp, axis=(1, 2, 3))
  l1 = jnp.sum(per_pair * blurred) / jnp.maximum(jnp.sum(blurred), 1.0)
  logistic = (jnp.mean(optax.sigmoid_binary_cross_entropy(gate[:, 0], blurred))
              + jnp.mean(optax.sigmoid_binary_cross_entropy(sharp_gate[:, 0], jnp.zeros_like(blurred)))) / 2
  decided = simplenet.is_blurred(gate).astype(residual.dtype)[:, None, None, :]
  return l1 + GATE_LOSS_WEIGHT * logistic, blur + residual * decided


def train_step(state: TrainState, batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, learning_rate_fn: optax.Schedule,
               compute_dtype: Any) -> tuple[TrainState, clu_metrics.Collection]:
  """One Adam step on the L1 loss (with the demo's gate, `gated_loss`). A non-finite gradient leaves the
  parameters and the optimizer's moments unchanged (`optax.apply_if_finite`, counted in the metrics), so a
  checkpoint never holds NaNs."""

  blur, sharp = photos.to_float(batch["blur"]), photos.to_float(batch["sharp"])  # uint8 from the pipeline

  def loss_fn(params):
    # bf16 compute: bf16 weights and features; the master weights, the image, the global residual add and
    # the loss stay float32 (`SimpleNet.__call__`).
    model = nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(compute_dtype), params))
    if model.gate is None:
      pred = model(blur, compute_dtype=compute_dtype)
      # jnp.abs, whose gradient at a tie is 1: the tie-free l1_loss here made XLA:TPU's paper step need
      # 15.78 GiB instead of 14.67 (over a v5e chip's 16).
      return jnp.mean(jnp.abs(pred - sharp)), pred
    residual, gate = model.residual_and_gate(blur, compute_dtype=compute_dtype)
    sharp_gate = model.gate_logit_of(sharp, compute_dtype=compute_dtype)
    return gated_loss(blur, sharp, residual.astype(blur.dtype), gate.astype(jnp.float32),
                      sharp_gate.astype(jnp.float32))

  (loss, pred), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)
  # A crop predicted exactly (a flat sky, or an unblurred pair with the identity network) has MSE 0; the
  # bound caps its PSNR at 100 dB, so the logged mean is never inf.
  mse = jnp.maximum(jnp.mean((jnp.clip(pred, 0, 1) - sharp) ** 2, axis=(1, 2, 3)), MIN_MSE)
  return new_state, TrainMetrics.single_from_model_output(
      loss=loss, psnr=jnp.mean(-10 * jnp.log10(mse)), grad_norm=optax.global_norm(grads),
      learning_rate=learning_rate_fn(state.step), finite=opt_state.last_finite & jnp.isfinite(loss),
      nonfinite_streak=opt_state.notfinite_count, nonfinite_total=opt_state.total_notfinite)


MATMUL_PRECISIONS = ("default", "high", "highest")


def make_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, graphdef: nnx.GraphDef,
              tx: optax.GradientTransformation) -> Any:
  """The jitted training step, as the trainer runs it and `benchmarks/tpu_compile.py` compiles it: the state
  replicated and donated, the batch split over the mesh's ``data`` axis, the config's compute dtype, matmul
  precision and compiler options. `mesh` may hold devices of a TPU topology with no TPU attached."""
  replicated = parallel.replicated(mesh)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, learning_rate_fn=learning_rate_schedule(config),
                           compute_dtype=COMPUTE_DTYPES[config.compute_dtype])

  def step_at_precision(state, batch):
    # A TPU runs float32 matmuls and convolutions as one bfloat16 pass unless told otherwise ("default");
    # "highest" asks for full float32 (about 6 passes). CPUs and GPUs compute float32 either way.
    with jax.default_matmul_precision(config.matmul_precision):
      return step(state, batch)

  return jax.jit(step_at_precision, in_shardings=(replicated, parallel.batch_sharding(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,),
                 compiler_options=step_compiler_options(config))


def abstract_train_state(config: ml_collections.ConfigDict,
                         tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  """(graphdef, the state's shapes and dtypes): nothing is allocated (`jax.eval_shape`)."""
  graphdefs = []

  def make():
    graphdef, state = create_train_state(config, tx)
    graphdefs.append(graphdef)
    return state

  state = jax.eval_shape(make)
  return graphdefs[0], state


def step_compiler_options(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """XLA options of the training step: `config.deterministic` asks GPUs for run-to-run identical results
  (scatter-adds without atomics); other platforms ignore the option."""
  return {"xla_gpu_deterministic_ops": True} if config.deterministic else None


def validate_training_config(config: ml_collections.ConfigDict) -> None:
  """One ValueError sentence for a training field that cannot work (the model fields: `SimpleNet`)."""
  positive_ints = ("batch_size", "num_train_steps", "lr_decay_steps", "log_every_steps",
                   "checkpoint_every_steps", "keep_checkpoints", "eval_every_steps", "max_consecutive_nonfinite")
  for field in positive_ints:
    value = config[field]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")
  if not config.learning_rate > 0:
    raise ValueError(f"config.learning_rate must be positive, got {config.learning_rate!r}.")
  if not 0 < config.lr_decay_rate <= 1:
    raise ValueError(f"config.lr_decay_rate must be in (0, 1], got {config.lr_decay_rate!r}.")
  if not 0 < config.adam_eps < 1:
    raise ValueError(f"config.adam_eps must be in (0, 1), got {config.adam_eps!r}.")
  if not isinstance(config.deterministic, bool):
    raise ValueError(f"config.deterministic must be True or False, got {config.deterministic!r}.")
  if config.matmul_precision not in MATMUL_PRECISIONS:
    raise ValueError(f"config.matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got "
                     f"{config.matmul_precision!r}.")
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got "
                     f"{config.compute_dtype!r}.")


def quiet_library_logs() -> None:
  """Keeps the terminal readable: INFO lines from this package, the metric writer and clu's progress notes;
  libraries' warnings."""

  def keep(record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or "simplenet_jax" in record.pathname
            or record.pathname.endswith(("logging_writer.py", "train.py", "clu/platform/local.py")))

  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(keep)


class StopOnSignal:
  """SIGTERM/SIGINT (preemption, Ctrl-C) ask the loop to checkpoint and stop; a second Ctrl-C interrupts.

  One process only: with several, SIGTERM is left to JAX's preemption service, which agrees with every host
  on the step to save and stop at (`CheckpointManager.reached_preemption`); a flag of one host's own would
  leave it in the save while the others wait in the next step's all-reduce.
  """

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _handler(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    logging.warning("received %s: saving a checkpoint and stopping", signal.Signals(signum).name)

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT) if jax.process_count() == 1 else ():
      try:
        self._previous[signum] = signal.signal(signum, self._handler)
      except ValueError:  # not the main thread (e.g. a notebook worker): no signal handling
        pass
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _log_train(pending: clu_metrics.Collection, step: int, config, writer, manager, workdir,
               skipped_before: int) -> dict[str, float]:
  """Writes the window's train metrics and logs them; a streak of skipped (non-finite) steps ends the run."""
  summary = {k: float(v) for k, v in pending.compute().items()}
  streak, total = int(summary.pop("nonfinite_streak")), int(summary["nonfinite_total"])
  if streak >= config.max_consecutive_nonfinite:
    last = manager.latest_step()
    kept = f"the last good checkpoint (step {last}) is intact" if last is not None else "no checkpoint was saved"
    raise NonFiniteError(
        f"training stopped at step {step}: the loss or a gradient became NaN or infinite in {streak} consecutive "
        f"steps (config.max_consecutive_nonfinite = {config.max_consecutive_nonfinite}); {kept} in "
        f"{checkpointing.checkpoint_dir(workdir)}. Lower --config.learning_rate or set --config.grad_clip_norm.")
  if total > skipped_before:
    logging.warning("skipped %d step(s) whose loss or gradient was NaN or infinite (%d since step 0)",
                    total - skipped_before, total)
  writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items()})
  logging.info("step %d/%d  loss %.4f  train PSNR %.2f dB  lr %.2e", step, config.num_train_steps,
               summary["loss"], summary["psnr"], summary["learning_rate"])
  return summary


def progress_reporter(config: ml_collections.ConfigDict, writer) -> periodic_actions.ReportProgress:
  """clu's progress line (steps/s, percent done, ETA in days, hours and minutes) once a minute, and the
  steps/s scalar to TensorBoard."""
  return periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer, every_secs=60.0)


def _eval_and_log(config, eval_split: catalogue.SplitReader, apply_fn, writer, step: int) -> dict[str, float]:
  grids = []

  def keep_grid(pair, output, _):
    if len(grids) < config.eval_grid_images:
      grids.append(reports.side_by_side(pair["blur"], output, pair["sharp"]))

  pairs = pipeline.eval_iter(eval_split, config.data, limit=config.eval_num_images or None)
  results = evaluation.evaluate_pairs(inference.at_any_size(apply_fn), pairs, on_image=keep_grid)
  means = scoring.mean_metrics(results)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in means.items()})
  if grids:
    writer.write_images(step, {f"eval/blur_output_sharp_{i}": g[None] for i, g in enumerate(grids)})
  logging.info("step %d eval on %d images: PSNR %.2f dB (input %.2f), SSIM matlab %.4f / python %.4f",
               step, len(results), means["psnr"], means["input_psnr"], means["ssim_matlab"],
               means["ssim_python"])
  return means


def _restore_newest_intact(manager, state, train_iter, config, workdir):
  """The newest checkpoint whose arrays match their saved hashes; a damaged one is skipped with a warning."""
  abstract = checkpointing.abstract_like(state)
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    try:
      restored = checkpointing.restore(manager, step, abstract, train_iter, num_workers=config.data.num_workers)
    except checkpointing.CheckpointDamagedError as error:
      logging.warning("%s Skipped it; trying the one before.", error)
      print(f"warning: {error} Skipped it; trying the one before.", file=sys.stderr)
      continue
    if step != steps[0]:
      print(f"warning: resuming from the checkpoint of step {step}, the newest intact one.", file=sys.stderr)
    logging.info("resuming from the checkpoint of step %d in %s", step, checkpointing.checkpoint_dir(workdir))
    return restored
  raise checkpointing.CheckpointDamagedError(
      f"every checkpoint in {checkpointing.checkpoint_dir(workdir)} is damaged (steps {sorted(steps)}); use a new "
      "--workdir.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
  """Trains (or resumes) in `workdir` until `config.num_train_steps`.

  Returns {"step", "train": the last logged train metrics, "eval": the last evaluation's means}. One run per
  workdir: process 0 holds its lock (`workdir_lock`), and a second run stops with one sentence.
  """
  workdir = paths.user_path(workdir)  # a gs:// URL stays one
  validate_training_config(config)
  ModelConfig.from_mapping(config.model)  # checked before anything is written to the workdir
  paths.check_reachable(workdir, "workdir")
  if jax.process_index() == 0:
    paths.check_writable(workdir, "workdir", "--workdir")  # one sentence now, not a traceback at the first save
  with workdir_lock.WorkdirLock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
    return _train(config, workdir)


def _train(config: ml_collections.ConfigDict, workdir) -> dict[str, Any]:
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated(mesh)

  manager = checkpointing.create_manager(workdir, config.keep_checkpoints, save_every=config.checkpoint_every_steps)
  latest = manager.latest_step()
  if latest is not None:
    checkpointing.check_compatible(checkpointing.saved_meta(manager, latest)["config"], config, workdir)

  tx = make_optimizer(config)
  graphdef, state = create_train_state(config, tx)
  state = jax.device_put(state, replicated)
  train_iter = iter(pipeline.train_dataset(config.data, config.batch_size))
  eval_split = catalogue.open_split(config.data, config.data.eval_split)  # once: periodic evals re-check nothing
  if latest is not None:
    state = _restore_newest_intact(manager, state, train_iter, config, workdir)

  writer = metric_writers.create_default_writer(os.fspath(workdir), just_logging=jax.process_index() > 0)
  step_fn = make_step(config, mesh, graphdef, tx)
  apply_fn = jax.jit(lambda params, image: nnx.merge(graphdef, params)(image),
                     in_shardings=(replicated, replicated), out_shardings=replicated)
  report_progress = progress_reporter(config, writer)

  step, summary, eval_means, pending = int(state.step), {}, {}, None
  first_step, start, skipped = step, time.perf_counter(), int(state.opt_state.total_notfinite)
  # closing(manager): a save in flight is finished even when the run ends in an error.
  with StopOnSignal() as stop, contextlib.closing(train_iter), contextlib.closing(manager):
    while step < config.num_train_steps:
      state, step_metrics = step_fn(state, parallel.global_batch(next(train_iter), mesh))
      pending = step_metrics if pending is None else pending.merge(step_metrics)
      step += 1
      report_progress(step)
      # Asked by every process at every step: a preempted host makes them all agree on one step to stop at.
      stop_now = manager.reached_preemption(step) or stop.requested
      last = step == config.num_train_steps
      evaluate_now = step % config.eval_every_steps == 0 or last
      save_now = manager.should_save(step) or last or evaluate_now or stop_now
      if step % config.log_every_steps == 0 or save_now:
        summary = _log_train(pending, step, config, writer, manager, workdir, skipped)
        pending, skipped = None, int(summary["nonfinite_total"])
      if evaluate_now:
        eval_means = _eval_and_log(config, eval_split, lambda image: apply_fn(state.params, image), writer, step)
      if save_now:
        psnr = {checkpointing.BEST_METRIC: eval_means["psnr"]} if evaluate_now and eval_means else None
        checkpointing.save(manager, step, state, train_iter, config, metrics=psnr)
      if stop_now:
        logging.warning("stopped at step %d; the checkpoint is saved, run the same command to resume", step)
        break
  writer.flush()
  if step > first_step:
    logging.info("trained steps %d→%d in %.0f s", first_step, step, time.perf_counter() - start)
  return {"step": step, "train": summary, "eval": eval_means}
