#!/usr/bin/env bash
# Creates .venv in the repository root with the pinned dependencies (requirements.txt: the lock of the `all`
# extra, every task's) and this package (editable);
# `--torch` adds the torch extra (requirements-torch.txt: the PyTorch twin that the tests compare with);
# `--tpu` adds XLA:TPU (requirements-tpu.txt: libtpu) in .venv/libtpu, outside the import path, for
# benchmarks/tpu_compile.py only: CPU runs never load it (on a TPU VM, install the tpu extra instead);
# `--cuda` adds XLA:GPU's compiler (requirements-cuda.txt: JAX's CUDA plugin and ptxas, no runtime) in .venv/cuda,
# likewise outside the import path, for `benchmarks/tpu_compile.py --gpu`.
# Idempotent: a second run installs nothing unless a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: simplenet-jax needs Python >= 3.11, but $PYTHON is $("$PYTHON" --version 2>&1); set PYTHON=python3.11." >&2
  exit 1
fi
# A full disk mid-install leaves pip's OSError and a half-installed venv; say it first, in one sentence.
# The sizes are what each step added to a venv on x86_64, plus room for pip's unpacking.
need_space() {  # need_space GB WHAT
  local free_gb
  free_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$1" ]; then
    echo "error: setup needs about $1 GB free for $2, but only $free_gb GB are free here; free some space and rerun." >&2
    exit 1
  fi
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.requirements.txt
if ! cmp -s requirements.txt "$stamp"; then
  need_space 5 "the pinned dependencies (requirements.txt)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps -e .
  cp requirements.txt "$stamp"
fi
# outside_venv NAME FOLDER GB WHAT MESSAGE: requirements-NAME.txt into .venv/FOLDER (outside the import path),
# through a partial folder renamed when complete; again only when the requirements file changed.
outside_venv() {
  if ! cmp -s "requirements-$1.txt" ".venv/.requirements-$1.txt"; then
    need_space "$3" "$4"
    echo "setup: installing $5" >&2
    rm -rf ".venv/$2.partial"
    .venv/bin/python -m pip install --quiet --no-deps --target ".venv/$2.partial" -r "requirements-$1.txt"
    rm -rf ".venv/$2" && mv ".venv/$2.partial" ".venv/$2"
    cp "requirements-$1.txt" ".venv/.requirements-$1.txt"
  fi
}
for flag in "$@"; do
  case "$flag" in
    --torch)
      if ! cmp -s requirements-torch.txt .venv/.requirements-torch.txt; then
        need_space 9 "PyTorch and torchvision (a CUDA build of about 5.6 GB, the one the registry serves on x86_64)"
        echo "setup: installing PyTorch and torchvision for the twin tests (requirements-torch.txt; a few minutes)" >&2
        .venv/bin/python -m pip install --quiet -r requirements-torch.txt
        cp requirements-torch.txt .venv/.requirements-torch.txt
      fi ;;
    --tpu) outside_venv tpu libtpu 1 "XLA:TPU (libtpu)" "XLA:TPU (libtpu, ~250 MB) in .venv/libtpu for benchmarks/tpu_compile.py" ;;
    --cuda) outside_venv cuda cuda 2 "XLA:GPU's compiler (JAX's CUDA plugin)" "XLA:GPU's compiler (~600 MB) in .venv/cuda for benchmarks/tpu_compile.py --gpu" ;;
    *) echo "error: scripts/setup.sh takes --torch, --tpu and --cuda, not $flag." >&2; exit 2 ;;
  esac
done
