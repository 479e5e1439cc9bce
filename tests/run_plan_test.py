"""Planning benchmark runs ($REC_JAX_BENCH_PLAN) and running a plan many at
a time before a deadline (benchmarks/run_plan.py), with stand-in runs of
milliseconds instead of rec_jax.main."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import conftest
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


def test_read_plan_sees_a_checkpoint_named_relative_to_the_repo(tmp_path):
  """A benchmark given a relative --workroot plans a relative init_from
  path (main resolves it from the repository root); the fine-tune still
  waits for its pretraining."""
  pre = os.path.join(REPO, 'benchmarks', 'work', 'x', 'pre_s0')
  rel = os.path.relpath(pre, REPO)
  plan = _write_plan(tmp_path / 'p.jsonl', [
      (pre, ['--stage=pretrain']),
      (tmp_path / 'ft', [f'--config.init_from.path={rel}/pretrain']),
      (tmp_path / 'ft2', [f'--config.init_from.path={rel}_other/pretrain']),
  ])
  assert [j['after'] for j in run_plan.read_plan([plan])] == [[], [0], []]


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


# Holds argv[1]'s run lock for argv[2] seconds, then writes its
# results.json (unless argv[3] is 'fail') and exits: a run started outside
# the plan.
ELSEWHERE = r'''
import json, os, sys, time
from rec_jax import run_lock
lock = run_lock.acquire(sys.argv[1])
print('held', flush=True)
time.sleep(float(sys.argv[2]))
if sys.argv[3] != 'fail':
  json.dump({'test': {'ndcg@10': 0.75}},
            open(os.path.join(sys.argv[1], 'results.json'), 'w'))
'''


@pytest.mark.parametrize('outcome', ['finishes', 'fails'])
def test_a_run_held_by_another_process_is_waited_for_not_started_twice(
    tmp_path, monkeypatch, capsys, fake_main, outcome):
  busy = tmp_path / 'busy'
  holder = subprocess.Popen(
      [sys.executable, '-c', ELSEWHERE, str(busy), '3',
       'ok' if outcome == 'finishes' else 'fail'],
      stdout=subprocess.PIPE, text=True, cwd=REPO)
  assert holder.stdout.readline().strip() == 'held'
  plan = _write_plan(tmp_path / 'p.jsonl', [
      # Started here, this stand-in would write ndcg 0.5.
      (busy, ['--ndcg=0.5']),
      (tmp_path / 'after', [f'--config.init_from.path={busy}',
                            '--ndcg=0.25']),
  ])
  summary = tmp_path / 'summary.json'
  monkeypatch.setattr(sys, 'argv', ['run_plan', f'--plan={plan}',
                                    '--parallel=2', f'--summary={summary}'])
  assert run_plan.main() == 0
  holder.wait()
  assert f'another process is running {busy}; waiting' in (
      capsys.readouterr().out)
  runs = {os.path.basename(r['workdir']): r
          for r in json.loads(summary.read_text())['runs']}
  results = json.loads((busy / 'results.json').read_text())
  if outcome == 'finishes':
    assert runs['busy']['status'] == 'finished elsewhere'
    assert results['test']['ndcg@10'] == 0.75  # the other process's.
  else:
    # The holder left no results: the plan ran it itself, afterwards.
    assert runs['busy']['status'] == 'done'
    assert results['test']['ndcg@10'] == 0.5
  assert runs['after']['status'] == 'done'


# Starts the script argv[2] (ELSEWHERE) on --workdir=argv[1], holding its
# lock for 2 s, then exits as rec_jax.main does when it finds the
# workdir's lock taken: the race of two plans that start the same run at
# the same moment, lost.
LOSES_THE_RACE = r'''
import subprocess, sys
workdir = sys.argv[1].split('=', 1)[1]
holder = subprocess.Popen([sys.executable, '-c', sys.argv[2], workdir, '2',
                           'ok'], stdout=subprocess.PIPE, text=True)
assert holder.stdout.readline().strip() == 'held'
sys.exit(1)
'''


def test_a_start_that_loses_the_lock_waits_for_the_winner(
    tmp_path, monkeypatch, capsys):
  busy = tmp_path / 'busy'
  monkeypatch.setattr(common, 'main_command', lambda args, workdir: [
      sys.executable, '-c', LOSES_THE_RACE, f'--workdir={workdir}',
      ELSEWHERE])
  plan = _write_plan(tmp_path / 'p.jsonl', [(busy, [])])
  summary = tmp_path / 'summary.json'
  monkeypatch.setattr(sys, 'argv', ['run_plan', f'--plan={plan}',
                                    f'--summary={summary}'])
  assert run_plan.main() == 0
  out = capsys.readouterr().out
  assert f'another process took {busy} first; waiting for it' in out
  assert f'finished elsewhere: {busy}' in out
  (run,) = json.loads(summary.read_text())['runs']
  assert run['status'] == 'finished elsewhere'
  # The winner's results, not a failure.
  assert json.loads((busy / 'results.json').read_text())['test'] == {
      'ndcg@10': 0.75}


def test_a_run_held_elsewhere_takes_a_parallel_slot(
    tmp_path, monkeypatch, capsys, fake_main):
  """With --parallel=1 and the first run held by another process, the
  second, independent run starts only once that process lets go."""
  busy = tmp_path / 'busy'
  holder = subprocess.Popen(
      [sys.executable, '-c', ELSEWHERE, str(busy), '2', 'ok'],
      stdout=subprocess.PIPE, text=True, cwd=REPO)
  assert holder.stdout.readline().strip() == 'held'
  plan = _write_plan(tmp_path / 'p.jsonl', [
      (busy, []), (tmp_path / 'free', [])])
  monkeypatch.setattr(sys, 'argv', ['run_plan', f'--plan={plan}',
                                    '--parallel=1'])
  assert run_plan.main() == 0
  holder.wait()
  out = capsys.readouterr().out
  assert out.index(f'finished elsewhere: {busy}') < out.index(
      f'start --workdir={tmp_path / "free"}')
  assert (tmp_path / 'free' / 'results.json').exists()


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


# ------------------------------------------------------------- archive ----

@pytest.fixture
def archive_roots(tmp_path, monkeypatch):
  work, arch = tmp_path / 'work', tmp_path / 'runs'
  monkeypatch.setattr(common, 'WORK', str(work))
  monkeypatch.setattr(common, 'ARCHIVE', str(arch))
  return work, arch


def test_finished_runs_are_archived_and_read_back(archive_roots, fake_main):
  """A run launched under benchmarks/work is archived when it finishes; once
  its workdir is gone, run_main reads it from the archive instead of running
  it again (a failing stand-in would show a rerun)."""
  work, arch = archive_roots
  workdir = work / 'ablations' / 'cloze_lastfm_s2'
  args = ['--config=configs/recommended.py:smoke,pretrain=false',
          '--ndcg=0.25']
  assert common.run_main(args, str(workdir))['test']['ndcg@10'] == 0.25
  assert (arch / 'ablations' / 'cloze_lastfm_s2' / 'results.json').exists()
  shutil.rmtree(work)
  assert common.finished_dir(str(workdir)) == str(
      arch / 'ablations' / 'cloze_lastfm_s2')
  again = common.run_main(args + ['--fail'], str(workdir))
  assert again['test']['ndcg@10'] == 0.25
  assert not workdir.exists()  # nothing ran.
  # Outside benchmarks/work nothing is archived.
  assert common.archive_dir(str(work.parent / 'elsewhere')) is None


def test_archived_run_with_another_config_is_refused(archive_roots):
  """The archive keeps each stage's config; a benchmark asking for another
  config gets an error naming the key, not the old run's numbers."""
  # The recipe's data-derived values are read from the real files.
  conftest.data_dir_or_skip()
  _, arch = archive_roots
  run = arch / 'baselines' / 'sasrec_toys_s0'
  (run / 'finetune').mkdir(parents=True)
  saved = common.config_of(['--config=configs/sasrec.py:dataset=toys,seed=1'])
  (run / 'finetune' / 'config.json').write_text(saved.to_json_best_effort())
  (run / 'results.json').write_text('{"test": {"ndcg@10": 0.06}}')
  workdir = str(archive_roots[0] / 'baselines' / 'sasrec_toys_s0')
  ok = common.run_main(['--config=configs/sasrec.py:dataset=toys,seed=1'],
                       workdir, only_finished=True)
  assert ok['test']['ndcg@10'] == 0.06
  with pytest.raises(ValueError, match=r'seed: 1 \(saved\) != 0 \(now\)'):
    common.run_main(['--config=configs/sasrec.py:dataset=toys,seed=0'],
                    workdir, only_finished=True)


