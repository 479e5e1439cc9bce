"""Fault injection: each fault a run can meet, and what the run does then.

NaN in the parameters or the loss, NaN / inf scores at evaluation, a
truncated or corrupted latest checkpoint, a disk that fills while saving,
SIGTERM during a save. Every case ends in a clear error or a clean resume,
never in a wrong number.
"""

import dataclasses
import errno
import json
import os
import shutil
import signal
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rec_jax import checkpoints
from rec_jax import evaluate
from rec_jax import finetune
from rec_jax import metrics
from rec_jax import optimizers
from rec_jax import sharding
from rec_jax import trainer
from rec_jax.data import pipeline
import conftest


# A failed TensorStore read of a damaged checkpoint leaves a callback for an
# event loop already closed, which Python reports as unraisable (at some
# later test); the read's error itself is handled: the step is set aside.
pytestmark = pytest.mark.filterwarnings(
    'ignore::pytest.PytestUnraisableExceptionWarning')


def smoke_config():
  config = conftest.load_config('sasrec', 'smoke')
  config.checkpoint.async_save = False
  config.checkpoint.every_steps = 2
  return config


@pytest.fixture(scope='module')
def full(tmp_path_factory):
  """The summary of the smoke fine-tune that meets no fault."""
  return finetune.run(smoke_config(), str(tmp_path_factory.mktemp('full')))


@pytest.fixture(scope='module')
def crashed(tmp_path_factory):
  """A smoke fine-tune that died at step 9, after checkpoints 6 and 8
  (tests damage copies of it)."""
  workdir = str(tmp_path_factory.mktemp('crashed') / 'run')
  with pytest.MonkeyPatch.context() as monkeypatch:
    _crash_at(monkeypatch, 0, 9)
    with pytest.raises(KeyboardInterrupt):
      finetune.run(smoke_config(), workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['6',
                                                                      '8']
  return workdir


def _resumes_like(full, workdir, from_step=None):
  """The stage started again in `workdir` (whose latest checkpoint is
  `from_step`, when given) ends as the run that met no fault."""
  if from_step is not None:
    mgr = checkpoints.Manager(workdir, async_save=False)
    assert mgr.latest_step() == from_step
    mgr.close()
  resumed = finetune.run(smoke_config(), workdir)
  assert resumed['steps'] == full['steps']
  assert resumed['best_valid'] == full['best_valid']


def _latest_state(config, workdir):
  """(step, state) of the latest checkpoint in a fine-tuning workdir."""
  data = trainer.load_data(config)
  config, ds = trainer.resolved(config, data), data[0]
  mesh = sharding.make_mesh(config.mesh)
  _, abs_params, param_sh = finetune.abstract_model(config, ds.num_items,
                                                    mesh)
  tx, _ = optimizers.make(config.finetune.optimizer, 1)
  abs_opt, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  mgr = checkpoints.Manager(workdir, async_save=False)
  try:
    step = mgr.latest_step()
    state, _ = mgr.restore(trainer.abstract_state(abs_params, abs_opt,
                                                  state_sh))
  finally:
    mgr.close()
  return step, state


def _inject(monkeypatch, at_step, fault):
  """Makes the stage's step `at_step` (1-based, counted in this process)
  meet `fault`: 'params' poisons the params entering it with NaN, 'loss'
  the loss it reports."""
  real_fit = trainer.fit
  # Jitted: NaN is then a constant of the computation, not a host value
  # (the loop runs under transfer_guard('disallow')).
  poison = jax.jit(lambda tree: jax.tree.map(lambda x: x * jnp.nan, tree))

  def fit(spec, **kwargs):
    calls = [0]
    inner = spec.step_fn

    def step_fn(state, batch, key):
      calls[0] += 1
      if calls[0] == at_step and fault == 'params':
        state = dict(state, params=poison(state['params']))
      state, metrics = inner(state, batch, key)
      if calls[0] == at_step and fault == 'loss':
        metrics = dict(metrics, **{'train/loss': poison(
            metrics['train/loss'])})
      return state, metrics

    return real_fit(dataclasses.replace(spec, step_fn=step_fn), **kwargs)

  monkeypatch.setattr(trainer, 'fit', fit)


@pytest.mark.parametrize('fault', ['params', 'loss'])
def test_nan_at_step_n_stops_naming_it_and_the_last_good_checkpoint_restores(
    tmp_path, monkeypatch, fault, full):
  config = smoke_config()
  workdir = str(tmp_path / 'faulty')
  _inject(monkeypatch, 5, fault)
  # NaN params entering step 5 make its loss NaN too: both name step 5.
  with pytest.raises(FloatingPointError,
                     match='Non-finite training loss at step 5 .*last good '
                     f'checkpoint, {workdir}/checkpoints/4;'):
    finetune.run(config, workdir)
  monkeypatch.undo()
  step, state = _latest_state(config, workdir)
  assert step == 4 and int(state['step']) == 4
  assert all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree.leaves(state))
  _resumes_like(full, workdir)  # from checkpoint 4.


