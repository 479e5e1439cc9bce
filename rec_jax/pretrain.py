"""The self-supervised pretraining stage.

  python -m rec_jax.main --config=configs/cl4srec.py:dataset=beauty \
      --workdir=/tmp/cl4srec_beauty --stage=pretrain

Trains a PretrainModel (the sequence encoder plus objective heads) on every
user's training items with the weighted objectives of
`config.pretrain.objectives` (see rec_jax.objectives), for
`pretrain.epochs` (set from the data: config_lib.pretrain_epochs), one user
per row in length buckets. Checkpoints go under the stage workdir; the
final params are saved as its `best/` checkpoint, which the fine-tune stage
reads through the bridge (rec_jax.bridge). Re-running resumes.
"""

import functools

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax import item_text
from rec_jax import models
from rec_jax import objectives
from rec_jax import optimizers
from rec_jax import peft
from rec_jax import sharding
from rec_jax import trainer
from rec_jax import writers
from rec_jax.data import augment
from rec_jax.data import pipeline
from rec_jax.models import items


def needs_attributes(weights) -> bool:
  return any(k in objectives.S3REC for k in weights)


def builder(config, ds):
  """rngs -> PretrainModel for this dataset and recipe."""
  weights = objectives.active(config.pretrain.objectives)
  s3rec = needs_attributes(weights)
  if s3rec and not ds.num_attributes:
    raise ValueError(
        f'pretrain.objectives {sorted(set(weights) & set(objectives.S3REC))} '
        f'need item attributes, and dataset {ds.name!r} has none.')
  return lambda rngs: models.build_pretrain(
      config.model, ds.num_items, num_attributes=ds.num_attributes,
      s3rec_heads=s3rec, rngs=rngs)


def context(config, ds, split, weights, mesh):
  """objectives.Context: the tables the active objectives need (correlated
  items from training sequences only). They stay host (numpy) arrays: the
  step closes over them, so they are compiled in as constants, replicated on
  every device. A device array there would be copied back to the host at
  every trace, which the train loop's transfer guard forbids off CPU."""
  cfg = config.pretrain
  vocab = items.vocab_size(ds.num_items, config.model.vocab_multiple)
  similar = attributes = None
  ops = [o for o in cfg.augment.ops.split(',') if o]
  if 'contrastive' in weights and {'substitute', 'insert'} & set(ops):
    similar = np.asarray(augment.item_correlations(
        split.train, ds.num_items, vocab, k=cfg.augment.num_correlated))
  if needs_attributes(weights):
    attributes = np.asarray(objectives.attribute_table(ds, vocab))
  return objectives.Context(
      num_items=ds.num_items, causal=config.model.causal, cfg=cfg,
      attributes=attributes, num_attributes=ds.num_attributes,
      similar=similar, num_groups=sharding.data_parallel_size(mesh))


def user_stream(config, train, *, row_slice=None, row_multiple: int = 1):
  """The pretraining stream: one window per user and epoch, packed several
  users to a row when the model family packs and pretrain.packed is on
  (each slot as long as the window plus what the contrastive
  augmentations may add), else one user per row in length buckets."""
  cfg = config.pretrain
  weights = objectives.active(cfg.objectives)
  ops = ([o for o in cfg.augment.ops.split(',') if o]
         if 'contrastive' in weights else [])
  packed = bool(cfg.packed) and models.packs_rows(config.model)
  return pipeline.UserStream(
      train, batch_size=cfg.batch_size, max_len=config.model.max_len,
      seed=config.seed + 1, row_slice=row_slice,
      random_prefix=cfg.random_prefix, partners='duorec' in weights,
      packed=packed, row_multiple=row_multiple,
      slot=lambda n: n + augment.max_growth(ops, cfg.augment, n))


def pretrain_step(state, batch, key, *, graphdef, tx, ctx, weights):
  """One optimizer step on the weighted objectives. Returns (state,
  scalar metrics)."""
  key = jax.random.fold_in(key, state['step'])

  def loss_fn(params):
    model = nnx.merge(graphdef, params)
    return objectives.total_loss(model, batch, key, ctx, weights)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  metrics.update({'train/loss': loss,
                  'train/grad_norm': optax.tree.norm(grads),
                  'train/param_norm': optax.tree.norm(params),
                  'train/rows': jnp.sum(batch['lengths'] > 0)})
  return dict(step=state['step'] + 1, params=params,
              opt_state=opt_state), metrics


def run(config, workdir: str, data=None) -> dict:
  """Pretrains; returns a summary with `train_seconds` and `epochs`.

  `data`: (dataset, split) as trainer.load_data gives them (loaded when
  None)."""
  # Setup.
  config, ds, split = trainer.setup(config, workdir, data)
  cfg = config.pretrain
  weights = objectives.active(cfg.objectives)
  logging.info('Pretraining on %s with %s.', ds.name, weights)

  # Mesh.
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(cfg.batch_size, mesh, 'pretrain.batch_size')

  # Data: one user per row (the objectives' views are per user).
  stream = user_stream(config, split.train,
                       row_slice=sharding.process_rows(cfg.batch_size),
                       row_multiple=sharding.data_parallel_size(mesh))
  total_steps = sum(stream.steps_in_epoch(e) for e in range(cfg.epochs))
  logging.info('Pretraining for %d epochs (~%d steps).', cfg.epochs,
               total_steps)

  # Model and optimizer.
  build = builder(config, ds)
  graphdef, abs_params, param_sh = trainer.abstract_model(build, config, mesh)
  trainer.log_params(abs_params, param_sh)
  tx, lr_schedule = optimizers.make(cfg.optimizer, total_steps)
  # Every parameter trains but the constants (item text inputs).
  tx = peft.wrap(tx, abs_params, 'full', config.model.num_layers)
  _, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)

  # Init: resume this stage > fresh.
  def fresh():
    params = trainer.init_params(build, config, mesh, param_sh, config.seed)
    return (item_text.fill_params(config.model, ds, params, param_sh),
            trainer.fresh_meta())
  ckpt, state, meta, _ = trainer.start(
      config, workdir, tx=tx, abs_params=abs_params, param_sh=param_sh,
      mesh=mesh, fresh=fresh)

  # Step.
  step_fn = trainer.jit_step(functools.partial(
      pretrain_step, graphdef=graphdef, tx=tx,
      ctx=context(config, ds, split, weights, mesh), weights=weights),
                             state_sh, mesh)
  key = sharding.put_replicated(mesh, jax.random.key(config.seed + 1))

  # Loop.
  writer = writers.MetricWriter(workdir)
  spec = trainer.LoopSpec(
      stream=stream, step_fn=step_fn, num_epochs=cfg.epochs,
      lr_schedule=lr_schedule, log_every=config.log_every_steps,
      checkpoint_every=config.checkpoint.every_steps,
      checkpoint_min_steps=config.checkpoint.min_steps, desc='pretrain',
      total_steps=total_steps)
  state, meta = trainer.fit(spec, state=state, meta=meta, ckpt=ckpt,
                            writer=writer, mesh=mesh, key=key, workdir=workdir)
  ckpt.close()
  writer.close()
  step = int(jax.device_get(state['step']))
  return dict(epochs=meta['epoch'], steps=step,
              train_seconds=meta['train_seconds'],
              seconds_per_epoch=meta['train_seconds'] / max(meta['epoch'], 1),
              median_epoch_seconds=trainer.median_epoch_seconds(meta),
              compile_seconds=meta['compile_seconds'],
              compilations=meta['compilations'],
              objectives=weights, hardware=trainer.hardware())
