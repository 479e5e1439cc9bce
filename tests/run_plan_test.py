"""Planning benchmark runs ($REC_JAX_BENCH_PLAN) and running a plan many at
a time before a deadline (benchmarks/run_plan.py), with stand-in runs of
milliseconds instead of rec_jax.main."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import run_plan  # pylint: disable=g-import-not-at-top,wrong-import-position

# A stand-in for rec_jax.main: --sleep=S, --fail, else writes results.json
# (or pretrain/summary.json with --stage=pretrain) into --workdir.
FAKE_MAIN = r'''
import json, os, sys, time
a = dict(x.split('=', 1) if '=' in x else (x, '') for x in sys.argv[1:])
w = a['--workdir']
time.sleep(float(a.get('--sleep', 0)))
if '--fail' in a:
  sys.exit(3)
if a.get('--stage') == 'pretrain':
  os.makedirs(os.path.join(w, 'pretrain'), exist_ok=True)
  open(os.path.join(w, 'pretrain', 'summary.json'), 'w').write('{}')
else:
  os.makedirs(w, exist_ok=True)
  json.dump({'test': {'ndcg@10': float(a.get('--ndcg', 0.5))}},
            open(os.path.join(w, 'results.json'), 'w'))
'''


@pytest.fixture
def fake_main(monkeypatch):
  monkeypatch.setattr(common, 'main_command', lambda args, workdir: [
      sys.executable, '-c', FAKE_MAIN, f'--workdir={workdir}', *args])


def _write_plan(path, jobs):
  path.write_text(''.join(json.dumps(dict(workdir=str(w), args=a)) + '\n'
                          for w, a in jobs))
  return str(path)


def test_run_main_plans_instead_of_running(tmp_path, monkeypatch):
  plan = tmp_path / 'plan.jsonl'
  monkeypatch.setenv(common.PLAN_ENV, str(plan))
  args = ['--config=configs/recommended.py:smoke']
  assert common.run_main(args, str(tmp_path / 'w')) is None
  assert common.run_main(args, str(tmp_path / 'v')) is None
  lines = [json.loads(l) for l in plan.read_text().splitlines()]
  assert lines == [dict(workdir=str(tmp_path / 'w'), args=args),
                   dict(workdir=str(tmp_path / 'v'), args=args)]
  assert not (tmp_path / 'w').exists()  # nothing ran.


def test_read_plan_dedups_and_orders_by_checkpoint(tmp_path):
  pre, ft, other = tmp_path / 'pre', tmp_path / 'ft', tmp_path / 'other'
  plan = _write_plan(tmp_path / 'p.jsonl', [
      (pre, ['--stage=pretrain']),
      (ft, [f'--config.init_from.path={pre}/pretrain']),
      (pre, ['--stage=pretrain']),  # planned twice: runs once.
      (other, ['--config.init_from.path=/elsewhere/pre']),
  ])
  jobs = run_plan.read_plan([plan])
  assert [j['workdir'] for j in jobs] == [str(pre), str(ft), str(other)]
  assert [j['after'] for j in jobs] == [[], [0], []]


def test_read_plan_names_the_bad_line(tmp_path):
  bad = tmp_path / 'p.jsonl'
  bad.write_text('{"workdir": "/a", "args": []}\n{"args": []}\n')
  with pytest.raises(SystemExit, match=r'p.jsonl:2: not a plan entry'):
    run_plan.read_plan([str(bad)])


def test_plan_runs_in_parallel_and_skips_what_depends_on_a_failure(
    tmp_path, monkeypatch, fake_main):
  pre, bad = tmp_path / 'pre', tmp_path / 'bad'
  plan = _write_plan(tmp_path / 'p.jsonl', [
      (pre, ['--stage=pretrain', '--sleep=1']),
      (bad, ['--stage=pretrain', '--fail']),
      (tmp_path / 'ft', [f'--config.init_from.path={pre}/pretrain',
                         '--ndcg=0.25']),
      (tmp_path / 'lost', [f'--config.init_from.path={bad}/pretrain']),
      (tmp_path / 'solo', ['--sleep=1']),
  ])
  summary = tmp_path / 'summary.json'
  monkeypatch.setattr(sys, 'argv', ['run_plan', f'--plan={plan}',
                                    '--parallel=3', f'--summary={summary}'])
  t = time.time()
  assert run_plan.main() == 1  # one run failed.
  assert time.time() - t < 8  # pre and solo (1 s each) overlapped.
  runs = {os.path.basename(r['workdir']): r
          for r in json.loads(summary.read_text())['runs']}
  assert {k: r['status'] for k, r in runs.items()} == dict(
      pre='done', bad='failed', ft='done', lost='skipped', solo='done')
  assert runs['ft']['test_ndcg@10'] == 0.25
  assert runs['bad']['rc'] == 3
  # launch added the run's wall time and peak memory to its results.
  results = json.loads((tmp_path / 'ft' / 'results.json').read_text())
  assert results['wall_seconds'] > 0 and 'peak_rss_mb' in results
  assert (tmp_path / 'bad.log').exists()


def test_deadline_stops_runs_and_starts_none_late(tmp_path, monkeypatch,
                                                  fake_main):
  plan = _write_plan(tmp_path / 'p.jsonl', [
      (tmp_path / 'long', ['--sleep=60']),
      (tmp_path / 'late', []),
  ])
  summary = tmp_path / 'summary.json'
  monkeypatch.setattr(sys, 'argv', [
      'run_plan', f'--plan={plan}', '--parallel=1', '--deadline=2',
      '--min_left=1', f'--summary={summary}'])
  t = time.time()
  run_plan.main()
  assert time.time() - t < 30
  runs = {os.path.basename(r['workdir']): r['status']
          for r in json.loads(summary.read_text())['runs']}
  assert runs == {'long': 'stopped at deadline', 'late': 'pending'}
  assert not (tmp_path / 'long' / 'results.json').exists()


def test_finished_runs_are_not_run_again(tmp_path, monkeypatch, fake_main):
  done = tmp_path / 'done'
  done.mkdir()
  (done / 'results.json').write_text('{"test": {}}')
  plan = _write_plan(tmp_path / 'p.jsonl', [(done, ['--fail'])])
  summary = tmp_path / 'summary.json'
  monkeypatch.setattr(sys, 'argv', ['run_plan', f'--plan={plan}',
                                    f'--summary={summary}'])
  assert run_plan.main() == 0
  assert json.loads(summary.read_text())['runs'][0]['status'] == (
      'finished before')


def test_benchmark_script_plans_its_dependent_runs(tmp_path):
  """finetuning.py plans the pretraining and the fine-tunes that read it,
  and exits without tabulating."""
  plan = tmp_path / 'plan.jsonl'
  env = dict(os.environ, **{common.PLAN_ENV: str(plan)})
  out = subprocess.run(
      [sys.executable, 'benchmarks/finetuning.py', '--study=methods',
       '--datasets=synthetic', '--methods=full,lora', '--arg=smoke',
       f'--workroot={tmp_path}/work', f'--out={tmp_path}/table'],
      cwd=REPO, env=env, capture_output=True, text=True, check=True)
  assert 'planned' in out.stdout
  assert not os.path.exists(f'{tmp_path}/table.md')
  jobs = run_plan.read_plan([str(plan)])
  names = [os.path.basename(j['workdir']) for j in jobs]
  assert names == ['pre_recommended_synthetic_s0', 'full_synthetic_s0',
                   'lora_synthetic_s0']
  assert [j['after'] for j in jobs] == [[], [0], [0]]