# ------------------------------------------------- scores at evaluation ----


def test_non_finite_scores_are_refused_naming_the_rows():
  inf, nan = float('inf'), float('nan')
  scores = jnp.array([[-inf, 1.0, 2.0, 3.0],    # fine: item 0 excluded.
                      [-inf, nan, 2.0, 3.0],    # NaN beside the target.
                      [-inf, 1.0, inf, 3.0],    # +inf beside it.
                      [-inf, 1.0, 2.0, nan],    # the target's own NaN.
                      [-inf, 1.0, 2.0, -inf],   # the target excluded.
                      [-inf, 1.0, 5.0, 3.0]])
  ranks = metrics.target_rank(scores, jnp.array([2, 2, 3, 3, 3, 3]))
  np.testing.assert_array_equal(ranks, [1, -1, -1, -1, -1, 1])
  with pytest.raises(FloatingPointError,
                     match=r'scores .* for 4 of 6 evaluated users, at rows '
                     r'\[1, 2, 3, 4\]: no metric'):
    metrics.from_ranks(np.asarray(ranks), xp=np)
  assert metrics.from_ranks(np.asarray(ranks)[[0, 5]], xp=np)['mrr'].tolist(
  ) == [0.5, 0.5]


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_evaluation_of_a_model_with_non_finite_outputs_raises(monkeypatch,
                                                              value):
  """Full ranking and candidate scores of users whose encodings hold NaN
  or inf raise naming exactly those rows."""
  config = smoke_config()
  data = trainer.load_data(config)
  config, (ds, split) = trainer.resolved(config, data), data
  mesh = sharding.make_mesh(config.mesh)
  tx, _ = optimizers.make(config.finetune.optimizer, 1)
  graphdef, _, state, _ = finetune.fresh_state(config, ds.num_items, mesh, tx)
  evaluator = evaluate.make_evaluator(config, graphdef, mesh, ds.num_items)
  hist, target = split.valid_history, split.valid_target
  metrics_before, _ = evaluator.full_ranking(state['params'], hist, target)
  assert all(np.isfinite(v) for v in metrics_before.values())
  real = evaluate.Evaluator.user_vectors

  def user_vectors(self, params, histories):
    users = real(self, params, histories).copy()
    users[[3, 17], 0] = value
    return users

  monkeypatch.setattr(evaluate.Evaluator, 'user_vectors', user_vectors)
  with pytest.raises(FloatingPointError, match=r'at rows \[3, 17\]'):
    evaluator.full_ranking(state['params'], hist, target)
  cands = np.stack([target, np.ones_like(target)], axis=1)
  with pytest.raises(FloatingPointError,
                     match=r'candidate scores .* at rows \[3, 17\]'):
    evaluator.candidate_scores(state['params'], hist, cands)


# ---------------------------------------------------------- checkpoints ----


def _crash_at(monkeypatch, epoch, index):
  """The stage dies (as if pre-empted) when it asks for this batch."""
  real = pipeline.TrainStream.batch

  def batch(self, e, i):
    if (e, i) == (epoch, index):
      raise KeyboardInterrupt('simulated pre-emption')
    return real(self, e, i)

  monkeypatch.setattr(pipeline.TrainStream, 'batch', batch)


