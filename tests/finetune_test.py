"""The training stage: loss falls, 4x2 mesh == 1 device, exact resume,
a diverging run stops, early stopping."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from rec_jax import finetune
from rec_jax import sharding
from rec_jax import trainer
from rec_jax.data import pipeline
import conftest


def smoke_config(**mesh):
  config = conftest.load_config('sasrec', 'smoke')
  config.checkpoint.async_save = False
  if mesh:
    config.mesh.update(mesh)
  return config


def test_step_lowers_loss_and_does_not_retrace():
  config = smoke_config(data=4, model=2)
  config, (ds, split) = _data(config)
  mesh = sharding.make_mesh(config.mesh)
  tx = optax.adam(1e-2)
  graphdef, abs_params, state, state_sh = finetune.fresh_state(
      config, ds.num_items, mesh, tx)
  seg = pipeline.make_segments(split.train, config.model.max_len, shift=True)
  stream = pipeline.TrainStream(seg, batch_size=8,
                                max_len=config.model.max_len, seed=0)
  batch = sharding.host_to_global(mesh, stream.batch(0, 0))
  step = finetune.make_train_step(config, graphdef, tx, state_sh, mesh,
                                  ds=ds)
  key = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
  state, m = step(state, batch, key)
  first = float(m['train/loss'])
  for _ in range(30):
    state, m = step(state, batch, key)
  assert float(m['train/loss']) < 0.7 * first
  assert step._cache_size() == 1  # pylint: disable=protected-access
  assert float(m['train/targets']) == (np.asarray(batch['targets']) > 0).sum()
  # Shardings survive the step: the item table stays split over `model`.
  assert state['params']['encoder']['item_embed'].sharding.spec == (
      jax.sharding.PartitionSpec('model', 'fsdp'))
  mu = state['opt_state'][0].mu['encoder']['item_embed']
  assert mu.sharding.spec == jax.sharding.PartitionSpec('model', 'fsdp')


def test_input_masking_and_label_smoothing_change_only_the_loss():
  """Both regularisers are off by default; on, the step still learns, the
  target count is unchanged (masking hides inputs, never targets) and the
  loss differs from the plain step's at the same params and key."""
  config = smoke_config()
  config, (ds, split) = _data(config)
  mesh = sharding.make_mesh(config.mesh)
  tx = optax.adam(1e-2)
  seg = pipeline.make_segments(split.train, config.model.max_len, shift=True)
  stream = pipeline.TrainStream(seg, batch_size=8,
                                max_len=config.model.max_len, seed=0)
  batch = sharding.host_to_global(mesh, stream.batch(0, 0))
  key = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
  first = {}
  for name, overrides in (('plain', {}),
                          ('masked', dict(input_mask_prob=0.3)),
                          ('smoothed', dict(label_smoothing=0.2))):
    variant = config.copy_and_resolve_references()
    variant.finetune.update(overrides)
    graphdef, _, state, state_sh = finetune.fresh_state(
        config, ds.num_items, mesh, tx)
    step = finetune.make_train_step(variant, graphdef, tx, state_sh, mesh,
                                    ds=ds)
    state, m = step(state, batch, key)
    first[name] = float(m['train/loss'])
    assert float(m['train/targets']) == (
        np.asarray(batch['targets']) > 0).sum()
    for _ in range(30):
      state, m = step(state, batch, key)
    assert float(m['train/loss']) < 0.8 * first[name], name
  assert first['masked'] != pytest.approx(first['plain'], rel=1e-4)
  assert first['smoothed'] != pytest.approx(first['plain'], rel=1e-4)
  config.finetune.loss = 'bce'
  config.finetune.label_smoothing = 0.1
  graphdef, _, state, state_sh = finetune.fresh_state(config, ds.num_items,
                                                      mesh, tx)
  with pytest.raises(ValueError, match='label_smoothing'):
    finetune.make_train_step(config, graphdef, tx, state_sh, mesh,
                             ds=ds)(state, batch, key)


