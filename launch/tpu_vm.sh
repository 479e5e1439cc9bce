#!/usr/bin/env bash
# Runs one rec_jax command on every worker of a Cloud TPU VM (single host or
# pod slice), after making sure the code and environment are there.
#
#   launch/tpu_vm.sh NAME ZONE [--project=P] -- \
#       --config=configs/recommended.py:dataset=beauty --workdir=gs://b/run
#
# Everything after `--` goes to `python -m rec_jax.main` (the same command
# as on a laptop). The repository is copied to ~/rec_jax on each worker
# (`gcloud compute tpus tpu-vm scp --worker=all`), launch/setup_env.sh tpu
# installs it (idempotent), then the command starts on all workers at once
# through `ssh --worker=all`; JAX finds the other hosts itself
# (rec_jax.distributed). Set REC_JAX_DATA_DIR to a path (or gs:// bucket
# mounted) that every worker can read. DRY_RUN=1 prints the gcloud commands.
set -euo pipefail
if [[ $# -lt 3 ]]; then
  sed -n '2,15p' "$0" >&2; exit 2
fi
name=$1; zone=$2; shift 2
gcloud_args=()
while [[ $# -gt 0 && $1 != -- ]]; do gcloud_args+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
[[ $# -gt 0 ]] || { echo "tpu_vm.sh: no rec_jax.main arguments after --" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
run() { if [[ -n ${DRY_RUN:-} ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all \
    "${gcloud_args[@]}" --command="$1"
}
tarball=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$tarball"' EXIT
# The project's own files (tracked or new, never what .gitignore lists:
# venvs, workdirs, caches).
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
   tar --null -T - -czf "$tarball")
run gcloud compute tpus tpu-vm scp "$tarball" "$name:~/rec_jax.tar.gz" \
  --zone="$zone" --worker=all "${gcloud_args[@]}"
ssh_all 'mkdir -p ~/rec_jax && tar -C ~/rec_jax -xzf ~/rec_jax.tar.gz && bash ~/rec_jax/launch/setup_env.sh tpu'
cmd="cd ~/rec_jax && REC_JAX_DATA_DIR=${REC_JAX_DATA_DIR:-} .venv/bin/python -m rec_jax.main"
for a in "$@"; do cmd+=" $(printf '%q' "$a")"; done
ssh_all "$cmd"
