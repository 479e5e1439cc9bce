"""Multi-host: two processes of 4 CPU devices each run one 4x2 mesh (gloo
collectives), each loading only its own rows, and write one checkpoint;
the results equal a one-device run, and a one-device process restores the
two-process checkpoint (resharding) to the same metrics."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO
from rec_jax import distributed

METRICS = ('hr@10', 'ndcg@10', 'mrr')


def _main(workdir, *extra, env=None, devices=4):
  env = dict(os.environ, **(env or {}), JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen(
      [sys.executable, '-m', 'rec_jax.main', '--config=configs/sasrec.py:smoke',
       f'--workdir={workdir}', '--config.checkpoint.async_save=false',
       *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def _results(workdir):
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    return json.load(f)


def test_two_processes_equal_one_device(tmp_path):
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  multi = str(tmp_path / 'multi')
  procs = [_main(multi, '--config.mesh.data=4', '--config.mesh.model=2',
                 env=dict(REC_JAX_COORDINATOR=f'127.0.0.1:{port}',
                          REC_JAX_NUM_PROCESSES='2',
                          REC_JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  single = str(tmp_path / 'single')
  one = _main(single, '--config.mesh.data=1', devices=1)
  for p in procs + [one]:
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, out[-3000:]
  m, s = _results(multi), _results(single)
  for split in ('valid', 'test'):
    for k in METRICS:
      assert m[split][k] == pytest.approx(s[split][k], abs=2e-3), (split, k)
  # The checkpoint the two processes wrote, restored by one process on one
  # device, evaluates to the same numbers.
  os.remove(os.path.join(multi, 'results.json'))
  again = _main(multi, '--stage=eval', '--config.mesh.data=1', devices=1)
  out, _ = again.communicate(timeout=900)
  assert again.returncode == 0, out[-3000:]
  r = _results(multi)
  for k in METRICS:
    assert r['test'][k] == pytest.approx(m['test'][k], abs=1e-6), k


def test_launch_detection():
  assert distributed.launch_kwargs({}) is None
  assert distributed.launch_kwargs({'TPU_WORKER_HOSTNAMES': 'a'}) is None
  assert distributed.launch_kwargs({'TPU_WORKER_HOSTNAMES': 'a,b'}) == {}
  assert distributed.launch_kwargs({'SLURM_NTASKS': '4'}) == {}
  assert distributed.launch_kwargs({'REC_JAX_DISTRIBUTED': '1'}) == {}
  env = dict(REC_JAX_COORDINATOR='h:1234', REC_JAX_NUM_PROCESSES='4',
             REC_JAX_PROCESS_ID='3')
  assert distributed.launch_kwargs(env) == dict(
      coordinator_address='h:1234', num_processes=4, process_id=3)
  with pytest.raises(ValueError, match='set all of'):
    distributed.launch_kwargs({'REC_JAX_COORDINATOR': 'h:1'})
  with pytest.raises(ValueError, match='not in 0..3'):
    distributed.launch_kwargs(dict(env, REC_JAX_PROCESS_ID='4'))
