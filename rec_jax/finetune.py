"""The next-item training stage: train a sequence encoder on the training
part of a leave-one-out split, early-stopped on validation NDCG@10.

  python -m rec_jax.main --config=configs/sasrec.py:dataset=beauty \
      --workdir=/tmp/sasrec_beauty --stage=finetune

Start-up precedence: (1) resume from this stage's own checkpoints if any;
(2) else fresh initialisation. (Initialising from a pretrained encoder,
`config.init_from`, slots in between (1) and (2).)
"""

import functools
import json
import os
import time

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

from rec_jax import checkpoints
from rec_jax import evaluate
from rec_jax import losses
from rec_jax import optimizers
from rec_jax import sharding
from rec_jax import writers
from rec_jax.data import datasets
from rec_jax.data import pipeline
from rec_jax.models import sequence

# ---------------------------------------------------------------- setup ----


def load_data(config):
  """The dataset named by config.data, and its leave-one-out split."""
  kwargs = {}
  if config.data.name == 'synthetic':
    kwargs = dict(config.data.synthetic)
  ds = datasets.load(config.data.name, data_dir=config.data.data_dir or None,
                     cache_dir=config.data.cache_dir or None, **kwargs)
  return ds, pipeline.leave_one_out(ds)


def abstract_model(config, num_items: int, mesh):
  """(graphdef, abstract params as a pure dict, param shardings)."""
  with sharding.use(mesh, config.axis_rules):
    model = nnx.eval_shape(
        lambda: sequence.build(config.model, num_items, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model, nnx.Param)
    shardings = nnx.to_pure_dict(nnx.get_named_sharding(params, mesh))
  return graphdef, nnx.to_pure_dict(params), shardings


def init_params(config, num_items: int, mesh, shardings, seed: int):
  """Fresh params created directly with their shardings."""
  def init(key):
    model = sequence.build(config.model, num_items, rngs=nnx.Rngs(key))
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))
  with sharding.use(mesh, config.axis_rules):
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


# ----------------------------------------------------------------- step ----


def train_step(state, batch, key, *, graphdef, tx, cfg, num_items: int,
               log_q):
  """One optimizer step. Returns (state, scalar metrics)."""
  key = jax.random.fold_in(key, state['step'])
  k_drop, k_mask, k_loss = jax.random.split(key, 3)
  inputs, targets = batch['inputs'], batch['targets']
  if cfg.objective == 'cloze':
    # Hide a random subset of real positions behind [MASK]; predict them.
    hide = jax.random.bernoulli(k_mask, cfg.mask_prob, inputs.shape)
    hide &= batch['segment_ids'] > 0
    targets = jnp.where(hide, inputs, 0)
    inputs = jnp.where(hide, num_items + 1, inputs)

  def loss_fn(params):
    model = nnx.merge(graphdef, params)
    hidden = model.encoder(inputs, batch['positions'], batch['segment_ids'],
                           key=k_drop)
    table = model.encoder.item_table()
    if cfg.loss == 'ce':
      total, count = losses.full_softmax_ce(hidden, targets, table, num_items)
    elif cfg.loss == 'bce':
      total, count = losses.sampled_bce(hidden, targets, table, num_items,
                                        k_loss, cfg.num_negatives)
    elif cfg.loss == 'sampled_softmax':
      total, count = losses.sampled_softmax(hidden, targets, table, num_items,
                                            k_loss, cfg.num_negatives, log_q)
    else:
      raise ValueError(f'finetune.loss={cfg.loss!r}')
    return total / jnp.maximum(count, 1.0), count

  (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state['params'])
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  new_state = dict(step=state['step'] + 1, params=params, opt_state=opt_state)
  return new_state, {'train/loss': loss, 'train/targets': count,
                     'train/grad_norm': optax.global_norm(grads),
                     'train/param_norm': optax.global_norm(params)}


def state_shardings(tx, abs_params, param_sh, mesh):
  """(abstract optimizer state, shardings of the whole train state)."""
  abs_opt = jax.eval_shape(tx.init, abs_params)
  return abs_opt, dict(
      step=sharding.replicated(mesh), params=param_sh,
      opt_state=sharding.opt_state_shardings(tx, abs_opt, param_sh, mesh))


