#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, synthesize the built-in demo data and build it with its TFDS
# builder (each skipped when already complete), train configs/demo.py in workdirs/demo (resumed if
# interrupted), and evaluate it on the demo's test split and on the independent test set (photos from other
# wheels, blurred by another generator; never trained on). Extra arguments go to train.py, e.g.
# --config.num_train_steps=200.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m simplenet_jax.data.synthesize --out data/demo
.venv/bin/python -m simplenet_jax.data.prepare --dataset folder --source data/demo  # TFDS build in data/demo_tfds
.venv/bin/python -m simplenet_jax.data.synthesize --independent --out data/independent
.venv/bin/python train.py --config configs/demo.py --workdir workdirs/demo "$@"
.venv/bin/python eval.py --workdir workdirs/demo
.venv/bin/python eval.py --workdir workdirs/demo --data data/independent
