"""The launch scripts build the commands the README shows (dry runs)."""

import os
import subprocess

from conftest import REPO


def _dry(script, *args, **env):
  out = subprocess.run(['bash', os.path.join(REPO, 'launch', script), *args],
                       env=dict(os.environ, DRY_RUN='1', **env),
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  return out.stdout


def test_gpu_single_and_multi_node():
  one = _dry('gpu.sh', '--config=configs/sasrec.py', '--workdir=/tmp/x')
  assert '-m rec_jax.main --config=configs/sasrec.py --workdir=/tmp/x' in one
  assert 'REC_JAX_COORDINATOR' not in one
  two = _dry('gpu.sh', '--config=configs/sasrec.py', '--workdir=/tmp/x',
             NUM_NODES='2', NODE_RANK='1', COORDINATOR='node0:1234')
  for part in ('REC_JAX_COORDINATOR=node0:1234', 'REC_JAX_NUM_PROCESSES=2',
               'REC_JAX_PROCESS_ID=1'):
    assert part in two
  bad = subprocess.run(['bash', os.path.join(REPO, 'launch', 'gpu.sh'),
                        '--workdir=/tmp/x'],
                       env=dict(os.environ, DRY_RUN='1', NUM_NODES='2'),
                       capture_output=True, text=True, timeout=60)
  assert bad.returncode != 0 and 'NODE_RANK' in bad.stderr


def test_tpu_vm_runs_the_same_command_on_every_worker():
  out = _dry('tpu_vm.sh', 'my-tpu', 'us-central2-b', '--project=p', '--',
             '--config=configs/recommended.py:dataset=beauty',
             '--workdir=gs://bucket/run')
  lines = out.strip().splitlines()
  assert lines[0].startswith('gcloud compute tpus tpu-vm scp')
  assert all('--worker=all' in l for l in lines)
  assert 'setup_env.sh\\ tpu' in lines[1]
  assert ('-m\\ rec_jax.main\\ --config=configs/recommended.py:'
          'dataset=beauty\\ --workdir=gs://bucket/run') in lines[2]


def test_ci_runs_the_readme_test_line_and_refuses_any_other(tmp_path):
  """.ci/run executes line 2 of the README's first code block, and only
  when that line is the pytest command."""
  (tmp_path / '.ci').mkdir()
  run = tmp_path / '.ci' / 'run'
  run.write_text(open(os.path.join(REPO, '.ci', 'run')).read())
  shared = tmp_path.parent / 'shared' / 'data'
  def ci(second_line):
    (tmp_path / 'README.md').write_text(
        f'# x\n\n```\necho main\n{second_line}\n```\n')
    return subprocess.run(['bash', str(run)], capture_output=True, text=True,
                          timeout=60, env=dict(
                              os.environ, REC_JAX_DATA_DIR=str(shared)))
  bad = ci('echo tests pass')
  assert bad.returncode == 2
  assert 'is not the pytest command: echo tests pass' in bad.stderr
  good = ci('echo ran -m pytest -q')
  assert good.returncode == 0, good.stderr
  assert 'ran -m pytest -q' in good.stdout
  assert ci('false -m pytest').returncode != 0  # a failure fails CI.