def test_joint_objectives_add_their_loss_and_gradients():
  """finetune.aux: the step's loss is the next-item loss plus the weighted
  sequence-level losses over the batch's aux rows, and falls."""
  config = smoke_config()
  config.finetune.aux.objectives.contrastive = 0.5
  config.finetune.aux.objectives.duorec = 0.25
  config.finetune.aux.batch_size = 8
  config, (ds, split) = _data(config)
  mesh = sharding.make_mesh(config.mesh)
  tx = optax.adam(1e-2)
  seg = pipeline.make_segments(split.train, config.model.max_len, shift=True)
  stream = pipeline.JointStream(
      pipeline.TrainStream(seg, batch_size=8, max_len=config.model.max_len,
                           seed=0),
      pipeline.UserStream(split.train, batch_size=8,
                          max_len=config.model.max_len, seed=2,
                          random_prefix=False, partners=True))
  batch = sharding.host_to_global(mesh, stream.batch(0, 0))
  key = jax.device_put(jax.random.key(0), sharding.replicated(mesh))
  graphdef, abs_params, state, state_sh = finetune.fresh_state(
      config, ds.num_items, mesh, tx)
  step = finetune.make_train_step(config, graphdef, tx, state_sh, mesh,
                                  ds=ds, split=split)
  state, m = step(state, batch, key)
  expect = (m['train/next_item_loss'] + 0.5 * m['train/aux_contrastive']
            + 0.25 * m['train/aux_duorec'])
  assert float(m['train/loss']) == pytest.approx(float(expect), rel=1e-5)
  first = float(m['train/loss'])
  for _ in range(30):
    state, m = step(state, batch, key)
  assert float(m['train/loss']) < 0.8 * first
  assert np.isfinite(float(m['train/aux_contrastive']))
  config.finetune.aux.objectives = {'cloze': 1.0}
  with pytest.raises(ValueError, match='finetune.aux.objectives'):
    finetune.joint_weights(config.finetune)


def test_joint_objectives_need_the_causal_next_item_task(tmp_path):
  config = conftest.load_config('bert4rec', 'smoke')
  config.finetune.aux.objectives.contrastive = 0.1
  with pytest.raises(ValueError, match='causal next-item task only'):
    finetune.run(config, str(tmp_path))


def test_label_smoothing_needs_ce_before_any_data_is_read(tmp_path,
                                                           monkeypatch):
  config = smoke_config()
  config.finetune.loss = 'bce'
  config.finetune.label_smoothing = 0.1

  def no_data(*_):
    raise AssertionError('data read before the config was checked')

  monkeypatch.setattr(trainer, 'load_data', no_data)
  with pytest.raises(ValueError, match="label_smoothing=0.1 needs "
                     "finetune.loss='ce', not 'bce'"):
    finetune.run(config, str(tmp_path))


def _data(config):
  """(the config resolved on its data, (dataset, split))."""
  data = trainer.load_data(config)
  return trainer.resolved(config, data), data


def _run(tmp_path, name, config):
  workdir = os.path.join(tmp_path, name)
  return finetune.run(config, workdir), workdir


def test_4x2_mesh_matches_one_device(tmp_path):
  one, _ = _run(tmp_path, 'one', smoke_config(data=1, fsdp=1, model=1))
  mesh, _ = _run(tmp_path, 'mesh', smoke_config(data=4, fsdp=1, model=2))
  assert one['steps'] == mesh['steps']
  for k, v in one['best_valid'].items():
    assert mesh['best_valid'][k] == pytest.approx(v, abs=2e-3), k


def test_joint_objectives_and_relative_positions_on_4x2_mesh(tmp_path):
  """The whole stage with a joint contrastive objective (user rows
  sharded over `data`) and relative positions (the bias split over
  `model` by head) gives one device's numbers on a 4x2 mesh."""
  def config(**mesh):
    c = smoke_config(**mesh)
    c.model.positions = 'relative'
    c.finetune.aux.objectives.contrastive = 0.1
    c.finetune.aux.batch_size = 8
    return c
  one, _ = _run(tmp_path, 'one', config(data=1, fsdp=1, model=1))
  mesh, _ = _run(tmp_path, 'mesh', config(data=4, fsdp=1, model=2))
  assert one['steps'] == mesh['steps']
  for k, v in one['best_valid'].items():
    assert mesh['best_valid'][k] == pytest.approx(v, abs=2e-3), k


