"""What holds the demo model back from its targets: the gate, the network, or blur itself.

Three measurements, all but the first on pairs synthesized here from the demo's *training* photos (never a
test photo) by the project's own synthesizer, in bands of camera path length (0–1, 1–2, 2–4, 4–12, 20–30 px),
so that nothing is tuned on either test set:

1. **oracle**: from a workdir's evaluations with and without its gate (`eval.py`, `eval.py --no-gate`, on the
   demo split and on `data/independent`), the mean gain a perfect gate would give the same network: every
   image changed where its residual helps, none of the nearly sharp band (which must stay within ±0.05 dB).
2. **gate**: the share of each band that a decision from one image's content opens, at the threshold above
   every held-out nearly sharp image (0–1 px, and the sharp targets): the workdir's trained gate, and a
   logistic regression on 39 multi-scale gradient statistics (power means, quantiles, Laplacian energies,
   edge widths) fitted on the pairs of half the groups and scored on the other half. The trained gate's own
   threshold (logit 0) is shown too, with the nearly sharp images it opens.
3. **linear**: the mean gain of the best 21×21 linear filter per band (least squares on half the groups'
   pairs, applied to the other half's whole images): how much of a band a fixed sharpening undoes.

    python benchmarks/demo_limits.py --workdir workdirs/demo --json demo_limits.json
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import re
import sys

import numpy as np

import common  # noqa: F401  (puts the repository on sys.path)

BANDS = {"0-1": (0.0, 1.0), "1-2": (1.0, 2.0), "2-4": (2.0, 4.0), "4-12": (4.0, 12.0), "20-30": (20.0, 30.0)}
NEARLY_SHARP = ("target", "0-1")  # what a gate must leave alone
FILTER_SIZE = 21
FILTER_SAMPLES = 3000  # pixels per training image for the least-squares fit


# 1. oracle ---------------------------------------------------------------------------------------------------

def read_gains(results_csv: pathlib.Path) -> dict[tuple[str, str], float]:
  """{(scene, name): PSNR gain in dB} of an evaluation's results.csv."""
  with open(results_csv, newline="", encoding="utf-8") as file:
    return {(row["scene"], row["name"]): float(row["psnr"]) - float(row["input_psnr"])
            for row in csv.DictReader(file)}


def oracle_gain(gated: dict, ungated: dict, left_alone: set) -> dict[str, float]:
  """Mean gains over the images: gated, ungated, and a perfect gate's (the ungated gain where it is positive,
  0 elsewhere and on every image in `left_alone`)."""
  if set(gated) != set(ungated):
    raise ValueError("the gated and ungated evaluations scored different images; evaluate the same data twice.")
  keys = sorted(gated)
  oracle = [0.0 if key in left_alone else max(ungated[key], 0.0) for key in keys]
  return {"images": len(keys), "gated_db": float(np.mean([gated[k] for k in keys])),
          "ungated_db": float(np.mean([ungated[k] for k in keys])), "oracle_db": float(np.mean(oracle))}


def oracle_rows(workdir: pathlib.Path, demo_data: str = "data/demo",
                independent_data: str = "data/independent") -> list[dict]:
  """One row per test set whose gated and `-no-gate` evaluations are both in the workdir (latest step); each
  set's nearly sharp pairs (`evaluation.bands`, from its meta.json) are left alone."""
  from simplenet_jax.evaluation import bands  # pylint: disable=import-outside-toplevel
  rows = []
  for name, suffix, root in (("demo split", "", demo_data), ("independent", "-independent", independent_data)):
    # step_N-no-gate, not step_N-independent-no-gate for the demo split
    pattern = re.compile(rf"step_(\d+){suffix}-no-gate")
    evals = sorted((path for path in (workdir / "eval").glob("step_*/results.csv")
                    if pattern.fullmatch(path.parent.name)),
                   key=lambda path: int(pattern.fullmatch(path.parent.name).group(1)))
    if not evals:
      continue
    ungated_csv = evals[-1]
    gated_csv = ungated_csv.parent.with_name(ungated_csv.parent.name.removesuffix("-no-gate")) / "results.csv"
    if not gated_csv.exists():
      continue
    gated, ungated = read_gains(gated_csv), read_gains(ungated_csv)
    band = bands.pair_bands(root)
    if not band:  # without them the nearly sharp pairs would count as opened: a wrong row, not a missing one
      raise ValueError(f"{root} has no meta.json with its test pairs' blur; pass the {name}'s data folder "
                       f"({'--demo-data' if not suffix else '--independent-data'}).")
    left_alone = {key for key in gated if band.get("/".join(key)) == bands.BANDS[0][0]}  # "nearly sharp"
    rows.append({"set": name, **oracle_gain(gated, ungated, left_alone)})
  return rows


