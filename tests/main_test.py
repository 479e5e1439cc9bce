"""The command line: results.json, predictions.jsonl, config and data errors."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import conftest
from rec_jax import saved_config
from rec_jax import evaluate
from rec_jax import metrics


def _main(workdir, *args, env=None):
  cmd = [sys.executable, '-m', 'rec_jax.main', f'--workdir={workdir}', *args]
  return subprocess.run(cmd, cwd=conftest.REPO, capture_output=True,
                        text=True, timeout=600,
                        env={**os.environ, **(env or {})})


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('main') / 'run'
  proc = _main(workdir, '--config=configs/sasrec.py:smoke',
               '--config.checkpoint.async_save=false')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_results_json_has_the_contract(smoke_run):
  workdir, proc = smoke_run
  results = json.loads((workdir / 'results.json').read_text())
  for split in ('valid', 'test'):
    assert set(metrics.METRIC_NAMES) <= set(results[split])
    for v in results[split].values():
      assert 0.0 <= v <= 1.0
  assert results['train_seconds'] > 0 and results['epochs'] == 3
  assert 'ndcg@10' in proc.stdout  # the printed results table
  # The saved config holds the dropout set from the data (-1 in the recipe).
  saved = json.loads((workdir / 'finetune' / 'config.json').read_text())
  assert saved['model']['dropout_rate'] == 0.5
  assert conftest.load_config('sasrec', 'smoke').model.dropout_rate == -1.0
  assert list((workdir / 'finetune' / 'tensorboard').iterdir())
  rows = [json.loads(l) for l in open(workdir / 'finetune' / 'metrics.jsonl')]
  assert any('eval/valid/ndcg@10' in r for r in rows)


def test_predictions_recompute_the_test_metrics(smoke_run):
  workdir, _ = smoke_run
  results = json.loads((workdir / 'results.json').read_text())
  recomputed = evaluate.recompute_from_predictions(
      str(workdir / 'predictions.jsonl'))
  for k, v in recomputed.items():
    assert v == pytest.approx(results['test'][k], abs=1e-6), k
  lines = (workdir / 'predictions.jsonl').read_text().splitlines()
  assert len(lines) == results['num_users']
  first = json.loads(lines[0])
  assert len(first['top']) == 20 and len(set(first['top'])) == 20


def test_rerun_resumes_and_reproduces(smoke_run):
  workdir, _ = smoke_run
  before = json.loads((workdir / 'results.json').read_text())
  proc = _main(workdir, '--config=configs/sasrec.py:smoke')
  assert proc.returncode == 0, proc.stderr[-3000:]
  after = json.loads((workdir / 'results.json').read_text())
  assert after['test'] == before['test']
  assert 'Resumed from' in proc.stderr


def test_resuming_with_another_recipe_is_an_error(smoke_run, tmp_path):
  """A finished (or interrupted) run is not resumed by a different config:
  the error names each changed key, and --allow_changed lets it through."""
  workdir, _ = smoke_run
  copy = tmp_path / 'copy'
  shutil.copytree(workdir, copy)
  proc = _main(copy, '--config=configs/bert4rec.py:smoke')
  assert proc.returncode != 0
  assert 'model.causal: True (saved) != False (now)' in proc.stderr
  assert 'finetune.objective' in proc.stderr
  assert not (copy / 'results.json').exists()
  proc = _main(copy, '--config=configs/sasrec.py:smoke',
               '--config.finetune.patience=7', '--stage=eval')
  assert proc.returncode != 0 and 'finetune.patience' in proc.stderr
  proc = _main(copy, '--config=configs/sasrec.py:smoke',
               '--config.finetune.patience=7', '--stage=eval',
               '--allow_changed=finetune.patience')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (copy / 'results.json').exists()


def test_check_resume_ignores_placement_and_other_stages(tmp_path):
  stage = tmp_path / 'pretrain'
  (stage / 'checkpoints' / '5').mkdir(parents=True)
  saved = conftest.load_config('sasrec', 'smoke')
  (stage / 'config.json').write_text(saved.to_json_best_effort())
  now = conftest.load_config('sasrec', 'smoke')
  now.mesh.data = 2  # where it runs,
  now.checkpoint.async_save = not now.checkpoint.async_save
  now.finetune.patience += 1  # a later stage's setting.
  saved_config.check_resume(str(stage), now, 'pretrain')
  with pytest.raises(ValueError, match='finetune.patience'):
    saved_config.check_resume(str(stage), now, 'finetune')
  now.seed += 1
  with pytest.raises(ValueError, match=r'seed: 0 \(saved\) != 1'):
    saved_config.check_resume(str(stage), now, 'pretrain')
  saved_config.check_resume(str(stage), now, 'pretrain', allow=['seed'])
  # A stage that never saved a checkpoint starts afresh: nothing to check.
  shutil.rmtree(stage / 'checkpoints')
  saved_config.check_resume(str(stage), now, 'finetune')


def test_config_diff_reports_both_sides():
  changed, only_a, only_b = saved_config.config_diff(
      {'a': {'b': 1, 'c': [1, 2]}, 'x': 1, 'mesh': {'data': 1}},
      {'a': {'b': 2, 'c': (1, 2)}, 'y': 0, 'mesh': {'data': 4}},
      ignore=('mesh.*',))
  assert changed == {'a.b': (1, 2)}
  assert only_a == ['x'] and only_b == ['y']


def test_unknown_config_key_is_an_error(tmp_path):
  proc = _main(tmp_path / 'w', '--config=configs/sasrec.py:smoke',
               '--config.finetune.learning_rate=0.1')
  assert proc.returncode != 0
  assert 'learning_rate' in proc.stderr


def test_unknown_arg_in_config_string_is_an_error(tmp_path):
  proc = _main(tmp_path / 'w', '--config=configs/sasrec.py:smoke,datset=x')
  assert proc.returncode != 0 and 'datset' in proc.stderr


def test_unknown_dataset_fails_without_results(tmp_path):
  workdir = tmp_path / 'w'
  workdir.mkdir()
  (workdir / 'results.json').write_text('{"stale": true}')
  proc = _main(workdir, '--config=configs/sasrec.py:smoke,dataset=nosuch')
  assert proc.returncode != 0
  assert 'nosuch' in proc.stderr
  assert not (workdir / 'results.json').exists()


def test_malformed_data_file_names_file_and_line(tmp_path):
  data = tmp_path / 'data' / 's3rec'
  data.mkdir(parents=True)
  (data / 'LastFM.txt').write_text('1 1 2 3 4 5\n2 1 x 3 4 5\n')
  (data / 'LastFM_item2attributes.json').write_text('{}')
  workdir = tmp_path / 'w'
  proc = _main(workdir, '--config=configs/sasrec.py:smoke,dataset=lastfm',
               env={'REC_JAX_DATA_DIR': str(tmp_path / 'data'),
                    'REC_JAX_CACHE_DIR': str(tmp_path / 'cache')})
  assert proc.returncode != 0
  assert 'LastFM.txt' in proc.stderr and 'line 2' in proc.stderr
  assert not (workdir / 'results.json').exists()


CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(conftest.REPO,
                                                           'configs'))
                 if f.endswith('.py'))


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.parametrize('arg', [None, 'smoke'])
def test_every_config_loads(name, arg):
  config = conftest.load_config(name, arg)
  assert config.finetune.num_epochs > 0
  if arg == 'smoke':
    assert config.data.name == 'synthetic'
    assert config.finetune.num_epochs <= 5


def test_causal_recipe_is_recommended_without_its_contrastive_term():
  arg = 'dataset=beauty,pretrain_window=newest'
  causal = saved_config.flatten(conftest.load_config('causal', arg).to_dict())
  recommended = saved_config.flatten(
      conftest.load_config('recommended', arg).to_dict())
  differ = {k for k in causal if causal[k] != recommended.get(k)}
  assert differ == {'pretrain.objectives.contrastive'}
  assert causal['pretrain.objectives.contrastive'] == 0.0
  assert causal['pretrain.objectives.causal'] == 1.0
  assert causal['pretrain.random_prefix'] is False


@pytest.mark.parametrize('arg', ['dataset=beauty', 'dataset=ml-1m,seed=2',
                                 'dataset=lastfm,pretrain=false', 'smoke'])
def test_cl4srec_recipe_is_the_recommended_recipe(arg):
  # benchmarks/results/ablations.md reports the recommended recipe through
  # its `cl4srec` rows; that holds only while the two configs agree.
  cl4srec = saved_config.flatten(conftest.load_config('cl4srec', arg).to_dict())
  recommended = saved_config.flatten(
      conftest.load_config('recommended', arg).to_dict())
  assert cl4srec == recommended
