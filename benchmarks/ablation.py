"""A miniature of the paper's ablations (Tables 3, 5 and 6) on the built-in data, on any machine.

Every variant trains with the same budget, seeds and data (demo widths, the built-in photos with GoPro-like
heavy shake) and is evaluated on the built-in test split (whole photos from other packages than the training
photos) at full resolution:

* Table 3: Baseline1 (no DR), Baseline2 (no LGCR), Baseline3 (no PVB) and the full model;
* Table 5: the non-local block, TGM+TRM and nothing in LGCR's slot;
* LGCR with its softmax over channels only (`lgcr_softmax_axes="c"`, SPEC §1's other reading of eq. 3).

    python benchmarks/ablation.py [--out benchmarks/ablation_runs] [--seeds 0 1] [--steps 300]
                                  [--variants full baseline2 ...] [--smoke]

A variant's architecture is that of its own config file (configs/baseline1.py, …; only the model fields it
changes are applied to the demo recipe), so the miniature and the paper-size runs differ in budget only.
Resumable: each finished (variant, seed) leaves `runs/<variant>_seed<k>/result.json` and is skipped by a
rerun; an unfinished one resumes from its last checkpoint. The table (markdown), the learning curves (PNG) and
all figures (JSON) are written again from every finished run each time.

Figures per variant: PSNR and SSIM (both conventions) on the test split, the worst image's PSNR gain and colour
shift, parameters, XLA's FLOPs of one 256² forward pass, the training step's median time relative to the full
model's (measured in this run: on a shared CPU only ratios mean anything), and the global-context block's
effect |g(x) − x| / |x| at initialisation and after training, on training crops and on the full-size test
images.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import pathlib
import statistics
import sys
import time

from common import ROOT  # noqa: F401  (puts the repository on sys.path)
from common import environment

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from configs import gopro
from simplenet_jax import inference
from simplenet_jax import train
from simplenet_jax.data import catalogue
from simplenet_jax.data import images
from simplenet_jax.data import layouts
from simplenet_jax.data.synthesis import camera_shake
from simplenet_jax.data.synthesis import dataset
from simplenet_jax.evaluation import loop
from simplenet_jax.models import SimpleNet

# (name, the config file whose model fields it takes; the paper's table; label)
VARIANTS = (
    ("full", "gopro", "3", "SimpleNet (PVB + LGCR + DR)"),
    ("baseline1", "baseline1", "3", "Baseline1: no DR"),
    ("baseline2", "baseline2", "3", "Baseline2: no LGCR"),
    ("baseline3", "baseline3", "3", "Baseline3: no PVB"),
    ("nonlocal", "nonlocal", "5", "Non-local in LGCR's slot"),
    ("tgm_trm", "tgm_trm", "5", "TGM+TRM in LGCR's slot"),
    ("none", "no_global_context", "5", "Nothing in LGCR's slot"),
    ("lgcr_c", "lgcr_channel_softmax", "6", "LGCR, softmax over channels"),
)
VARIANT_NAMES = tuple(v[0] for v in VARIANTS)
VARIANT_LABELS = {v[0]: v[3] for v in VARIANTS}
VARIANT_SOURCES = {v[0]: v[1] for v in VARIANTS}

# GoPro-like heavy shake: camera paths of 2–30 px (mean about 11), heavier than the demo's.
HEAVY_SHAKE = camera_shake.BlurSettings(min_length=2.0, max_length=30.0, length_beta=(1.5, 3.0))


@dataclasses.dataclass(frozen=True)
class Budget:
  recipe: str  # the config every variant trains with (widths, crops, batch, workers, learning rate)
  steps: int
  train_pairs: int
  test_pairs: int
  size: tuple[int, int]
  test_size: tuple[int, int] | None  # None: whole photos


FULL = Budget(recipe="demo", steps=300, train_pairs=420, test_pairs=12, size=(256, 256), test_size=None)
SMOKE = Budget(recipe="smoke", steps=3, train_pairs=6, test_pairs=2, size=(48, 48), test_size=(40, 56))


def model_overrides(source: str) -> dict:
  """The model fields a variant changes: where its config file differs from gopro.py's."""
  base = gopro.get_config().model.to_dict()
  variant = importlib.import_module(f"configs.{source}").get_config().model.to_dict()
  return {key: value for key, value in variant.items() if base.get(key) != value}