# 2. gate -----------------------------------------------------------------------------------------------------

def synthesize(groups: int, size: int, seed: int) -> list[dict]:
  """Per group, one training photo's crop in every band (and its sharp target), as the demo's pairs are made
  (`dataset.TRAIN_BLUR`, augmented), the path length drawn uniformly within the band."""
  from simplenet_jax.data.synthesis import camera_shake, dataset, pairs, sources  # pylint: disable=import-outside-toplevel
  photos = sources.builtin_photos()["train"]
  loaded = {}
  out = []
  for group in range(groups):
    for b, (band, (low, high)) in enumerate(BANDS.items()):
      rng = np.random.default_rng([seed, group, b])
      photo = photos[(group * len(BANDS) + b) % len(photos)].ref
      if photo not in loaded:
        loaded[photo] = sources.load_photo(photo)
      shake = camera_shake.random_shake(rng, rng.uniform(low, high), (size, size), dataset.TRAIN_BLUR)
      pair = pairs.synthesize_pair(loaded[photo], rng, size, size, dataset.TRAIN_BLUR, shake=shake,
                                   augment=pairs.Augmentations())
      out.append({"group": group, "band": band, "image": pair.blur, "sharp": pair.sharp})
      if band == "4-12":
        out.append({"group": group, "band": "target", "image": pair.sharp, "sharp": pair.sharp})
  return out


