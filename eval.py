"""Evaluates a trained workdir at full resolution: `python eval.py --workdir DIR [--data DIR] [...]`.

Writes results.csv (one row per image) and summary.json (means) to --out (default WORKDIR/eval/step_N) and
prints the means; on RealBlur-J the headline is RealBlur's own protocol (each output ECC-aligned to its
sharp image, scored over the valid region), with the unaligned figures beside it. --save-images adds the outputs and the worst and best images side by side with their input
and target. Consecutive images of one size are batched (--batch-size); the network compiles once per size.
The work is in `simplenet_jax.evaluation.loop.evaluate_workdir`.
"""

import argparse
import logging
import sys

from simplenet_jax import extras

extras.require("train", "eval.py", "grain", "array_record", "tensorflow_datasets")  # it reads data sets
from simplenet_jax import tiling  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.evaluation import loop  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top,wrong-import-position
from simplenet_jax.evaluation import reports  # pylint: disable=g-import-not-at-top,wrong-import-position


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="the training workdir (holding checkpoints/)")
  parser.add_argument("--data", help="a GoPro-layout folder (a root holding test/, or test/ itself); default: "
                      "the test split of the config the model was trained with")
  parser.add_argument("--dataset", choices=("gopro", "realblur_j", "folder"), help="layout of --data")
  parser.add_argument("--out", help="output folder; default WORKDIR/eval/step_N (step_N-<data folder's name> "
                      "with --data)")
  parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in --out")
  parser.add_argument("--convention", choices=("matlab", "python", "both"), default="both",
                      help="SSIM convention (SPEC §5); default both")
  parser.add_argument("--align", choices=("auto", "on", "off"), default="auto",
                      help="RealBlur's protocol: align each output (and input) to its sharp image by an ECC "
                      "homography and score the valid region, beside the unaligned scores; auto: on for "
                      "realblur_j only")
  parser.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
  parser.add_argument("--save-images", action="store_true",
                      help="also write the deblurred PNGs (OUT/images/) and blur | output | sharp pictures of the "
                      "worst and best images by PSNR gain over the input (OUT/worst/, OUT/best/)")
  parser.add_argument("--worst-best", type=int, default=3, metavar="N",
                      help="how many worst and best pictures --save-images writes; default 3")
  parser.add_argument("--batch-size", type=int, default=1, help="images of one size deblurred per network call "
                      "(the same results; raise it on an accelerator with memory to spare); default 1")
  parser.add_argument("--ensemble", action="store_true", help="average over 8 flips/rotations (8× slower)")
  parser.add_argument("--no-gate", dest="gate", action="store_false",
                      help="apply the residual to every image, whatever the demo's gate decides (what its network "
                      "does without the gate; the default --out gains the suffix -no-gate); no effect on the "
                      "paper's network")
  parser.add_argument("--tile", type=int, default=0, help="tile size in pixels (0: whole images)")
  parser.add_argument("--overlap", type=int, default=tiling.DEFAULT_OVERLAP,
                      help="overlap of neighbouring tiles (blended)")
  args = parser.parse_args(argv)
  logging.getLogger("absl").setLevel(logging.ERROR)  # orbax's notes about read-only checkpoint folders
  conventions = metrics.CONVENTIONS if args.convention == "both" else (args.convention,)
  try:
    summary = loop.evaluate_workdir(args.workdir, data_root=args.data, dataset=args.dataset, out=args.out,
                                        conventions=conventions, checkpoint=args.checkpoint,
                                        save_images=args.save_images, worst_best=args.worst_best,
                                        batch_size=args.batch_size, ensemble=args.ensemble,
                                        tile=args.tile, overlap=args.overlap,
                                        aligned={"auto": None, "on": True, "off": False}[args.align],
                                        overwrite=args.overwrite, gate=args.gate)
  except ValueError as error:
    print(f"error: {error}", file=sys.stderr)
    return 1
  print(reports.summary_text(summary, saved_images=args.save_images))
  return 0


if __name__ == "__main__":
  sys.exit(main())
