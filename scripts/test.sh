#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh, with the torch extra for the PyTorch twin and XLA:TPU and XLA:GPU for the compile tests) and runs the test suite on every
# core (pytest-xdist; TEST_WORKERS=N picks the number, 0 runs in one process; at most 4, each holds its own JAX).
#   bash scripts/test.sh          the whole suite (what CI runs)
#   bash scripts/test.sh --fast   the fast tier for the inner loop: everything not marked slow
# Other arguments go to pytest, e.g. bash scripts/test.sh --fast tests/test_metrics.py -k ssim
set -euo pipefail
cd "$(dirname "$0")/.."
tier=()
if [ "${1:-}" = "--fast" ]; then
  shift
  tier=(-m "not slow")
fi
bash scripts/setup.sh --torch --tpu --cuda
# tests/test_app.py drives the web demo in Debian's chromium (playwright without its own browser download).
if [ ${#tier[@]} -eq 0 ] && ! command -v chromium >/dev/null; then
  echo "setup: installing Debian's chromium for the browser test (tests/test_app.py; a minute or two)" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq chromium >/dev/null || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }
fi
# worksteal: an idle worker takes queued tests from a busy one, so the long end-to-end tests do not leave one core idle at the end.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-auto}" --maxprocesses=4 --dist worksteal "${tier[@]}" "$@"