def test_archived_fine_tune_names_its_checkpoint_across_clones(archive_roots):
  """An archived fine-tune records the checkpoint path of the clone it ran
  in; it matches the same run under this clone's benchmarks/work, and a
  different pretraining run is refused."""
  # The recipe's data-derived values are read from the real files.
  conftest.data_dir_or_skip()
  work, arch = archive_roots
  run = arch / 'finetuning' / 'lora_beauty_s0'
  run.mkdir(parents=True)
  (run / 'results.json').write_text(json.dumps(dict(
      test={'ndcg@10': 0.05}, init_from='/elsewhere/clone/benchmarks/work/'
      'finetuning/pre_recommended_beauty_s0/pretrain')))
  arg = '--config=configs/recommended.py:dataset=beauty,pretrain=false'
  workdir = str(work / 'finetuning' / 'lora_beauty_s0')
  pre = work / 'finetuning' / 'pre_recommended_beauty_s0' / 'pretrain'
  r = common.run_main([arg, f'--config.init_from.path={pre}'], workdir,
                      only_finished=True)
  assert r['test']['ndcg@10'] == 0.05
  other = work / 'finetuning' / 'pre_recommended_beauty_s1' / 'pretrain'
  other.mkdir(parents=True)  # exists here: a real mismatch, not a move.
  with pytest.raises(ValueError, match='fine-tuned from'):
    common.run_main([arg, f'--config.init_from.path={other}'], workdir,
                    only_finished=True)


