"""Runs made before the architecture change (models by family, tasks as
modules, model.peft) still load: their checkpoints restore into today's
models and give the metrics they were saved with, their configs upgrade,
their pretrained encoders initialise a fine-tune, and they export.

tests/testdata/pre_refactor_smoke holds the `best/` checkpoints, configs
and results of `python -m rec_jax.main --config=configs/recommended.py:smoke`
made with commit d76ee99 (the last one before the change).
"""

import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

import conftest
from rec_jax import bridge
from rec_jax import checkpoints
from rec_jax import config_lib
from rec_jax import saved_config
from rec_jax import evaluate
from rec_jax import export
from rec_jax import finetune
from rec_jax import sharding
from rec_jax import trainer

OLD = os.path.join(conftest.REPO, 'tests', 'testdata', 'pre_refactor_smoke')


@pytest.fixture
def old_run(tmp_path):
  """A writable copy of the pre-change run."""
  return shutil.copytree(OLD, tmp_path / 'run')


def _one_device(config):
  config.mesh.update(data=1, fsdp=1, model=1)
  return config


def test_saved_config_upgrades_to_todays_layout():
  with open(os.path.join(OLD, 'finetune', 'config.json'),
            encoding='utf-8') as f:
    saved = json.load(f)
  assert 'lora_rank' in saved['model'] and 'name' not in saved['model']
  up = saved_config.upgrade(saved)
  assert up['model']['name'] == 'sasrec'
  assert up['model']['peft'] == config_lib.peft_config().to_dict()
  assert not set(saved_config.MOVED) & set(saved_config.flatten(up))
  # Today's recipe, resolved on the same data, is that config resolved the
  # same way: the pretraining length the old code computed at run time
  # (2 epochs, its summary) is what resolving the upgraded config gives.
  config = conftest.load_config('recommended', 'smoke')
  data = trainer.load_data(config)
  config = trainer.resolved(config, data)
  old = trainer.resolved(ml_collections.ConfigDict(up), data)
  changed, only_saved, only_now = saved_config.config_diff(
      json.loads(old.to_json_best_effort()),
      json.loads(config.to_json_best_effort()),
      ignore=saved_config.RESUME_FREE)  # where and how often it saves.
  # Today's recipe packs its pretraining batches; the old run did not.
  assert changed == {'pretrain.packed': (False, True)}
  assert not only_saved and not only_now
  with open(os.path.join(OLD, 'pretrain', 'summary.json'),
            encoding='utf-8') as f:
    assert old.pretrain.epochs == json.load(f)['epochs'] == 2


def test_old_checkpoint_restores_and_gives_its_saved_metrics(old_run):
  config = _one_device(saved_config.load_saved(
      os.path.join(old_run, 'finetune', 'config.json')))
  results = evaluate.run(config, os.path.join(old_run, 'finetune'),
                         str(old_run))
  with open(os.path.join(OLD, 'results.json'), encoding='utf-8') as f:
    saved = json.load(f)
  for split in ('valid', 'test'):
    for k, v in saved[split].items():
      assert results[split][k] == pytest.approx(v, abs=1e-7), (split, k)
  assert results['best_step'] == saved['best_step']


def test_old_pretrained_encoder_initialises_a_finetune(old_run):
  config = _one_device(conftest.load_config('recommended', 'smoke'))
  ds, _ = trainer.load_data(config)
  config = trainer.resolved(config, trainer.load_data(config))
  mesh = sharding.make_mesh(config.mesh)
  _, _, param_sh = finetune.abstract_model(config, ds.num_items, mesh)
  params = finetune.init_params(config, ds.num_items, mesh, param_sh, 0)
  params, report = bridge.init_subtree(os.path.join(old_run, 'pretrain'),
                                       params, param_sh)
  assert not report['kept_fresh']
  saved = checkpoints.params_metadata(
      checkpoints.resolve_params_dir(os.path.join(old_run, 'pretrain')))
  assert sorted(report['restored']) == sorted(
      k for k in saved if k.startswith('encoder/'))
  assert all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree.leaves(params))


def test_old_run_exports_and_serves_its_top_k(old_run):
  path = export.export(str(old_run), k_max=10)
  from rec_jax import artifact  # pylint: disable=g-import-not-at-top
  model = artifact.Artifact(path)
  items, scores = model.recommend([[1, 2, 3]], k=5)
  assert len(items[0]) == 5 and scores[0] == sorted(scores[0], reverse=True)
  with open(os.path.join(path, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['model']['name'] == 'sasrec'
