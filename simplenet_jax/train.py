"""Training (Sec. 3.5, SPEC §3): `train_and_evaluate(config, workdir)`, behind train.py and the notebooks.

L1 loss, Adam, exponentially decayed learning rate; a pure `train_step` jitted once over a device mesh (batch
sharded, parameters replicated); orbax checkpoints that resume exactly (model, optimizer, step and data
iterator); clu metrics to TensorBoard; periodic full-resolution evaluation on the test split.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pathlib
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
from flax import nnx

from simplenet_jax import checkpointing
from simplenet_jax import evaluate
from simplenet_jax import metrics
from simplenet_jax import parallel
from simplenet_jax.data import pipeline
from simplenet_jax.models import SimpleNet
from simplenet_jax.models import validate_model_config

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteError(RuntimeError):
  """The loss or a gradient became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState


TrainMetrics = clu_metrics.Collection.create(
    loss=clu_metrics.Average.from_output("loss"),
    psnr=clu_metrics.Average.from_output("psnr"),
    grad_norm=clu_metrics.Average.from_output("grad_norm"),
    learning_rate=clu_metrics.LastValue.from_output("learning_rate"),
    nonfinite_steps=clu_metrics.Average.from_output("nonfinite"),
)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """lr · rate^⌊step / decay_steps⌋ (staircase exponential decay, Sec. 3.5)."""
  return optax.exponential_decay(config.learning_rate, transition_steps=config.lr_decay_steps,
                                 decay_rate=config.lr_decay_rate, staircase=True)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  adam = optax.adam(learning_rate_schedule(config), b1=config.adam_b1, b2=config.adam_b2)
  if config.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), adam)
  return adam


def create_train_state(config: ml_collections.ConfigDict,
                       tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
  model = SimpleNet.from_config(config.model, rngs=nnx.Rngs(config.seed))
  graphdef, params = nnx.split(model)
  return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


MIN_MSE = 1e-10  # train PSNR at most 100 dB


def train_step(state: TrainState, batch: dict[str, jax.Array], *, graphdef: nnx.GraphDef,
               tx: optax.GradientTransformation, learning_rate_fn: optax.Schedule,
               compute_dtype: Any) -> tuple[TrainState, clu_metrics.Collection]:
  """One Adam step on the L1 loss. A non-finite loss or gradient leaves the state unchanged (and is counted
  in the metrics, which the host checks), so a checkpoint never holds NaNs."""

  blur, sharp = metrics.to_float(batch["blur"]), metrics.to_float(batch["sharp"])  # uint8 from the pipeline

  def loss_fn(params):
    # bf16 compute: bf16 weights and features; the master weights, the image, the global residual add and
    # the loss stay float32 (`SimpleNet.__call__`).
    model = nnx.merge(graphdef, jax.tree.map(lambda p: p.astype(compute_dtype), params))
    pred = model(blur, compute_dtype=compute_dtype)
    return jnp.mean(jnp.abs(pred - sharp)), pred

  (loss, pred), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grad_norm = optax.global_norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  updated = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       opt_state=opt_state)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated,
                           state.replace(step=state.step + 1))
  # A crop predicted exactly (a flat sky, or an unblurred pair with the identity network) has MSE 0; the
  # bound caps its PSNR at 100 dB, so the logged mean is never inf.
  mse = jnp.maximum(jnp.mean((jnp.clip(pred, 0, 1) - sharp) ** 2, axis=(1, 2, 3)), MIN_MSE)
  return new_state, TrainMetrics.single_from_model_output(
      loss=loss, psnr=jnp.mean(-10 * jnp.log10(mse)), grad_norm=grad_norm,
      learning_rate=learning_rate_fn(state.step), nonfinite=1.0 - finite.astype(jnp.float32))


def step_compiler_options(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """XLA options of the training step: `config.deterministic` asks GPUs for run-to-run identical results
  (scatter-adds without atomics); other platforms ignore the option."""
  return {"xla_gpu_deterministic_ops": True} if config.deterministic else None


def validate_training_config(config: ml_collections.ConfigDict) -> None:
  """One ValueError sentence for a training field that cannot work (the model fields: `SimpleNet`)."""
  positive_ints = ("batch_size", "num_train_steps", "lr_decay_steps", "log_every_steps",
                   "checkpoint_every_steps", "keep_checkpoints", "eval_every_steps")
  for field in positive_ints:
    value = config[field]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f"config.{field} must be a positive integer, got {value!r}.")
  if not config.learning_rate > 0:
    raise ValueError(f"config.learning_rate must be positive, got {config.learning_rate!r}.")
  if not 0 < config.lr_decay_rate <= 1:
    raise ValueError(f"config.lr_decay_rate must be in (0, 1], got {config.lr_decay_rate!r}.")
  if not isinstance(config.deterministic, bool):
    raise ValueError(f"config.deterministic must be True or False, got {config.deterministic!r}.")
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype must be one of {sorted(COMPUTE_DTYPES)}, got "
                     f"{config.compute_dtype!r}.")


def quiet_library_logs() -> None:
  """Keeps the terminal readable: INFO lines from this package and the metric writer; libraries' warnings."""

  def keep(record: logging.LogRecord) -> bool:
    return (record.levelno >= logging.WARNING or "simplenet_jax" in record.pathname
            or record.pathname.endswith(("logging_writer.py", "train.py")))

  for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
    handler.addFilter(keep)


