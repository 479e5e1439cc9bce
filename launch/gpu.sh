#!/usr/bin/env bash
# Runs rec_jax on the GPUs of one node, or of several nodes.
#
#   One node, all its GPUs (one process sees every local GPU):
#     launch/gpu.sh --config=configs/recommended.py:dataset=beauty --workdir=/runs/b
#
#   Several nodes: run the same line on every node with
#     NUM_NODES=2 NODE_RANK=0|1 COORDINATOR=host0:12345 launch/gpu.sh ...
#   (node 0's address; SLURM: srun sets SLURM_NTASKS / SLURM_PROCID and JAX
#   detects it, no variables needed). One process per node drives all its
#   GPUs; the mesh spans every GPU of every node (config.mesh, -1 = rest).
#
# Sets up the environment first (launch/setup_env.sh gpu, idempotent).
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[[ $# -gt 0 ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
nodes=${NUM_NODES:-1}
env_vars=()
if [[ $nodes -gt 1 ]]; then
  : "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1) on every node}"
  : "${COORDINATOR:?set COORDINATOR=host:port (node 0) on every node}"
  env_vars=(REC_JAX_COORDINATOR="$COORDINATOR" REC_JAX_NUM_PROCESSES="$nodes"
            REC_JAX_PROCESS_ID="$NODE_RANK")
fi
cmd=(env "${env_vars[@]}" XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
     .venv/bin/python -m rec_jax.main "$@")
if [[ -n ${DRY_RUN:-} ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
bash launch/setup_env.sh gpu
exec "${cmd[@]}"