def test_archive_thins_the_metrics_log_and_keeps_every_evaluation(
    archive_roots):
  work, arch = archive_roots
  run = work / 'baselines' / 'sasrec_beauty_s0'
  (run / 'finetune').mkdir(parents=True)
  lines = []
  for step in range(1, 2001):
    lines.append(json.dumps({'step': step, 'train/loss': 1.0 / step}))
    if step % 200 == 0:
      lines.append(json.dumps({'step': step, 'eval/valid/ndcg@10': step}))
  (run / 'finetune' / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  (run / 'results.json').write_text('{}')
  (run / 'finetune' / 'checkpoints').mkdir()
  (run / 'predictions.jsonl').write_text('{}\n')
  sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
  import archive  # pylint: disable=g-import-not-at-top
  assert archive.main([str(work)]) == 0
  kept = [json.loads(l) for l in
          (arch / 'baselines' / 'sasrec_beauty_s0' / 'finetune' /
           'metrics.jsonl').read_text().splitlines()]
  evals = [r['step'] for r in kept if 'eval/valid/ndcg@10' in r]
  train = [r['step'] for r in kept if 'train/loss' in r]
  assert evals == list(range(200, 2001, 200))
  assert len(train) <= common.MAX_TRAIN_LINES + 1
  assert train[0] == 1 and train[-1] == 2000
  assert train == sorted(train)
  stored = sorted(str(p.relative_to(arch)) for p in arch.rglob('*')
                  if p.is_file())
  assert stored == ['baselines/sasrec_beauty_s0/finetune/metrics.jsonl',
                    'baselines/sasrec_beauty_s0/results.json']


def test_pretrain_length_study_plans_one_encoder_per_length(tmp_path):
  """--study=pretrain_length plans the methods study once per length, each
  in its own workroot, the length passed as the recipe's pretrain_epochs."""
  plan = tmp_path / 'plan.jsonl'
  env = dict(os.environ, **{common.PLAN_ENV: str(plan)})
  subprocess.run(
      [sys.executable, 'benchmarks/finetuning.py', '--study=pretrain_length',
       '--datasets=synthetic', '--methods=full,lora', '--arg=smoke',
       '--pretrain_epochs=0,7', f'--workroot={tmp_path}/ft',
       f'--out={tmp_path}/table'],
      cwd=REPO, env=env, capture_output=True, text=True, check=True)
  jobs = run_plan.read_plan([str(plan)])
  got = [(os.path.relpath(j['workdir'], tmp_path), j['args'][0].split(':')[1])
         for j in jobs]
  assert got == [
      ('ft/pre_recommended_synthetic_s0', 'dataset=synthetic,seed=0,smoke'),
      ('ft/full_synthetic_s0',
       'dataset=synthetic,seed=0,pretrain=false,finetune=full,smoke'),
      ('ft/lora_synthetic_s0',
       'dataset=synthetic,seed=0,pretrain=false,finetune=lora,smoke'),
      ('ft_pe7/pre_recommended_synthetic_s0',
       'dataset=synthetic,seed=0,smoke,pretrain_epochs=7'),
      ('ft_pe7/full_synthetic_s0', 'dataset=synthetic,seed=0,pretrain=false,'
       'finetune=full,smoke,pretrain_epochs=7'),
      ('ft_pe7/lora_synthetic_s0', 'dataset=synthetic,seed=0,pretrain=false,'
       'finetune=lora,smoke,pretrain_epochs=7')]
  assert [j['after'] for j in jobs] == [[], [0], [0], [], [3], [3]]


def test_pretrain_length_table_shows_the_score_before_fine_tuning():
  """The pretrain_length table puts full fine-tuning first, gives each
  method its share of full from the same encoder, and the pretrained
  model's validation score where the runs recorded it ('–' for runs made
  before fine-tunes recorded it)."""
  import finetuning  # pylint: disable=g-import-not-at-top
  row = dict(dataset='beauty', seeds=1, trainable=5, total=100,
             hardware='cpu', pretrain_steps=[90])
  rows = [dict(row, method='lora', pretrain_epochs=100, ndcg10=[0.045],
               share=0.9, init_valid=[0.0612, 0.0622]),
          dict(row, method='full', pretrain_epochs=100, ndcg10=[0.05],
               share=1.0, init_valid=[]),
          dict(row, method='full', pretrain_epochs=0, ndcg10=[0.05],
               share=1.0)]
  lines = finetuning.pretrain_length_markdown(rows).splitlines()
  assert lines[2].startswith('| beauty | recipe | 90 | full | 1 | – | 0.0500 |')
  assert lines[3].startswith('| beauty | 100 | 90 | full | 1 | – |')
  assert lines[4] == ('| beauty | 100 | 90 | lora | 1 | 0.0617 ± 0.0007 | '
                      '0.0450 | 90.0% | 5.00% | cpu |')


def test_methods_table_compares_the_seeds_both_methods_finished():
  """'vs full' pairs seeds: a LoRA seed finished without its full
  fine-tune would otherwise be divided by other seeds' full scores."""
  import finetuning  # pylint: disable=g-import-not-at-top
  common_fields = dict(dataset='beauty', total=1000, minutes=2.0,
                       peak_mb=100.0, peak_device_mb=None, hardware='cpu')
  full = dict(common_fields, method='full', seeds=2, seed_list=[0, 1],
              ndcg10=[0.05, 0.06], trainable=1000, init_valid=[0.04, 0.05])
  lora = dict(common_fields, method='lora', seeds=2, seed_list=[1, 2],
              ndcg10=[0.054, 0.07], trainable=45, init_valid=[0.05, 0.052])
  assert finetuning.share_of(lora, full) == (pytest.approx(0.9), [1])
  assert finetuning.share_of(full, full) == (pytest.approx(1.0), [0, 1])
  assert finetuning.share_of(lora, None) == (None, [])
  for r in (full, lora):
    r['share'], r['share_seeds'] = finetuning.share_of(r, full)
  lines = finetuning.methods_markdown([full, lora]).splitlines()
  assert lines[2].startswith(
      '| beauty | full | 2 | 0.0450 ± 0.0071 | 0.0550 ± 0.0071 | 100.0% | '
      '1,000 | 100.00% |')
  assert lines[3].startswith(
      '| beauty | lora | 2 | 0.0510 ± 0.0014 | 0.0620 ± 0.0113 | '
      '90.0% (seed 1) | 45 | 4.50% | 2.0 | 100 | – | cpu |')


def test_label_fraction_ratio_pairs_seeds_and_names_them():
  import finetuning  # pylint: disable=g-import-not-at-top
  pre = dict(seed_list=[0], ndcg10=[0.0566])
  scratch = dict(seed_list=[0, 1], ndcg10=[0.0564, 0.0568])
  assert finetuning.paired_ratio(pre, scratch) == '1.00x (seed 0)'
  pre = dict(seed_list=[0, 1], ndcg10=[0.03, 0.02])
  scratch = dict(seed_list=[0, 1], ndcg10=[0.02, 0.02])
  assert finetuning.paired_ratio(pre, scratch) == '1.25x'
  assert finetuning.paired_ratio(pre, dict(seed_list=[2], ndcg10=[1.0])) == (
      '–')
