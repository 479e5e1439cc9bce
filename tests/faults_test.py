"""Fault injection: each fault a run can meet, and what the run does then.

NaN in the parameters or the loss, NaN / inf scores at evaluation, a
truncated or corrupted latest checkpoint, a disk that fills while saving,
SIGTERM during a save. Every case ends in a clear error or a clean resume,
never in a wrong number.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_jax import checkpoints
from rec_jax import evaluate
from rec_jax import finetune
from rec_jax import metrics
from rec_jax import optimizers
from rec_jax import sharding
from rec_jax import trainer
import conftest


def smoke_config():
  config = conftest.load_config('sasrec', 'smoke')
  config.checkpoint.async_save = False
  config.checkpoint.every_steps = 2
  return config


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
    tmp_path, monkeypatch, fault):
  config = smoke_config()
  full = finetune.run(config, str(tmp_path / 'full'))
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
  # The run resumes from it and ends as the run that met no fault.
  resumed = finetune.run(config, workdir)
  assert resumed['steps'] == full['steps']
  assert resumed['best_valid'] == full['best_valid']


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
