"""The pretrain -> fine-tune bridge, pretraining resume, and the recipes
through the main entry point."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import load_config
from rec_jax import bridge
from rec_jax import checkpoints
from rec_jax import config_lib
from rec_jax import saved_config
from rec_jax import finetune
from rec_jax import pretrain
from rec_jax import sharding
from rec_jax import trainer
from rec_jax import trees
from rec_jax.models import items


def smoke_config(name='cloze', arg='smoke', **mesh):
  config = load_config(name, arg)
  with config.unlocked():
    config.checkpoint.async_save = False
    config.mesh.update(**mesh)
    config.model.num_heads = 4  # divisible by a model axis of 4.
  return config


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """A Cloze pretraining run on a 4 x 2 (data x model) mesh."""
  config = smoke_config(data=4, model=2)
  workdir = str(tmp_path_factory.mktemp('pre'))
  summary = pretrain.run(config, workdir)
  return config, workdir, summary


def pretrained_params(config, workdir, mesh):
  ds, _ = trainer.load_data(config)
  _, abs_params, sh = trainer.abstract_model(pretrain.builder(config, ds),
                                             config, mesh)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abs_params, sh)
  return checkpoints.restore_best_params(workdir, abstract)[0]


def fresh_finetune(config, mesh, seed=0):
  ds, _ = trainer.load_data(config)
  _, _, sh = finetune.abstract_model(config, ds.num_items, mesh)
  return finetune.init_params(config, ds.num_items, mesh, sh, seed), sh


def test_bridge_restores_the_encoder_onto_another_mesh(pretrained):
  config, workdir, summary = pretrained
  assert summary['epochs'] == config.pretrain.num_epochs
  src = pretrained_params(config, workdir, sharding.make_mesh(config.mesh))
  ft_config = smoke_config(data=2, model=4)
  mesh = sharding.make_mesh(ft_config.mesh)
  params, sh = fresh_finetune(ft_config, mesh, seed=5)
  out, report = bridge.init_subtree(workdir, params, sh)
  assert not report['kept_fresh'] and report['restored']
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(out['encoder']),
               jax.device_get(src['encoder']))
  table = out['encoder']['item_embed']
  assert dict(table.sharding.mesh.shape) == {'data': 2, 'fsdp': 1, 'model': 4}
  assert table.sharding.spec == sh['encoder']['item_embed'].spec
  # The heads of the pretraining model are not part of the fine-tune model.
  assert set(out) == {'encoder'}


def test_bridge_mismatch_shows_both_sides(pretrained):
  config, workdir, _ = pretrained
  ft_config = smoke_config(data=8)
  with ft_config.unlocked():
    ft_config.model.max_len = 12
    ft_config.model.num_layers = 2
  mesh = sharding.make_mesh(ft_config.mesh)
  params, sh = fresh_finetune(ft_config, mesh, seed=3)
  with pytest.raises(ValueError) as e:
    bridge.init_subtree(workdir, params, sh)
  msg = str(e.value)
  assert '~ encoder/pos_embed' in msg and 'model (12, 16)' in msg
  assert 'checkpoint (10, 16)' in msg
  assert '- encoder/blocks/1/attn/query' in msg and 'checkpoint: missing' in msg
  # Allowed differences keep their fresh values; the rest is restored.
  out, report = bridge.init_subtree(
      workdir, params, sh,
      allow_mismatch=['encoder/pos_embed', 'encoder/blocks/1/*'])
  assert 'encoder/pos_embed' in report['kept_fresh']
  np.testing.assert_array_equal(out['encoder']['pos_embed'],
                                params['encoder']['pos_embed'])
  src = pretrained_params(config, workdir, sharding.make_mesh(config.mesh))
  np.testing.assert_array_equal(out['encoder']['item_embed'],
                                src['encoder']['item_embed'])
  np.testing.assert_array_equal(out['encoder']['blocks'][0]['mlp']['wi'],
                                src['encoder']['blocks'][0]['mlp']['wi'])


def test_bridge_errors_name_the_path(tmp_path):
  config = smoke_config(data=8)
  params, sh = fresh_finetune(config, sharding.make_mesh(config.mesh))
  with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
    bridge.init_subtree(str(tmp_path), params, sh)
  with pytest.raises(ValueError, match='not a top-level key'):
    bridge.init_subtree(str(tmp_path), params, sh, subtree='decoder')


def test_pretraining_resumes_exactly(tmp_path):
  """1 epoch, stop, resume to 2 == 2 epochs straight."""
  config = smoke_config(data=8)
  straight = str(tmp_path / 'straight')
  pretrain.run(config, straight)
  resumed = str(tmp_path / 'resumed')
  with config.unlocked():
    config.pretrain.num_epochs = 1
  pretrain.run(config, resumed)
  with config.unlocked():
    config.pretrain.num_epochs = 2
  pretrain.run(config, resumed)
  mesh = sharding.make_mesh(config.mesh)
  a = pretrained_params(config, straight, mesh)
  b = pretrained_params(config, resumed, mesh)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(a),
               jax.device_get(b))


def test_pretraining_bar_counts_the_steps_it_runs(tmp_path, monkeypatch):
  """The progress bar's total is the step count pretraining planned for
  its LR schedule (packed epochs vary in length: an estimate from the
  first epoch would end the bar short or long)."""
  bars = []

  class Bar(trainer.tqdm.tqdm):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      bars.append(self)

  monkeypatch.setattr(trainer.tqdm, 'tqdm', Bar)
  config = smoke_config(name='recommended')
  with config.unlocked():  # epochs of 6, 6, 6, 6 and 7 steps.
    config.pretrain.update(batch_size=24, num_epochs=5)
  summary = pretrain.run(config, str(tmp_path / 'pre'))
  assert summary['steps'] == 31
  assert [(b.total, b.n) for b in bars] == [(summary['steps'],
                                             summary['steps'])]


def run_main(argv, ok=True):
  proc = subprocess.run([sys.executable, '-m', 'rec_jax.main', *argv],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  if ok:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def results(workdir):
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    return json.load(f)


def test_ablation_runs_main_with_and_without_pretraining(tmp_path):
  """benchmarks/ablations.py on a smoke config runs the scratch fine-tune
  (recommended.py:pretrain=false) and a pretrained recipe through main;
  the results carry the contract; another run fine-tunes from the
  pretrained one via --config.init_from.path; colab/ablations.ipynb plots
  the table."""
  work, out = tmp_path / 'work', tmp_path / 'res' / 'ablations'
  proc = subprocess.run(
      [sys.executable, 'benchmarks/ablations.py', '--datasets=synthetic',
       '--recipes=cloze', '--seeds=0', '--arg=smoke', f'--workroot={work}',
       f'--out={out}', '--override=checkpoint.async_save=false'],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  scratch, pre = work / 'scratch_synthetic_s0', work / 'cloze_synthetic_s0'
  r = results(scratch)
  assert not (scratch / 'pretrain').exists()
  assert 'pretrain_seconds' not in r and r['init_from'] is None
  r = results(pre)
  assert r['pretrain_seconds'] > 0 and r['pretrain_epochs'] == 2
  assert r['init_from'].startswith(str(pre / 'pretrain' / 'best'))
  assert set(r['test']) >= {'hr@5', 'hr@10', 'hr@20', 'ndcg@5', 'ndcg@10',
                            'ndcg@20', 'mrr'}
  for ext in ('md', 'csv', 'json', 'png'):
    assert os.path.exists(f'{out}.{ext}')
  table = open(f'{out}.md', encoding='utf-8').read()
  assert '| synthetic | scratch | 1 |' in table
  assert '| synthetic | cloze | 1 |' in table

  other = tmp_path / 'other'
  run_main(['--config=configs/recommended.py:smoke,pretrain=false',
            f'--workdir={other}', '--stage=finetune',
            f'--config.init_from.path={pre}',
            '--config.checkpoint.async_save=false'])
  with open(other / 'finetune' / 'summary.json', encoding='utf-8') as f:
    full = json.load(f)
  assert full['init_from'].startswith(str(pre))
  # The score before fine-tuning is recorded (the "before" of before/after)
  # and is the pretrained model's own: LoRA's adapters start as the
  # identity, so a LoRA fine-tune from the same run starts from the same
  # score; a run from scratch records none.
  assert r['init_valid']['ndcg@10'] > 0
  assert results(scratch)['init_valid'] is None
  lora = tmp_path / 'lora'
  run_main(['--config=configs/recommended.py:smoke,pretrain=false,'
            'finetune=lora', f'--workdir={lora}', '--stage=finetune',
            f'--config.init_from.path={pre}',
            '--config.checkpoint.async_save=false'])
  with open(lora / 'finetune' / 'summary.json', encoding='utf-8') as f:
    init = json.load(f)['init_valid']
  for k in ('ndcg@10', 'hr@10', 'mrr'):
    assert init[k] == pytest.approx(full['init_valid'][k], abs=1e-6), k

  import conftest  # pylint: disable=g-import-not-at-top
  outputs = conftest.execute_notebook('ablations.ipynb', tmp_path,
                                      timeout=300,
                                      ABLATIONS_JSON=f'{out}.json')
  assert 'synthetic  cloze' in outputs and 'bar plot:' in outputs
  assert (tmp_path / 'ablations_ndcg10.png').exists()


def test_finetune_stage_needs_the_pretrained_encoder(tmp_path):
  proc = run_main(['--config=configs/cl4srec.py:smoke', '--stage=finetune',
                   f'--workdir={tmp_path}'], ok=False)
  assert proc.returncode != 0
  assert 'FileNotFoundError' in proc.stderr
  assert '--stage=pretrain first' in proc.stderr


def test_features_from_the_pretrained_encoder(pretrained, tmp_path):
  from rec_jax import features  # pylint: disable=g-import-not-at-top
  config, workdir, _ = pretrained
  files = features.extract(config, workdir, str(tmp_path), layer=-1,
                           history='test', fmt='npy', batch_size=64)
  users, items = np.load(files['users']), np.load(files['items'])
  ds, _ = trainer.load_data(config)
  assert users.shape == (ds.num_users, config.model.embed_dim)
  assert items.shape == (ds.num_items, config.model.embed_dim)
  src = pretrained_params(config, workdir, sharding.make_mesh(config.mesh))
  np.testing.assert_array_equal(
      items, np.asarray(src['encoder']['item_embed'])[1:ds.num_items + 1])
  assert np.all(np.isfinite(users)) and users.std() > 0


def test_pretrain_epochs_arg_sets_the_length():
  assert load_config('recommended', 'smoke').pretrain.num_epochs == 2
  assert load_config('recommended', '').pretrain.num_epochs == 20
  assert load_config('recommended',
                     'pretrain_epochs=60').pretrain.num_epochs == 60
  with pytest.raises(ValueError, match='pretrain_epochs=-1'):
    load_config('recommended', 'pretrain_epochs=-1')


def test_epochs_per_pass_scales_pretraining_to_the_history():
  """With epochs_per_pass, num_epochs counts passes over the training
  items; min_steps still raises the total."""
  from rec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  # 8 users of 40 items, windows of 10: 4 epochs a pass; 1 step an epoch.
  train = [np.arange(1, 41, dtype=np.int32)] * 8
  stream = pipeline.UserStream(train, batch_size=8, max_len=10, seed=0,
                               random_prefix=False)
  assert stream.steps_in_epoch(0) == 1
  cfg = load_config('recommended', '').pretrain
  cfg.update(num_epochs=3, min_steps=0, epochs_per_pass=False)
  assert config_lib.pretrain_epochs(cfg, stream) == 3
  cfg.epochs_per_pass = True
  assert config_lib.pretrain_epochs(cfg, stream) == 12
  cfg.min_steps = 20
  assert config_lib.pretrain_epochs(cfg, stream) == 20
  # Histories that fit in max_len: a pass is one epoch.
  short = pipeline.UserStream([np.arange(1, 9, dtype=np.int32)] * 8,
                              batch_size=8, max_len=10, seed=0)
  cfg.min_steps = 0
  assert config_lib.pretrain_epochs(cfg, short) == 3


def test_pretrain_window_arg_picks_the_windows():
  assert load_config('recommended', '').pretrain.random_prefix
  assert not load_config('recommended',
                         'pretrain_window=newest').pretrain.random_prefix
  with pytest.raises(ValueError, match="pretrain_window='last'"):
    load_config('recommended', 'pretrain_window=last')


def test_pretraining_tables_stay_on_the_host(pretrained):
  """The step closes over the objectives' tables; device arrays there are
  copied back to the host at trace time, which the loop's transfer guard
  refuses on accelerators. They must be numpy arrays."""
  _, _, summary = pretrained
  config = load_config('s3rec', 'smoke')
  with config.unlocked():
    config.pretrain.objectives.contrastive = 1.0
    config.pretrain.augment.ops = 'substitute,insert'
  ds, split = trainer.load_data(config)
  weights = {k: v for k, v in config.pretrain.objectives.items() if v}
  mesh = sharding.make_mesh(config.mesh)
  ctx = pretrain.context(config, ds, split, weights, mesh)
  vocab = items.vocab_size(ds.num_items, config.model.vocab_multiple)
  assert isinstance(ctx.similar, np.ndarray)
  assert isinstance(ctx.attributes, np.ndarray)
  assert ctx.similar.shape == (vocab, config.pretrain.augment.num_correlated)
  # Results say where they were measured.
  assert summary['hardware'] == (
      f'{jax.device_count()}x cpu ({os.cpu_count()} cores)')


@pytest.mark.parametrize('method', ['lora', 'frozen', 'prefix', 'adapter'])
def test_pretraining_is_the_same_for_every_finetune_method(method, tmp_path):
  """The pretraining model drops the fine-tune's additions as a whole
  (model.peft: LoRA on the blocks and on the item table, prefixes,
  adapters; heads): a finetune=lora recipe pretrains exactly the encoder
  a finetune=full one does, and its finished pretraining is reused."""
  full = load_config('recommended', 'smoke')
  other = load_config('recommended', f'smoke,finetune={method}')
  data = trainer.load_data(full)
  full, other = trainer.resolved(full, data), trainer.resolved(other, data)
  mesh = sharding.make_mesh(full.mesh)

  def init(config):
    build = pretrain.builder(config, data[0])
    _, abs_params, sh = trainer.abstract_model(build, config, mesh)
    return jax.device_get(trainer.init_params(build, config, mesh, sh, 0))
  a, b = init(full), init(other)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert not any('lora' in k or 'prefix' in k or 'adapter' in k
                 for k in trees.flatten(b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # A finished pretraining of the full recipe resumes for this one; the
  # fine-tune stage of the full recipe does not.
  for stage in ('pretrain', 'finetune'):
    os.makedirs(tmp_path / stage / 'best' / '1')
    trainer.write_config(full, str(tmp_path / stage))
  saved_config.check_resume(str(tmp_path / 'pretrain'), other, 'pretrain')
  with pytest.raises(ValueError, match='finetune.method'):
    saved_config.check_resume(str(tmp_path / 'finetune'), other, 'finetune')