class StopOnSignal:
  """SIGTERM/SIGINT (preemption, Ctrl-C) ask the loop to checkpoint and stop; a second Ctrl-C interrupts."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _handler(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.requested = True
    logging.warning("received %s: saving a checkpoint and stopping", signal.Signals(signum).name)

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[signum] = signal.signal(signum, self._handler)
      except ValueError:  # not the main thread (e.g. a notebook worker): no signal handling
        pass
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


def _check_finite(summary: dict[str, float], step: int, manager, workdir) -> None:
  if summary.get("nonfinite_steps", 0) > 0 or not np.isfinite(summary.get("loss", 0.0)):
    last = manager.latest_step()
    kept = f"the last good checkpoint (step {last}) is intact" if last is not None else "no checkpoint was saved"
    raise NonFiniteError(
        f"training stopped at step {step}: the loss or a gradient became NaN or infinite; {kept} in "
        f"{checkpointing.checkpoint_dir(workdir)}. Lower --config.learning_rate or set --config.grad_clip_norm.")


def _eval_and_log(config, eval_split: pipeline.SplitReader, apply_fn, writer, step: int) -> dict[str, float]:
  grids = []

  def keep_grid(pair, output, _):
    if len(grids) < config.eval_grid_images:
      grids.append(evaluate.side_by_side(pair["blur"], output, pair["sharp"]))

  pairs = pipeline.eval_iter(eval_split, config.data, limit=config.eval_num_images or None)
  results = evaluate.evaluate_pairs(apply_fn, pairs, on_image=keep_grid)
  means = evaluate.mean_metrics(results)
  writer.write_scalars(step, {f"eval/{k}": v for k, v in means.items()})
  if grids:
    writer.write_images(step, {f"eval/blur_output_sharp_{i}": g[None] for i, g in enumerate(grids)})
  logging.info("step %d eval on %d images: PSNR %.2f dB (input %.2f), SSIM matlab %.4f / python %.4f",
               step, len(results), means["psnr"], means["input_psnr"], means["ssim_matlab"],
               means["ssim_python"])
  return means


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Trains (or resumes) in `workdir` until `config.num_train_steps`.

  Returns {"step", "train": the last logged train metrics, "eval": the last evaluation's means}.
  """
  workdir = pathlib.Path(workdir)
  validate_training_config(config)
  validate_model_config(config.model)  # before anything is written to the workdir
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  replicated = parallel.replicated(mesh)

  manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  latest = manager.latest_step()
  if latest is not None:
    checkpointing.check_compatible(checkpointing.saved_meta(manager, latest)["config"], config, workdir)

  tx = make_optimizer(config)
  graphdef, state = create_train_state(config, tx)
  state = jax.device_put(state, replicated)
  train_iter = iter(pipeline.train_dataset(config.data, config.batch_size))
  eval_split = pipeline.open_split(config.data, config.data.eval_split)  # once: periodic evals re-check nothing
  if latest is not None:
    state = checkpointing.restore(manager, latest, checkpointing.abstract_like(state), train_iter,
                                  num_workers=config.data.num_workers)
    logging.info("resuming from the checkpoint of step %d in %s", latest, checkpointing.checkpoint_dir(workdir))

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  step_fn = jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, learning_rate_fn=learning_rate_schedule(config),
                        compute_dtype=COMPUTE_DTYPES[config.compute_dtype]),
      in_shardings=(replicated, parallel.batch_sharding(mesh)), out_shardings=(replicated, replicated),
      donate_argnums=(0,), compiler_options=step_compiler_options(config))
  apply_fn = jax.jit(lambda params, image: nnx.merge(graphdef, params)(image),
                     in_shardings=(replicated, replicated), out_shardings=replicated)
  report_progress = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer)

  step = int(state.step)
  first_step, start = step, time.perf_counter()
  window_start, window_step = start, step
  pending, summary, eval_means = None, {}, {}
  with StopOnSignal() as stop, contextlib.closing(train_iter):
    while step < config.num_train_steps:
      state, step_metrics = step_fn(state, parallel.global_batch(next(train_iter), mesh))
      pending = step_metrics if pending is None else pending.merge(step_metrics)
      step += 1
      report_progress(step)
      last = step == config.num_train_steps
      evaluate_now = step % config.eval_every_steps == 0 or last
      save_now = step % config.checkpoint_every_steps == 0 or last or evaluate_now or stop.requested
      if step % config.log_every_steps == 0 or save_now:
        summary = {k: float(v) for k, v in pending.compute().items()}
        pending = None
        _check_finite(summary, step, manager, workdir)
        writer.write_scalars(step, {f"train/{k}": v for k, v in summary.items() if k != "nonfinite_steps"})
        now = time.perf_counter()
        rate = (step - window_step) / (now - window_start)
        window_start, window_step = now, step
        eta = (config.num_train_steps - step) / max(rate, 1e-9)
        logging.info("step %d/%d  loss %.4f  train PSNR %.2f dB  lr %.2e  %.2f steps/s  ETA %s", step,
                     config.num_train_steps, summary["loss"], summary["psnr"], summary["learning_rate"], rate,
                     time.strftime("%H:%M:%S", time.gmtime(eta)))
      if evaluate_now:
        eval_means = _eval_and_log(config, eval_split, lambda image: apply_fn(state.params, image), writer, step)
      if save_now:
        psnr = {checkpointing.BEST_METRIC: eval_means["psnr"]} if evaluate_now and eval_means else None
        checkpointing.save(manager, step, state, train_iter, config, metrics=psnr)
      if stop.requested:
        logging.warning("stopped at step %d; the checkpoint is saved, run the same command to resume", step)
        break
  manager.wait_until_finished()
  writer.flush()
  if step > first_step:
    logging.info("trained steps %d→%d in %.0f s", first_step, step, time.perf_counter() - start)
  return {"step": step, "train": summary, "eval": eval_means}