def image_statistics(pixels: np.ndarray) -> np.ndarray:
  """39 numbers from an RGB uint8 image: at scales 1, 1/2 and 1/4 of its luma, the gradient magnitude's power
  means (p = 1, 2, 4, 8) and quantiles (0.5, 0.9, 0.99, 0.999), the Laplacian's (p = 2, 4), and quantiles of
  the edge width (gradient over the 5×5 range) at the strongest tenth of edges, all in logs but the last."""
  import scipy.ndimage as ndi  # pylint: disable=import-outside-toplevel
  luma = pixels.astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
  stats = []
  for scale in (1, 2, 4):
    h, w = luma.shape[0] // scale * scale, luma.shape[1] // scale * scale
    y = luma[:h, :w].reshape(h // scale, scale, w // scale, scale).mean(axis=(1, 3))
    g = np.hypot(np.diff(y, axis=1)[:-1], np.diff(y, axis=0)[:, :-1])
    stats += [np.log(np.mean(g ** p) + 1e-12) / p for p in (1, 2, 4, 8)]
    stats += list(np.log(np.quantile(g, [0.5, 0.9, 0.99, 0.999]) + 1e-6))
    laplacian = ndi.laplace(y)[2:-2, 2:-2]
    stats += [np.log(np.mean(laplacian ** 2) + 1e-12) / 2, np.log(np.mean(laplacian ** 4) + 1e-20) / 4]
    spread = ndi.maximum_filter(y, 5) - ndi.minimum_filter(y, 5)
    strong = spread > np.quantile(spread, 0.9)
    sobel = np.hypot(ndi.sobel(y, 1), ndi.sobel(y, 0)) / 8
    stats += list(np.quantile((sobel / (spread + 1e-6))[strong], [0.5, 0.9, 0.99]))
  return np.asarray(stats)


def open_shares(scores: np.ndarray, bands: np.ndarray, held_out: np.ndarray, threshold: float | None) -> dict:
  """{band: share of its held-out images with a score above the threshold (None without any)}; threshold None:
  the one above every held-out nearly sharp image (target or 0–1 px), so that none of them opens."""
  if threshold is None:
    threshold = float(scores[held_out & np.isin(bands, NEARLY_SHARP)].max())
  shares = {}
  for band in ("target", *BANDS):
    chosen = held_out & (bands == band)
    shares[band] = float(np.mean(scores[chosen] > threshold)) if chosen.any() else None  # printed as "–"
  return {"threshold": threshold, **shares}


def trained_gate_logits(workdir: pathlib.Path, images: list[np.ndarray]) -> np.ndarray | None:
  """The workdir's gate logit of each image, or None when its network has no gate."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from simplenet_jax import inference  # pylint: disable=import-outside-toplevel
  _, graphdef, params, _ = inference.load_parameters(workdir)
  if nnx.merge(graphdef, params).gate is None:
    return None
  logit = jax.jit(lambda p, x: nnx.merge(graphdef, p).gate_logit_of(x))
  return np.asarray([float(logit(params, jnp.asarray(image, jnp.float32)[None] / 255)[0, 0]) for image in images])


def gate_rows(pairs_: list[dict], workdir: pathlib.Path | None) -> list[dict]:
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  bands = np.asarray([p["band"] for p in pairs_])
  groups = np.asarray([p["group"] for p in pairs_])
  held_out = groups % 2 == 1
  stats = np.stack([image_statistics(p["image"]) for p in pairs_])
  # fitted as a gate would learn from training pairs: every blurred input against every sharp target
  fit = ~held_out & np.isin(bands, ("target", "1-2", "2-4", "4-12", "20-30"))
  model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=10000))
  model.fit(stats[fit], bands[fit] != "target")
  rows = [{"gate": "image statistics, logistic", **open_shares(model.decision_function(stats), bands, held_out, None)}]
  logits = None if workdir is None else trained_gate_logits(workdir, [p["image"] for p in pairs_])
  if logits is not None:
    rows.append({"gate": "the workdir's gate, logit > 0", **open_shares(logits, bands, held_out, 0.0)})
    rows.append({"gate": "the workdir's gate", **open_shares(logits, bands, held_out, None)})
  return rows


# 3. linear ---------------------------------------------------------------------------------------------------

def _windows(channel: np.ndarray) -> np.ndarray:
  r = FILTER_SIZE // 2
  return np.lib.stride_tricks.sliding_window_view(np.pad(channel, r, mode="reflect"), (FILTER_SIZE, FILTER_SIZE))


def psnr(image: np.ndarray, sharp: np.ndarray) -> float:
  return float(10 * np.log10(255.0 ** 2 / np.mean((image.astype(np.float64) - sharp.astype(np.float64)) ** 2)))


def linear_filter_gain(train: list[dict], test: list[dict], seed: int = 0) -> float:
  """Mean PSNR gain on `test` of the 21×21 filter whose output, added to each channel, best fits (least
  squares, lightly regularised) the sharp minus the blurred pixels of random pixels of `train`."""
  rng = np.random.default_rng(seed)
  rows, targets = [], []
  for pair in train:
    blur, sharp = pair["image"].astype(np.float64) / 255, pair["sharp"].astype(np.float64) / 255
    for channel in range(3):
      windows = _windows(blur[..., channel])
      ys = rng.integers(0, blur.shape[0], FILTER_SAMPLES // 3)
      xs = rng.integers(0, blur.shape[1], FILTER_SAMPLES // 3)
      rows.append(windows[ys, xs].reshape(len(ys), -1))
      targets.append(sharp[ys, xs, channel] - blur[ys, xs, channel])
  a, t = np.concatenate(rows), np.concatenate(targets)
  weights = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ t).reshape(FILTER_SIZE, FILTER_SIZE)
  gains = []
  for pair in test:
    blur = pair["image"].astype(np.float64) / 255
    out = np.stack([blur[..., c] + np.einsum("hwij,ij->hw", _windows(blur[..., c]), weights) for c in range(3)], -1)
    out = np.clip(np.round(out * 255), 0, 255)
    gains.append(psnr(out, pair["sharp"]) - psnr(pair["image"], pair["sharp"]))
  return float(np.mean(gains))


def linear_rows(pairs_: list[dict]) -> list[dict]:
  rows = []
  for band in ("2-4", "4-12", "20-30"):
    chosen = [p for p in pairs_ if p["band"] == band]
    train, test = [p for p in chosen if p["group"] % 2 == 0], [p for p in chosen if p["group"] % 2 == 1]
    rows.append({"band": band, "images": len(test), "gain_db": linear_filter_gain(train, test)})
  return rows


# ------------------------------------------------------------------------------------------------------------

def _parse_args(argv):
  parser = argparse.ArgumentParser(prog="python benchmarks/demo_limits.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="workdirs/demo",
                      help="a trained demo workdir, evaluated with and without --no-gate on both sets for the "
                           "oracle rows (default: %(default)s); 'none' skips the rows that need one")
  parser.add_argument("--demo-data", default="data/demo",
                      help="the demo's data, for its test pairs' blur bands (default: %(default)s)")
  parser.add_argument("--independent-data", default="data/independent",
                      help="the independent test set, for its pairs' blur bands (default: %(default)s)")
  parser.add_argument("--groups", type=int, default=60, help="training photos' crops per band (default: %(default)s)")
  parser.add_argument("--size", type=int, default=256, help="crop side in pixels (default: %(default)s)")
  parser.add_argument("--seed", type=int, default=2026, help="not data/demo's seed (default: %(default)s)")
  parser.add_argument("--json", help="also write the rows to this JSON file")
  args = parser.parse_args(argv)
  if args.groups < 2 or args.size < 32:
    parser.error("--groups must be at least 2 (half fit, half scored) and --size at least 32.")
  return args


def main(argv=None) -> int:
  args = _parse_args(argv)
  workdir = None if args.workdir == "none" else pathlib.Path(args.workdir)
  if workdir is not None and not (workdir / "checkpoints").is_dir():
    sys.exit(f"error: {workdir} holds no trained model; train one (bash scripts/demo.sh) or pass --workdir none.")
  try:
    oracle = [] if workdir is None else oracle_rows(workdir, args.demo_data, args.independent_data)
  except ValueError as error:
    sys.exit(f"error: {error}")
  if oracle:
    common.print_table("1. oracle: mean gain (dB) of the same network, gated / ungated / with a perfect gate",
                       [("set", "set", "s"), ("images", "images", "d"), ("gated", "gated_db", "+.3f"),
                        ("ungated", "ungated_db", "+.3f"), ("perfect gate", "oracle_db", "+.3f")], oracle)
  elif workdir is not None:
    print(f"1. oracle: no ungated evaluation in {workdir}/eval; run eval.py --workdir {workdir} --no-gate (and "
          "again with --data data/independent) for these rows.")
  pairs_ = synthesize(args.groups, args.size, args.seed)
  gates = gate_rows(pairs_, workdir)
  band_columns = [(band if band != "target" else "sharp", band, ".2f") for band in ("target", *BANDS)]
  common.print_table(f"\n2. gate: share of each band opened ({args.groups // 2} held-out crops per band)",
                     [("gate", "gate", "s"), ("threshold", "threshold", "+.2f"), *band_columns], gates)
  linear = linear_rows(pairs_)
  common.print_table(f"\n3. linear: mean gain (dB) of the best {FILTER_SIZE}×{FILTER_SIZE} filter per band",
                     [("band (px)", "band", "s"), ("images", "images", "d"), ("gain", "gain_db", "+.3f")], linear)
  common.write_json(args.json, {"benchmark": "demo_limits", "groups": args.groups, "size": args.size,
                                "seed": args.seed, "oracle": oracle, "gate": gates, "linear": linear})
  return 0


if __name__ == "__main__":
  sys.exit(main())
