"""Fault injection: each fault a run can meet, and what the run does then.

NaN in the parameters or the loss, NaN / inf scores at evaluation, a
truncated or corrupted latest checkpoint, a disk that fills while saving,
SIGTERM during a save. Every case ends in a clear error or a clean resume,
never in a wrong number.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_jax import checkpoints
from rec_jax import finetune
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
