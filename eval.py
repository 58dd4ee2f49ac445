"""Evaluation entry point: `python eval.py --workdir DIR`.

Evaluation of a trained workdir (`simplenet_jax.evaluate`) follows training (issue #6); until it lands this
script says so. The metrics themselves are in `simplenet_jax.metrics` and are tested.
"""

import sys

if __name__ == "__main__":
  sys.exit("eval.py: evaluation of a workdir is not implemented yet (issue #6); see README.md.")
