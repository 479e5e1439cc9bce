"""The self-supervised pretraining stage.

  python -m rec_jax.main --config=configs/cl4srec.py:dataset=beauty \
      --workdir=/tmp/cl4srec_beauty --stage=pretrain

Trains a PretrainModel (the sequence encoder plus objective heads) on every
user's training items with the weighted objectives of
`config.pretrain.objectives` (see rec_jax.objectives), for a fixed number of
epochs, one user per row in length buckets. Checkpoints go under the stage
workdir; the final params are saved as its `best/` checkpoint, which the
fine-tune stage reads through the bridge (rec_jax.bridge). Re-running
resumes.
"""

import functools
import os

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax import checkpoints
from rec_jax import objectives
from rec_jax import optimizers
from rec_jax import peft
from rec_jax import sharding
from rec_jax import trainer
from rec_jax import writers
from rec_jax.data import augment
from rec_jax.data import pipeline
from rec_jax.models import sequence


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
  return lambda rngs: sequence.build_pretrain(
      config.model, ds.num_items, num_attributes=ds.num_attributes,
      s3rec_heads=s3rec, rngs=rngs)


def context(config, ds, split, weights, vocab: int, mesh):
  """objectives.Context: the tables the active objectives need (correlated
  items from training sequences only). They stay host (numpy) arrays: the
  step closes over them, so they are compiled in as constants, replicated on
  every device. A device array there would be copied back to the host at
  every trace, which the train loop's transfer guard forbids off CPU."""
  cfg = config.pretrain
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


def epochs_for(cfg, stream) -> int:
  """num_epochs, raised until the run has at least min_steps steps: small
  datasets (a few steps per epoch) get more passes, large ones fewer.

  With cfg.epochs_per_pass (off by default: on ML-1M, where it gives 80
  epochs in place of 20, it did not beat scratch on test; see
  benchmarks/results/ablations.md) num_epochs counts passes over the
  training items rather than epochs of one window per user: each pass is
  pipeline.window_passes epochs, so that users with more than max_len
  training items are seen in full (ML-1M: 4 epochs a pass; the Amazon
  sets and LastFM, whose users mostly fit in max_len or whose min_steps
  already asks for more: unchanged)."""
  per_epoch = max(stream.steps_in_epoch(0), 1)
  epochs = int(cfg.num_epochs)
  if cfg.get('epochs_per_pass', False):
    epochs *= pipeline.window_passes(stream.lengths, stream.max_len)
  return max(epochs, -(-int(cfg.min_steps) // per_epoch))


def pretrain_step(state, batch, key, *, graphdef, tx, ctx, weights):
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
                  'train/rows': jnp.sum(batch['lengths'] > 0)})
  return dict(step=state['step'] + 1, params=params,
              opt_state=opt_state), metrics


def run(config, workdir: str) -> dict:
  """Pretrains; returns a summary with `train_seconds` and `epochs`."""
  cfg = config.pretrain
  os.makedirs(workdir, exist_ok=True)
  ds, split = trainer.load_data(config)
  weights = objectives.active(cfg.objectives)
  logging.info('Pretraining on %s with %s.', ds.name, weights)

  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(cfg.batch_size, mesh, 'pretrain.batch_size')
  stream = pipeline.UserStream(
      split.train, batch_size=cfg.batch_size, max_len=config.model.max_len,
      seed=config.seed + 1, row_slice=sharding.process_rows(cfg.batch_size),
      random_prefix=cfg.random_prefix, partners='duorec' in weights)
  num_epochs = epochs_for(cfg, stream)
  total_steps = sum(stream.steps_in_epoch(e) for e in range(num_epochs))
  logging.info('Pretraining for %d epochs (~%d steps).', num_epochs,
               total_steps)

  build = builder(config, ds)
  graphdef, abs_params, param_sh = trainer.abstract_model(build, config, mesh)
  trainer.log_params(abs_params, param_sh)
  tx, lr_schedule = optimizers.make(cfg.optimizer, total_steps)
  tx = peft.wrap(tx, abs_params, 'full', config.model.num_layers)
  abs_opt, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  vocab = abs_params['encoder']['item_embed'].shape[0]

  ctx = context(config, ds, split, weights, vocab, mesh)

  ckpt = checkpoints.Manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                             async_save=config.checkpoint.async_save)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(trainer.abstract_state(abs_params, abs_opt,
                                                      state_sh))
    logging.info('Resumed pretraining from %s (epoch %d, batch %d).',
                 workdir, meta['epoch'], meta['index'])
  else:
    params = trainer.init_params(build, config, mesh, param_sh, config.seed)
    params = trainer.fill_text_features(config, ds, params, param_sh)
    state = trainer.init_state(tx, params, state_sh, mesh)
    meta = trainer.fresh_meta()
    with open(os.path.join(workdir, 'config.json'), 'w',
              encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  step_fn = trainer.jit_step(functools.partial(
      pretrain_step, graphdef=graphdef, tx=tx, ctx=ctx, weights=weights),
                             state_sh, mesh)
  key = sharding.put_replicated(mesh, jax.random.key(config.seed + 1))
  writer = writers.MetricWriter(workdir)
  spec = trainer.LoopSpec(
      stream=stream, step_fn=step_fn, num_epochs=num_epochs,
      lr_schedule=lr_schedule, log_every=config.log_every_steps,
      checkpoint_every=config.checkpoint.every_steps, desc='pretrain')
  state, meta = trainer.fit(spec, state=state, meta=meta, ckpt=ckpt,
                            writer=writer, mesh=mesh, key=key, workdir=workdir)
  ckpt.close()
  writer.close()
  step = int(jax.device_get(state['step']))
  return dict(epochs=meta['epoch'], steps=step,
              train_seconds=meta['train_seconds'],
              seconds_per_epoch=meta['train_seconds'] / max(meta['epoch'], 1),
              objectives=weights, hardware=trainer.hardware())
