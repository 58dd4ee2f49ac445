#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh, with the torch extra for the PyTorch twin) and runs the test suite on every core (pytest-xdist; TEST_WORKERS=N picks
# the number, 0 runs in one process; at most 4, each holds its own JAX); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --torch
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" --maxprocesses=4 "$@"
