"""Training entry point: `python train.py --config configs/gopro.py --workdir DIR`.

The training loop (`simplenet_jax.train.train_and_evaluate`) is the next piece of work (issue #5); until it
lands this script says so instead of pretending to train.
"""

import sys

if __name__ == "__main__":
  sys.exit("train.py: training is not implemented yet (issue #5); see README.md for what runs today.")
