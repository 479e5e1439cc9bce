#!/usr/bin/env bash
# Idempotent environment set-up: a venv in .venv with rec_jax installed.
#   bash launch/setup_env.sh [cpu|gpu|tpu]
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-cpu}
[[ -d .venv ]] || python3 -m venv .venv
case "$target" in
  cpu) extra='[test]' ;;
  gpu) extra='[test,gpu]' ;;
  tpu) extra='[test,tpu]' ;;
  *) echo "usage: $0 [cpu|gpu|tpu]" >&2; exit 2 ;;
esac
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".${extra}"
.venv/bin/python -c 'import jax; print("jax", jax.__version__, jax.devices())'
