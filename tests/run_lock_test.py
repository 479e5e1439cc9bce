"""One run per workdir (rec_jax.run_lock): a second process is refused,
naming the holder, and a run that dies, however, frees its workdir."""

import os
import signal
import subprocess
import sys

import pytest

import conftest
from rec_jax import run_lock

# Holds the lock of argv[1] until killed; prints 'held' once it has it.
HOLDER = r'''
import sys, time
from rec_jax import run_lock
lock = run_lock.acquire(sys.argv[1])
print('held', flush=True)
time.sleep(600)
'''


@pytest.fixture
def holder(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.Popen([sys.executable, '-c', HOLDER, str(workdir)],
                          stdout=subprocess.PIPE, text=True,
                          cwd=conftest.REPO)
  assert proc.stdout.readline().strip() == 'held'
  yield workdir, proc
  proc.kill()
  proc.wait()


def test_a_second_process_is_refused_naming_the_holder(holder):
  workdir, proc = holder
  assert run_lock.in_use(str(workdir))
  with pytest.raises(run_lock.WorkdirInUse, match=f'pid {proc.pid} '):
    run_lock.acquire(str(workdir))


def test_a_killed_run_frees_its_workdir(holder):
  workdir, proc = holder
  proc.send_signal(signal.SIGKILL)  # no clean-up code runs.
  proc.wait()
  assert not run_lock.in_use(str(workdir))
  lock = run_lock.acquire(str(workdir))
  assert f'pid {os.getpid()} ' in (workdir / run_lock.LOCK_NAME).read_text()
  # Held by this process now: another open of the lock file sees it.
  assert run_lock.in_use(str(workdir))
  lock.close()
  assert not run_lock.in_use(str(workdir))


def test_in_use_is_false_for_a_fresh_workdir(tmp_path):
  assert not run_lock.in_use(str(tmp_path / 'never_run'))


def test_main_refuses_a_workdir_in_use_and_leaves_it_alone(holder):
  workdir, proc = holder
  (workdir / 'results.json').write_text('{"from": "the running run"}')
  out = subprocess.run(
      [sys.executable, '-m', 'rec_jax.main', f'--workdir={workdir}',
       '--config=configs/sasrec.py:smoke'],
      cwd=conftest.REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'in use by another run' in out.stderr
  assert f'pid {proc.pid} ' in out.stderr
  # Nothing of the running run was touched (main removes a stale
  # results.json only once it holds the workdir).
  assert (workdir / 'results.json').read_text() == (
      '{"from": "the running run"}')
  assert sorted(p.name for p in workdir.iterdir()) == [
      run_lock.LOCK_NAME, 'results.json']
