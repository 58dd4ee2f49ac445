#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then show the model that the paper describes.
# (Demo data, training and evaluation join this script as those parts land.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m simplenet_jax.summary --config configs/gopro.py