def _damage(step_dir, how):
  state = os.path.join(step_dir, 'state')
  files = sorted((os.path.getsize(os.path.join(d, f)), os.path.join(d, f))
                 for d, _, names in os.walk(state) for f in names
                 if '/d/' in os.path.join(d, f))
  if how == 'truncated':  # a write cut short: every data file halved.
    for size, path in files:
      with open(path, 'r+b') as f:
        f.truncate(size // 2)
  elif how == 'bit_flip':  # a flipped bit in the middle of each data file
    for size, path in files:  # (OCDBT keeps copies; restores read one).
      with open(path, 'r+b') as f:
        f.seek(size // 2)
        byte = f.read(1)
        f.seek(size // 2)
        f.write(bytes([byte[0] ^ 0x10]))
  elif how == 'meta':  # the loop's JSON cut short.
    path = os.path.join(step_dir, 'meta', 'metadata')
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  elif how == 'fingerprint':  # reads back, but not what was written.
    path = os.path.join(step_dir, 'meta', 'metadata')
    with open(path, encoding='utf-8') as f:
      meta = json.load(f)
    meta['_state_fingerprint'][0] = 'deadbeef'
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(meta, f)
  elif how == 'missing_state':
    shutil.rmtree(state)


@pytest.mark.parametrize('how', ['truncated', 'bit_flip', 'meta',
                                 'fingerprint', 'missing_state'])
def test_damaged_latest_checkpoint_resumes_from_the_one_before(
    tmp_path, monkeypatch, how, full, crashed):
  workdir = str(shutil.copytree(crashed, tmp_path / 'run'))
  _damage(os.path.join(workdir, 'checkpoints', '8'), how)
  warnings = []
  monkeypatch.setattr(checkpoints.logging, 'warning',
                      lambda msg, *a: warnings.append(msg % a))
  _resumes_like(full, workdir)
  set_aside, = os.listdir(os.path.join(workdir, 'corrupt'))
  assert set_aside.startswith('8-')
  assert any('checkpoints/8 does not read back' in w and
             'resumed from step 6' in w for w in warnings), warnings


def test_no_readable_checkpoint_is_an_error_and_moves_nothing(tmp_path,
                                                              crashed):
  config = smoke_config()
  workdir = str(shutil.copytree(crashed, tmp_path / 'run'))
  for step in ('6', '8'):
    _damage(os.path.join(workdir, 'checkpoints', step), 'fingerprint')
  with pytest.raises(checkpoints.CheckpointError,
                     match=r'No checkpoint under .* reads back: step 8: .*'
                     r'fingerprint.*; step 6: '):
    finetune.run(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['6',
                                                                      '8']
  assert not os.path.exists(os.path.join(workdir, 'corrupt'))


def _on_meta_save(monkeypatch, step, action):
  """Runs `action(write)` in place of writing the loop's JSON for `step`'s
  checkpoint (`write()` writes it as Orbax would)."""
  handler = ocp.handlers.JsonCheckpointHandler
  real = handler._save_fn  # pylint: disable=protected-access

  async def save_fn(self, x, directory):
    # The item's directory sits in the step's: <step>[.orbax-...-tmp]/meta.
    name = os.path.basename(os.path.dirname(str(directory)))
    if name.split('.')[0] == str(step):
      return await action(lambda: real(self, x, directory), directory)
    return await real(self, x, directory)

  monkeypatch.setattr(handler, '_save_fn', save_fn)


@pytest.mark.parametrize('async_save', [False, True])
def test_disk_full_while_saving_leaves_no_checkpoint_to_restore(
    tmp_path, monkeypatch, full, async_save):
  config = smoke_config()
  config.checkpoint.async_save = async_save
  workdir = str(tmp_path / 'run')

  async def disk_full(write, directory):
    del write
    with open(os.path.join(str(directory), 'metadata'), 'w',
              encoding='utf-8') as f:
      f.write('{"epoch": 0, "ind')  # as far as the disk had room for.
    raise OSError(errno.ENOSPC, 'No space left on device')

  _on_meta_save(monkeypatch, 8, disk_full)
  with pytest.raises(Exception) as failed:  # pylint: disable=broad-except
    finetune.run(config, workdir)
  assert 'No space left on device' in repr(failed.value) + ''.join(
      traceback.format_exception(failed.value))
  monkeypatch.undo()
  _resumes_like(full, workdir, from_step=6)  # step 8 never looks finished.
  assert not os.path.exists(os.path.join(workdir, 'corrupt'))


@pytest.mark.parametrize('async_save', [False, True])
def test_sigterm_during_a_save_stops_after_it_and_resumes(
    tmp_path, monkeypatch, full, async_save):
  config = smoke_config()
  config.checkpoint.async_save = async_save
  workdir = str(tmp_path / 'run')

  async def sigterm(write, directory):
    del directory
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # the signal arrives while the save is under way.
    return await write()

  _on_meta_save(monkeypatch, 8, sigterm)
  with pytest.raises(trainer.Preempted) as stopped:
    finetune.run(config, workdir)
  assert stopped.value.code == 143 and stopped.value.step >= 8
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored.
  monkeypatch.undo()
  _resumes_like(full, workdir, from_step=stopped.value.step)


def test_fingerprint_is_the_same_on_host_and_device_and_sees_one_bit():
  rng = np.random.default_rng(0)
  tree = dict(w=jnp.asarray(rng.normal(size=(7, 5)), jnp.float32),
              h=jnp.asarray(rng.normal(size=(9,)), jnp.bfloat16),
              step=jnp.int32(12), mask=jnp.asarray([True, False, True]),
              q=jnp.arange(-3, 3, dtype=jnp.int8))
  host = checkpoints.fingerprint(tree)
  device = [f'{int(h):08x}' for h in jax.device_get(
      checkpoints._hashes(tree))]  # pylint: disable=protected-access
  assert host == device
  w = np.asarray(tree['w']).copy()
  for bit in (0, 17, 31):
    flipped = w.copy()
    flipped.view(np.uint32)[3, 2] ^= np.uint32(1 << bit)
    got = checkpoints.fingerprint(dict(tree, w=jnp.asarray(flipped)))
    i = sorted(tree).index('w')  # leaves come in sorted-key order.
    assert got[i] != host[i] and got[:i] + got[i + 1:] == host[:i] + host[
        i + 1:], bit