def variant_config(name: str, seed: int, budget: Budget, data_root: pathlib.Path) -> ml_collections.ConfigDict:
  """The budget's recipe (`configs/demo.py`, or `smoke.py` for --smoke) with the variant's model fields, `seed`
  (network init and data order) and the budget's steps."""
  config = importlib.import_module(f"configs.{budget.recipe}").get_config()
  config.name = f"ablation_{name}"
  config.seed = seed
  config.data.seed = seed
  config.data.root = str(data_root)
  config.num_train_steps = budget.steps
  config.lr_decay_steps = max(1, budget.steps * 2 // 3)
  config.log_every_steps = max(1, budget.steps // 30)
  config.checkpoint_every_steps = max(1, budget.steps // 6)
  config.eval_every_steps = budget.steps
  config.eval_num_images = 1  # the end of training looks at one image; the full evaluation follows
  config.eval_grid_images = 0
  for key, value in model_overrides(VARIANT_SOURCES[name]).items():
    config.model[key] = value
  return config


# --- Data ------------------------------------------------------------------------------------------------------


def build_data(out: pathlib.Path, budget: Budget) -> pathlib.Path:
  """The built-in photos with heavy shake in OUT/data (and its TFDS build beside it); a no-op when built."""
  root = out / "data"
  dataset.synthesize_dataset(root, train_pairs=budget.train_pairs, test_pairs=budget.test_pairs,
                             size=budget.size, test_size=budget.test_size, settings=HEAVY_SHAKE, progress=False)
  catalogue.build("folder", str(root))
  return root


def test_images(root: pathlib.Path) -> list[np.ndarray]:
  """The blurred test images, as uint8 [H, W, 3]."""
  return [images.read_rgb(pair.blur) for pair in layouts.list_pairs("folder", root, "test")]


# --- Measurements ----------------------------------------------------------------------------------------------


def global_context_effect(model: SimpleNet, image: jax.Array) -> jax.Array:
  """|g(x) − x| / |x| of the block in LGCR's slot, for the features x that reach it from `image` [1, H, W, 3]
  (H, W multiples of 4)."""
  features, _ = model.encode(image)
  return jnp.linalg.norm(model.lgcr(features) - features) / jnp.linalg.norm(features)


def effects(graphdef, params, blurred: list[np.ndarray], crop_size: int) -> dict[str, float]:
  """The global-context effect, averaged over the test images whole and over a centre crop of each at the
  training crop size."""
  effect = jax.jit(lambda params, image: global_context_effect(nnx.merge(graphdef, params), image))
  whole, crops = [], []
  for pixels in blurred:
    image = jnp.asarray(pixels[None], jnp.float32) / 255.0
    height, width = (image.shape[1] // 4) * 4, (image.shape[2] // 4) * 4
    whole.append(float(effect(params, image[:, :height, :width])))
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    crops.append(float(effect(params, image[:, top:top + crop_size, left:left + crop_size])))
  return {"on_crops": float(np.mean(crops)), "on_test_images": float(np.mean(whole))}


def forward_gflops(config: ml_collections.ConfigDict, size: int = 256) -> float:
  """XLA's FLOP count of one size² forward pass, with each deformable conv in one tile (a tiled one loops, and
  cost analysis counts a loop body once)."""
  model_config = ml_collections.ConfigDict(config.model.to_dict())
  model_config.dcn_tile_bytes = 0
  model = SimpleNet.from_config(model_config, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  image = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  compiled = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x)).lower(params, image).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 1e9


def scalars(workdir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """Every scalar the run wrote to TensorBoard: {tag: [(step, value)]}, in step order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (train.py has loaded it already)
  series: dict[str, list[tuple[int, float]]] = {}
  for path in sorted(workdir.glob("events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      for value in event.summary.value:
        number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
        series.setdefault(value.tag, []).append((int(event.step), number))
  return {tag: sorted(points) for tag, points in series.items()}


def run_variant(name: str, seed: int, budget: Budget, out: pathlib.Path, data_root: pathlib.Path,
                blurred: list[np.ndarray]) -> dict | None:
  """Trains (or resumes) one variant, evaluates it, and writes and returns its result; None when training
  was stopped (Ctrl-C, SIGTERM: its checkpoint is saved, and a rerun resumes it)."""
  run_dir = out / "runs" / f"{name}_seed{seed}"
  workdir = run_dir / "workdir"
  config = variant_config(name, seed, budget, data_root)
  start = time.perf_counter()
  if train.train_and_evaluate(config, workdir)["step"] < config.num_train_steps:
    return None
  train_seconds = time.perf_counter() - start
  start = time.perf_counter()
  summary = loop.evaluate_workdir(str(workdir), out=str(run_dir / "eval"), overwrite=True)  # its own folder
  eval_seconds = time.perf_counter() - start

  graphdef, initial = nnx.split(SimpleNet.from_config(config.model, rngs=nnx.Rngs(config.seed)))
  _, graphdef, trained, _ = inference.load_parameters(str(workdir))
  logged = scalars(workdir)
  rates = [v for _, v in logged.get("steps_per_sec", [])]
  result = {
      "variant": name, "seed": seed, "budget": dataclasses.asdict(budget),
      "model": model_overrides(VARIANT_SOURCES[name]),
      "params": int(sum(x.size for x in jax.tree.leaves(trained))),
      "gflops_256": forward_gflops(config),
      "step_ms": 1e3 / statistics.median(rates) if rates else None,
      "train_seconds": train_seconds, "eval_seconds": eval_seconds,
      "eval": {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
      "global_context_effect": {"initial": effects(graphdef, initial, blurred, config.data.crop_size),
                                "trained": effects(graphdef, trained, blurred, config.data.crop_size)},
      "curve": {"loss": logged.get("train/loss", []), "psnr": logged.get("train/psnr", [])},
  }
  (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
  return result


# --- Report ----------------------------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
  """mean ± half the range over seeds (just the value for one seed)."""
  mean = float(np.mean(values))
  return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {(max(values) - min(values)) / 2:.3f}"


def table(results: list[dict]) -> str:
  """The markdown table: one row per variant, means and spreads over its seeds."""
  full_ms = [r["step_ms"] for r in results if r["variant"] == "full" and r["step_ms"]]
  lines = ["| variant | table | seeds | PSNR dB | Δ input dB | worst image dB | SSIM matlab | SSIM python | "
           "colour shift | params | GFLOPs 256² | step time × full | g effect init → trained (crops / test) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, _, paper_table, label in VARIANTS:
    rows = [r for r in results if r["variant"] == name]
    if not rows:
      continue
    ev = [r["eval"] for r in rows]
    ms = [r["step_ms"] for r in rows if r["step_ms"]]
    ratio = f"{np.mean(ms) / np.mean(full_ms):.2f}" if ms and full_ms else "–"
    init = np.mean([r["global_context_effect"]["initial"]["on_crops"] for r in rows])
    crops = np.mean([r["global_context_effect"]["trained"]["on_crops"] for r in rows])
    whole = np.mean([r["global_context_effect"]["trained"]["on_test_images"] for r in rows])
    lines.append(
        f"| {label} | {paper_table} | {len(rows)} | {_spread([e['psnr'] for e in ev])} | "
        f"{_spread([e['psnr'] - e['input_psnr'] for e in ev])} | {_spread([e['worst_psnr_gain'] for e in ev])} | "
        f"{_spread([e['ssim_matlab'] for e in ev])} | {_spread([e['ssim_python'] for e in ev])} | "
        f"{_spread([e['colour_shift'] for e in ev])} | {rows[0]['params']:,} | {rows[0]['gflops_256']:.2f} | "
        f"{ratio} | {init:.1e} → {crops:.1e} / {whole:.1e} |")
  return "\n".join(lines) + "\n"


def common_seeds(results: list[dict]) -> list[int]:
  """The seeds every variant in `results` has run: curves compare like with like (a seed fixes the data order,
  and the batches' content moves training PSNR far more than any variant does)."""
  by_variant = [{r["seed"] for r in results if r["variant"] == name} for name in VARIANT_NAMES]
  return sorted(set.intersection(*[seeds for seeds in by_variant if seeds]))


def curves(results: list[dict], window: int = 5) -> dict[str, tuple[list[int], np.ndarray]]:
  """Training PSNR against steps per variant: mean over `common_seeds`, running mean over `window` log points.

  Only the steps that every run logged count (a run stopped and resumed also logged the step it stopped at).
  """
  seeds = common_seeds(results)
  runs = {name: [dict(r["curve"]["psnr"]) for r in results
                 if r["variant"] == name and r["seed"] in seeds and r["curve"]["psnr"]] for name in VARIANT_NAMES}
  logged = [set(run) for variant_runs in runs.values() for run in variant_runs]
  steps = sorted(set.intersection(*logged)) if logged else []
  out = {}
  for name, variant_runs in runs.items():
    if not variant_runs or not steps:
      continue
    values = np.mean([[run[step] for step in steps] for run in variant_runs], axis=0)
    width = min(window, len(values))
    out[name] = (steps[width - 1:], np.convolve(values, np.ones(width) / width, "valid"))
  return out


def curve_table(results: list[dict], points: int = 6) -> str:
  """The learning curves as markdown: each variant's running-mean training PSNR at `points` steps, and its
  difference from the full model's at the same steps (the same seeds, so the same batches)."""
  lines_by_variant = curves(results)
  if "full" not in lines_by_variant:
    return ""
  steps, full = lines_by_variant["full"]
  picks = sorted({int(round(i)) for i in np.linspace(0, len(steps) - 1, points)})
  header = " | ".join(f"step {steps[i]}" for i in picks)
  lines = [f"Training PSNR, running mean of 5 log points (dB), seeds {common_seeds(results)}; below the full "
           "model, each variant's difference from it:", "",
           f"| variant | {header} |", "|---|" + "---|" * len(picks)]
  for name, (_, values) in lines_by_variant.items():
    if name == "full":
      cells = [f"{full[i]:.2f}" for i in picks]
    else:
      cells = [f"{values[i] - full[i]:+.3f}" for i in picks]
    lines.append(f"| {VARIANT_LABELS[name]} | {' | '.join(cells)} |")
  return "\n".join(lines) + "\n"


def plot(results: list[dict], path: pathlib.Path) -> None:
  """Training PSNR against steps, one line per variant (`curves`)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  figure, axis = plt.subplots(figsize=(8, 5), dpi=100)
  for name, (steps, smooth) in curves(results).items():
    axis.plot(steps, smooth, label=VARIANT_LABELS[name], linestyle="--" if name.startswith("baseline") else "-")
  axis.set_xlabel("step")
  axis.set_ylabel("training PSNR (dB, running mean)")
  axis.set_title(f"SimpleNet ablation in miniature (built-in data, demo widths; seeds {common_seeds(results)})")
  axis.grid(alpha=0.3)
  axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def write_report(out: pathlib.Path) -> tuple[list[dict], str]:
  """results.json, results.md and curves.png in OUT, from every finished run; returns them and the table."""
  results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
  results.sort(key=lambda r: (VARIANT_NAMES.index(r["variant"]), r["seed"]))
  (out / "results.json").write_text(json.dumps({**environment(), "results": results}, indent=1) + "\n")
  markdown = table(results) + "\n" + curve_table(results)
  (out / "results.md").write_text(markdown)
  plot(results, out / "curves.png")
  return results, markdown


def _parse_args(argv):
  parser = argparse.ArgumentParser(prog="python benchmarks/ablation.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(ROOT / "benchmarks" / "ablation_runs"),
                      help="folder for the data, the runs and the report (rerun with it to resume)")
  parser.add_argument("--variants", nargs="+", default=list(VARIANT_NAMES), choices=VARIANT_NAMES)
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
  parser.add_argument("--steps", type=int, default=None, help=f"training steps per run (default {FULL.steps})")
  parser.add_argument("--smoke", action="store_true", help="tiny network, data and steps: seconds per variant")
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = _parse_args(argv)
  logging.getLogger("absl").setLevel(logging.WARNING)
  budget = SMOKE if args.smoke else FULL
  if args.steps is not None:
    if args.steps < 1:
      print(f"error: --steps must be at least 1, got {args.steps}.", file=sys.stderr)
      return 1
    budget = dataclasses.replace(budget, steps=args.steps)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  recorded = out / "budget.json"
  if recorded.is_file() and json.loads(recorded.read_text()) != json.loads(json.dumps(dataclasses.asdict(budget))):
    print(f"error: {out} holds runs of another budget ({recorded}); choose another --out or delete it.",
          file=sys.stderr)
    return 1
  recorded.write_text(json.dumps(dataclasses.asdict(budget)) + "\n")
  try:
    data_root = build_data(out, budget)
  except images.DatasetError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  blurred = test_images(data_root)
  todo = [(name, seed) for seed in args.seeds for name in args.variants]
  start = time.perf_counter()
  ran = 0
  for index, (name, seed) in enumerate(todo):
    if (out / "runs" / f"{name}_seed{seed}" / "result.json").is_file():
      print(f"[{index + 1}/{len(todo)}] {name} seed {seed}: done before, skipped", flush=True)
      continue
    result = run_variant(name, seed, budget, out, data_root, blurred)
    if result is None:
      print(f"stopped during {name} seed {seed}; run the same command to resume", flush=True)
      return 1
    ran += 1
    elapsed = time.perf_counter() - start
    eta = elapsed / ran * (len(todo) - index - 1)
    print(f"[{index + 1}/{len(todo)}] {name} seed {seed}: PSNR {result['eval']['psnr']:.2f} dB "
          f"(input {result['eval']['input_psnr']:.2f}) in {result['train_seconds'] + result['eval_seconds']:.0f} s; "
          f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.0f} min", flush=True)
  _, markdown = write_report(out)
  print(markdown)
  print(f"wrote {out / 'results.md'}, {out / 'results.json'}, {out / 'curves.png'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