@pytest.mark.parametrize('eval_every_steps', [0, 5])
def test_resume_after_crash_is_exact(tmp_path, monkeypatch, eval_every_steps):
  config = smoke_config()
  config.checkpoint.every_steps = 4
  config.eval.every_steps = eval_every_steps  # validations within epochs.
  full, full_dir = _run(tmp_path, 'full', config)

  real_batch = pipeline.TrainStream.batch
  def crashing(self, epoch, index):
    if (epoch, index) == (1, 3):
      raise KeyboardInterrupt('simulated pre-emption')
    return real_batch(self, epoch, index)
  monkeypatch.setattr(pipeline.TrainStream, 'batch', crashing)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path, 'crashed', config)
  monkeypatch.setattr(pipeline.TrainStream, 'batch', real_batch)
  resumed, resumed_dir = _run(tmp_path, 'crashed', config)

  assert resumed['steps'] == full['steps']
  assert resumed['best_valid'] == full['best_valid']
  def losses(d):
    rows = [json.loads(l) for l in open(os.path.join(d, 'metrics.jsonl'))]
    return {r['step']: r['train/loss'] for r in rows if 'train/loss' in r}
  a, b = losses(full_dir), losses(resumed_dir)
  assert a == {s: b[s] for s in a}
  assert _eval_steps(full_dir) == _eval_steps(resumed_dir)


def _eval_steps(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r['step'] for r in rows if 'eval/valid/ndcg@10' in r]


def test_validation_every_steps_and_early_stopping_within_an_epoch(tmp_path):
  """eval.every_steps validates on that step cadence, across epoch ends,
  and early stopping may end the run inside an epoch; the summary reports
  compile time apart from the steady epochs."""
  config = smoke_config()
  config.finetune.num_epochs = 3
  every_epoch, _ = _run(tmp_path, 'epochs', config)
  per_epoch = every_epoch['steps'] // 3
  assert every_epoch['compilations'] >= 1
  assert 0 < every_epoch['compile_seconds'] < every_epoch['train_seconds']
  assert 0 < every_epoch['median_epoch_seconds'] < every_epoch[
      'train_seconds']

  config.eval.every_steps = 3
  summary, workdir = _run(tmp_path, 'steps', config)
  steps = _eval_steps(workdir)
  last = summary['steps']
  assert steps == list(range(3, last + 1, 3)) + ([last] if last % 3 else [])
  assert per_epoch % 3  # the cadence crosses epoch ends.

  config.finetune.num_epochs = 50
  config.finetune.patience = 2
  config.finetune.optimizer.lr = 1e-7  # nothing improves after the first.
  stopped, workdir = _run(tmp_path, 'stopped', config)
  assert stopped['stopped_early']
  assert _eval_steps(workdir) == [3, 6, 9]
  assert stopped['steps'] == 9


def test_bad_validation_cadence_is_refused(tmp_path):
  config = smoke_config()
  config.eval.every_steps = -1
  with pytest.raises(ValueError, match=r'eval.every_steps=-1 must be >= 0'):
    finetune.run(config, str(tmp_path))


def test_diverging_run_stops_at_its_first_step_and_saves_nothing(tmp_path):
  """lr=1e30 overflows the params in the first update: the run stops there,
  before any checkpoint could hold them (tests/faults_test.py injects NaN
  at a later step, after good checkpoints)."""
  config = smoke_config()
  config.finetune.optimizer.lr = 1e30
  config.checkpoint.every_steps = 1
  with pytest.raises(FloatingPointError,
                     match='Non-finite parameter norm after the step at step '
                     '1 .*No checkpoint was saved'):
    _run(tmp_path, 'nan', config)
  from rec_jax import checkpoints  # pylint: disable=g-import-not-at-top
  mgr = checkpoints.Manager(os.path.join(tmp_path, 'nan'), async_save=False)
  assert mgr.latest_step() is None
  mgr.close()


def test_early_stopping_with_patience(tmp_path):
  config = smoke_config()
  config.finetune.num_epochs = 50
  config.finetune.patience = 1
  config.finetune.optimizer.lr = 1e-7  # nothing improves after epoch 1.
  summary, _ = _run(tmp_path, 'early', config)
  assert summary['stopped_early']
  assert summary['epochs'] < 50
