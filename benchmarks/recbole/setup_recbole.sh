#!/usr/bin/env bash
# Creates (or refreshes) the RecBole peer's own venv, benchmarks/.venv-recbole.
#
# RecBole is a PyTorch library with pins that clash with the JAX project, so it
# lives in a separate venv; this script never touches the project's .venv.
# Safe to rerun: an existing venv is reused and pip skips what is installed.
#
# Usage: bash benchmarks/recbole/setup_recbole.sh
# Env:   PYTHON  interpreter to build the venv from (default: python3.11).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${repo_root}/benchmarks/.venv-recbole"
python="${PYTHON:-python3.11}"

if [[ ! -x "${venv}/bin/python" ]]; then
  echo "Creating ${venv} with $("${python}" --version)"
  "${python}" -m venv "${venv}"
fi
# The pins below were measured on 3.11, and a reused venv from another minor
# version would silently keep the wrong ABI: refuse both.
have="$("${venv}/bin/python" -c \
  'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ "${have}" != "3.11" ]]; then
  echo "error: ${venv} uses Python ${have}, expected 3.11;" \
    "delete it and rerun with PYTHON=<a python3.11>" >&2
  exit 1
fi

pip=("${venv}/bin/python" -m pip)

# torch first and pinned: left to recbole's unpinned requirement, pip resolves
# a multi-GB CUDA build. On this machine 2.13.0 is a local CPU wheel.
"${pip[@]}" install --quiet "torch==2.13.0"

# recbole 1.2.1 predates numpy 2 (uses np.float_), pandas 3 (in-place fillna on
# column views) and setuptools 81 (ray, imported by recbole.quick_start, needs
# pkg_resources). Repeating the torch pin stops the resolver from swapping it.
"${pip[@]}" install --quiet \
  "torch==2.13.0" \
  "recbole==1.2.1" \
  "numpy<2" \
  "pandas<3" \
  "setuptools<81"

"${venv}/bin/python" - <<'PY'
import sys
import numpy
import pandas
import recbole
import torch
print(f'python   {sys.version.split()[0]}')
print(f'torch    {torch.__version__}')
print(f'recbole  {recbole.__version__}')
print(f'numpy    {numpy.__version__}')
print(f'pandas   {pandas.__version__}')
PY