def jit_train_step(cfg, graphdef, tx, state_sh, mesh, num_items, log_q=None):
  """train_step jitted once with explicit in/out shardings."""
  return jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, cfg=cfg,
                        num_items=num_items, log_q=log_q),
      in_shardings=(state_sh, sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=(state_sh, sharding.replicated(mesh)),
      donate_argnums=0)


def init_state(tx, params, state_sh, mesh):
  """{'step': 0, 'params', 'opt_state'} laid out with `state_sh`."""
  with jax.set_mesh(mesh):
    return jax.jit(lambda p: dict(step=jnp.zeros((), jnp.int32), params=p,
                                  opt_state=tx.init(p)),
                   out_shardings=state_sh)(params)


# ----------------------------------------------------------------- loop ----


def run(config, workdir: str) -> dict:
  """Trains, early-stops on validation, keeps the best checkpoint.

  Returns:
    A summary: best validation metrics, best step, epochs, train seconds.

  Raises:
    FloatingPointError: when the loss turns non-finite (the last good
      checkpoint is kept).
  """
  cfg = config.finetune
  os.makedirs(workdir, exist_ok=True)
  ds, split = load_data(config)
  logging.info('Dataset %s: %d users, %d items, %d interactions.', ds.name,
               ds.num_users, ds.num_items, ds.num_interactions)

  # Mesh.
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(cfg.batch_size, mesh, 'finetune.batch_size')

  # Data.
  max_len = config.model.max_len
  segments = pipeline.make_segments(split.train, max_len,
                                    shift=cfg.objective == 'causal')
  stream = pipeline.TrainStream(
      segments, batch_size=cfg.batch_size, max_len=max_len, seed=config.seed,
      row_slice=sharding.process_rows(cfg.batch_size))
  steps_per_epoch = stream.steps_in_epoch(0)
  total_steps = steps_per_epoch * cfg.num_epochs
  logging.info('%d training targets in %d segments; ~%d steps per epoch.',
               segments.num_targets, len(segments.lengths), steps_per_epoch)

  # Model and optimizer.
  graphdef, abs_params, param_sh = abstract_model(config, ds.num_items, mesh)
  tx, lr_schedule = optimizers.make(cfg.optimizer, total_steps)
  abs_opt, state_sh = state_shardings(tx, abs_params, param_sh, mesh)
  log_q = None
  if cfg.loss == 'sampled_softmax' and cfg.sampler == 'popularity':
    counts = np.bincount(segments.targets, minlength=ds.num_items + 1)
    vocab = abs_params['encoder']['item_embed'].shape[0]
    log_q = jnp.asarray(losses.popularity_log_q(counts, ds.num_items, vocab))
  _log_params(abs_params, param_sh)

  # Sharded init, or resume.
  ckpt = checkpoints.Manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                             async_save=config.checkpoint.async_save)
  abs_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      dict(step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_params,
           opt_state=abs_opt), state_sh)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(abs_state)
    logging.info('Resumed from %s/checkpoints/%d (epoch %d, batch %d).',
                 workdir, ckpt.latest_step(), meta['epoch'], meta['index'])
  else:
    params = init_params(config, ds.num_items, mesh, param_sh, config.seed)
    state = init_state(tx, params, state_sh, mesh)
    meta = dict(epoch=0, index=0, best=None, best_step=-1, best_epoch=-1,
                bad_evals=0, train_seconds=0.0, evals=[], stopped_early=False)
    with open(os.path.join(workdir, 'config.json'), 'w',
              encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  # Step.
  step_fn = jit_train_step(cfg, graphdef, tx, state_sh, mesh, ds.num_items,
                           log_q)
  key = jax.device_put(jax.random.key(config.seed), sharding.replicated(mesh))
  evaluator = evaluate.Evaluator(
      graphdef=graphdef, mesh=mesh, max_len=max_len,
      mask_id=ds.num_items + 1 if not config.model.causal else None,
      batch_size=config.eval.batch_size, top_k=config.eval.top_k,
      exclude_history=config.eval.exclude_history)
  writer = writers.MetricWriter(workdir)
  metric_name = config.eval.metric

  # Loop.
  step = int(jax.device_get(state['step']))
  bar = tqdm.tqdm(total=total_steps, initial=step, unit='step',
                  disable=jax.process_index() != 0, dynamic_ncols=True)
  postfix = {}
  pending = []  # per-step metrics not yet fetched from the device.
  t_mark = time.perf_counter()
  steps_mark = step

  def drain():
    """Fetches pending metrics, checks finiteness, logs their mean."""
    nonlocal pending, t_mark, steps_mark
    if not pending:
      return None
    fetched = jax.device_get(pending)
    pending = []
    losses_ = np.array([m['train/loss'] for m in fetched])
    if not np.all(np.isfinite(losses_)):
      bad = step - len(fetched) + int(np.argmin(np.isfinite(losses_))) + 1
      raise FloatingPointError(
          f'Non-finite training loss at step {bad} ({losses_.tolist()[-5:]}). '
          f'Kept the last good checkpoint in {workdir}/checkpoints; lower '
          'finetune.optimizer.lr or check the data.')
    now = time.perf_counter()
    mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    mean['train/steps_per_s'] = (step - steps_mark) / max(now - t_mark, 1e-9)
    mean['train/lr'] = float(lr_schedule(step))
    t_mark, steps_mark = now, step
    writer.write_scalars(step, mean)
    writer.flush()
    postfix['loss'] = f"{mean['train/loss']:.4f}"
    bar.set_postfix(postfix)
    return mean

  with jax.transfer_guard('disallow'):
    for epoch in range(meta['epoch'], cfg.num_epochs):
      if meta['stopped_early']:
        break
      t_epoch = time.perf_counter()
      for index in range(meta['index'], stream.steps_in_epoch(epoch)):
        batch = sharding.host_to_global(mesh, stream.batch(epoch, index))
        state, m = step_fn(state, batch, key)
        pending.append(m)
        step += 1
        bar.update(1)
        if step % config.log_every_steps == 0:
          drain()
        if (config.checkpoint.every_steps and
            step % config.checkpoint.every_steps == 0):
          drain()
          meta.update(epoch=epoch, index=index + 1, train_seconds=meta[
              'train_seconds'] + time.perf_counter() - t_epoch)
          t_epoch = time.perf_counter()
          ckpt.save(step, state, meta)
      drain()
      jax.block_until_ready(state)
      meta['train_seconds'] += time.perf_counter() - t_epoch
      meta.update(epoch=epoch + 1, index=0)
      if (epoch + 1) % config.eval.every_epochs == 0 or (
          epoch + 1 == cfg.num_epochs):
        valid, _ = evaluator.full_ranking(state['params'], split.valid_history,
                                          split.valid_target, desc='valid')
        writer.write_scalars(step, {f'eval/valid/{k}': v
                                    for k, v in valid.items()})
        meta['evals'].append(dict(epoch=epoch + 1, step=step, **valid))
        if meta['best'] is None or valid[metric_name] > meta['best'][
            metric_name]:
          meta.update(best=valid, best_step=step, best_epoch=epoch + 1,
                      bad_evals=0)
          ckpt.save_best(step, state['params'], dict(
              step=step, epoch=epoch + 1, valid=valid))
        else:
          meta['bad_evals'] += 1
          if meta['bad_evals'] >= cfg.patience:
            meta['stopped_early'] = True
        logging.info('epoch %d step %d: valid %s=%.4f (best %.4f at epoch %d)',
                     epoch + 1, step, metric_name, valid[metric_name],
                     meta['best'][metric_name], meta['best_epoch'])
        postfix[f'best_{metric_name}'] = _fmt(meta['best'], metric_name)
        bar.set_postfix(postfix)
      ckpt.save(step, state, meta)
  bar.close()
  ckpt.close()
  writer.close()
  return dict(best_valid=meta['best'], best_step=meta['best_step'],
              best_epoch=meta['best_epoch'], epochs=meta['epoch'],
              steps=step, train_seconds=meta['train_seconds'],
              stopped_early=meta['stopped_early'],
              seconds_per_epoch=meta['train_seconds'] / max(meta['epoch'], 1))


def _fmt(best, name):
  return '-' if not best else f'{best[name]:.4f}'


def _log_params(params, shardings):
  rows = []
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_sh = jax.tree.leaves(shardings)
  total = 0
  for (path, leaf), sh in zip(flat, flat_sh):
    name = '/'.join(str(getattr(p, 'key', p)) for p in path)
    rows.append(f'  {name:<45} {str(leaf.shape):<16} {sh.spec}')
    total += int(np.prod(leaf.shape))
  logging.info('Parameters (%d):\n%s', total, '\n'.join(rows))


def save_json(path: str, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
