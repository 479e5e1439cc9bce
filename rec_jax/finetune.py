"""The next-item training stage: train a sequence encoder on the training
part of a leave-one-out split, early-stopped on validation NDCG@10.

  python -m rec_jax.main --config=configs/sasrec.py:dataset=beauty \
      --workdir=/tmp/sasrec_beauty --stage=finetune

Start-up precedence: (1) resume from this stage's own checkpoints if any;
(2) else initialise the encoder from a pretrained run (`init_from`, through
rec_jax.bridge) and the rest fresh; (3) else fresh initialisation.
"""

import functools
import os

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax import bridge
from rec_jax import checkpoints
from rec_jax import evaluate
from rec_jax import losses
from rec_jax import objectives
from rec_jax import optimizers
from rec_jax import peft
from rec_jax import sharding
from rec_jax import tasks
from rec_jax import trainer
from rec_jax import writers
from rec_jax.data import augment
from rec_jax.data import pipeline
from rec_jax.models import sequence

# ---------------------------------------------------------------- setup ----


def builder(config, num_items: int):
  """rngs -> the fine-tune model for a catalog of num_items."""
  return lambda rngs: sequence.build(config.model, num_items, rngs=rngs)


def abstract_model(config, num_items: int, mesh):
  """(graphdef, abstract params as a pure dict, param shardings)."""
  return trainer.abstract_model(builder(config, num_items), config, mesh)


def init_params(config, num_items: int, mesh, shardings, seed: int):
  """Fresh params created directly with their shardings."""
  return trainer.init_params(builder(config, num_items), config, mesh,
                             shardings, seed)


def fresh_state(config, num_items: int, mesh, tx, seed: int = 0):
  """(graphdef, abstract params, train state, state shardings) of a fresh
  model on `mesh` with optimizer `tx` (tests, benchmarks)."""
  graphdef, abs_params, param_sh = abstract_model(config, num_items, mesh)
  params = init_params(config, num_items, mesh, param_sh, seed)
  _, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  return graphdef, abs_params, trainer.init_state(tx, params, state_sh,
                                                  mesh), state_sh


# ----------------------------------------------------------------- step ----


def aux_weights(cfg) -> dict[str, float]:
  """{objective: weight} of the joint sequence-level objectives that are
  on (finetune.aux.objectives); {} when none."""
  aux = cfg.get('aux')
  if aux is None:
    return {}
  unknown = sorted(set(aux.objectives) - {'contrastive', 'duorec'})
  if unknown:
    raise ValueError(f'finetune.aux.objectives: unknown {unknown}; joint '
                     "objectives are 'contrastive' and 'duorec'")
  return {k: float(v) for k, v in aux.objectives.items() if float(v)}


def aux_context(config, ds, split, vocab: int, mesh):
  """objectives.Context of the joint objectives (None when off)."""
  cfg = config.finetune
  weights = aux_weights(cfg)
  if not weights:
    return None
  similar = None
  ops = [o for o in cfg.aux.augment.ops.split(',') if o]
  if 'contrastive' in weights and {'substitute', 'insert'} & set(ops):
    similar = np.asarray(augment.item_correlations(
        split.train, ds.num_items, vocab, k=cfg.aux.augment.num_correlated))
  return objectives.Context(
      num_items=ds.num_items, causal=config.model.causal, cfg=cfg.aux,
      similar=similar, num_groups=sharding.data_parallel_size(mesh))


def _aux_batch(batch):
  """The user-per-row part of a JointStream batch, as the objectives
  take it."""
  out = {}
  for k, v in batch.items():
    if k.startswith('aux_'):
      out[k[4:]] = v[:, 0] if k.endswith('lengths') else v
  return out


def check_smoothing(cfg) -> float:
  """finetune.label_smoothing, which needs the full-softmax CE loss."""
  smoothing = cfg.get('label_smoothing', 0.0)
  if smoothing and cfg.loss != 'ce':
    raise ValueError(f'finetune.label_smoothing={smoothing} needs '
                     f"finetune.loss='ce', not {cfg.loss!r}")
  return smoothing


def train_step(state, batch, key, *, graphdef, tx, cfg, num_items: int,
               log_q, rating_mean: float = 0.0, mesh=None, aux_ctx=None):
  """One optimizer step. Returns (state, scalar metrics).

  With joint objectives (`aux_ctx`, finetune.aux) the step adds their
  weighted losses over the batch's `aux_` rows (one user per row) to the
  next-item loss, and their gradients to its gradients.

  With `cfg.micro_batches` = n > 1 the batch's rows are processed n at a
  time (gradient accumulation: the activations of one micro-batch live at
  once) and the summed gradients are divided by the batch's target count,
  so the update equals the one-shot step's.
  """
  key = jax.random.fold_in(key, state['step'])
  k_drop, k_mask, k_loss = jax.random.split(key, 3)
  aux_batch = _aux_batch(batch)
  batch = {k: v for k, v in batch.items() if not k.startswith('aux_')}
  inputs, targets = batch['inputs'], batch['targets']
  if cfg.objective == 'cloze':
    # Hide a random subset of real positions behind [MASK]; predict them.
    hide = jax.random.bernoulli(k_mask, cfg.mask_prob, inputs.shape)
    hide &= batch['segment_ids'] > 0
    targets = jnp.where(hide, inputs, 0)
    inputs = jnp.where(hide, num_items + 1, inputs)
  elif cfg.get('input_mask_prob', 0.0):
    # Item dropout: hide inputs behind [MASK], keep every target.
    hide = jax.random.bernoulli(k_mask, cfg.input_mask_prob, inputs.shape)
    hide &= batch['segment_ids'] > 0
    inputs = jnp.where(hide, num_items + 1, inputs)
  batch = dict(batch, inputs=inputs, targets=targets)
  smoothing = check_smoothing(cfg)
  ce_chunk = cfg.get('ce_chunk_size', 0)
  sharded_ce = mesh is not None and mesh.shape.get('model', 1) > 1

  def sums(params, mb, k_drop, k_loss):
    """(sum of per-target losses, number of targets) of a (micro-)batch."""
    model = nnx.merge(graphdef, params)
    hidden = model(mb['inputs'], mb['positions'], mb['segment_ids'],
                   key=k_drop)
    table = model.encoder.item_table()
    targets = mb['targets']
    if cfg.get('task', 'next') == 'rating':
      pred = model.rating_head(hidden, targets, table, rating_mean,
                               mb.get('history_sum'),
                               mb.get('history_count'))
      w = (targets > 0).astype(jnp.float32)
      return jnp.sum(jnp.square(pred - mb['values']) * w), jnp.sum(w)
    if cfg.loss == 'ce':
      if sharded_ce or ce_chunk:
        total, count = losses.softmax_ce(
            hidden, targets, table, num_items,
            mesh=mesh if sharded_ce else None, chunk_size=ce_chunk)
      else:
        total, count = losses.full_softmax_ce(hidden, targets, table,
                                              num_items)
      if smoothing:
        total += smoothing * losses.smoothing_term(hidden, targets, table,
                                                   num_items)
      return total, count
    if cfg.loss == 'bce':
      return losses.sampled_bce(hidden, targets, table, num_items, k_loss,
                                cfg.num_negatives, log_q)
    if cfg.loss == 'sampled_softmax':
      return losses.sampled_softmax(
          hidden, targets, table, num_items, k_loss, cfg.num_negatives,
          log_q, in_batch=cfg.get('sampler', 'uniform') == 'in_batch')
    raise ValueError(f'finetune.loss={cfg.loss!r}')

  grad_fn = jax.value_and_grad(sums, has_aux=True)
  n = cfg.get('micro_batches', 1)
  if n == 1:
    (total, count), grads = grad_fn(state['params'], batch, k_drop, k_loss)
  else:
    # Micro-batch i takes rows i, i + n, ...: each device keeps its rows.
    split = jax.tree.map(
        lambda x: jnp.moveaxis(x.reshape(x.shape[0] // n, n, *x.shape[1:]),
                               1, 0), batch)

    def body(carry, xs):
      mb, i = xs
      (t, c), g = grad_fn(state['params'], mb, jax.random.fold_in(k_drop, i),
                          jax.random.fold_in(k_loss, i))
      return (carry[0] + t, carry[1] + c,
              jax.tree.map(jnp.add, carry[2], g)), None

    zeros = jax.tree.map(jnp.zeros_like, state['params'])
    (total, count, grads), _ = jax.lax.scan(
        body, (jnp.zeros(()), jnp.zeros(()), zeros), (split, jnp.arange(n)))
  denom = jnp.maximum(count, 1.0)
  loss = total / denom
  grads = jax.tree.map(lambda g: g / denom, grads)
  metrics = {}
  if aux_ctx is not None:
    weights = aux_weights(cfg)

    def aux_loss(params):
      model = nnx.merge(graphdef, params)
      return objectives.total_loss(model, aux_batch,
                                   jax.random.fold_in(k_loss, 1), aux_ctx,
                                   weights)

    (extra, metrics), aux_grads = jax.value_and_grad(
        aux_loss, has_aux=True)(state['params'])
    metrics = {k.replace('train/', 'train/aux_'): v
               for k, v in metrics.items()}
    metrics['train/next_item_loss'] = loss
    loss = loss + extra
    grads = jax.tree.map(jnp.add, grads, aux_grads)
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  new_state = dict(step=state['step'] + 1, params=params, opt_state=opt_state)
  return new_state, {'train/loss': loss, 'train/targets': count,
                     'train/grad_norm': optax.tree.norm(grads),
                     'train/param_norm': optax.tree.norm(params), **metrics}


def jit_train_step(cfg, graphdef, tx, state_sh, mesh, num_items, log_q=None,
                   rating_mean: float = 0.0, aux_ctx=None):
  """train_step jitted once with explicit in/out shardings."""
  return jax.jit(
      functools.partial(train_step, graphdef=graphdef, tx=tx, cfg=cfg,
                        num_items=num_items, log_q=log_q,
                        rating_mean=rating_mean, mesh=mesh, aux_ctx=aux_ctx),
      in_shardings=(state_sh, sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=(state_sh, sharding.replicated(mesh)),
      donate_argnums=0)


state_shardings = trainer.state_shardings
init_state = trainer.init_state
load_data = trainer.load_data


def validation(config, ds, split, evaluator):
  """params -> validation metrics of the recipe's task."""
  if config.finetune.get('task', 'next') == 'rating':
    train_r, valid_r, _ = tasks.rating_split(ds)
    mean = float(np.concatenate(train_r).mean())
    return lambda params: evaluator.rating(
        params, split.valid_history, split.valid_target, valid_r, mean,
        train_r)
  if config.finetune.get('task', 'next') == 'ctr':
    negatives = tasks.popularity_negatives(
        split.valid_history, split.valid_target,
        tasks.train_counts(split.train, ds.num_items),
        config.eval.ctr_negatives, seed=1)
    return lambda params: evaluator.ctr(params, split.valid_history,
                                        split.valid_target, negatives)
  return lambda params: evaluator.full_ranking(
      params, split.valid_history, split.valid_target, desc='valid')[0]


def eval_every(eval_cfg, steps_per_epoch: int) -> int:
  """Epochs between validations: eval.every_epochs, stretched so that at
  least eval.min_steps training steps separate two of them (early stopping
  counts validations, so its patience stays a number of steps too)."""
  every = eval_cfg.every_epochs
  need = eval_cfg.get('min_steps', 0)
  if need and steps_per_epoch * every < need:
    every = -(-need // max(steps_per_epoch, 1))
    logging.info('Validating every %d epochs (%d steps an epoch, '
                 'eval.min_steps=%d).', every, steps_per_epoch, need)
  return every


def labelled_users(train, fraction: float, seed: int):
  """The training sequences of a random `fraction` of users (at least one):
  the low-label regime. Pretraining still sees every user; validation and
  test still cover every user."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'finetune.label_fraction={fraction}: expected (0, 1]')
  if fraction == 1.0:
    return train
  n = max(1, int(round(fraction * len(train))))
  keep = np.sort(np.random.default_rng([seed, 11]).permutation(len(train))[:n])
  logging.info('Fine-tuning on %d of %d users (label_fraction=%g).', n,
               len(train), fraction)
  return [train[i] for i in keep]


# ----------------------------------------------------------------- loop ----


def run(config, workdir: str, init_from: str | None = None) -> dict:
  """Trains, early-stops on validation, keeps the best checkpoint.

  Args:
    config: the recipe.
    workdir: this stage's directory (checkpoints, metrics).
    init_from: a pretrained run to initialise the encoder from (see
      rec_jax.bridge); `config.init_from.path`, when set, takes precedence.

  Returns:
    A summary: best validation metrics, best step, epochs, train seconds.

  Raises:
    FloatingPointError: when the loss turns non-finite (the last good
      checkpoint is kept).
  """
  cfg = config.finetune
  check_smoothing(cfg)  # before loading or compiling anything
  os.makedirs(workdir, exist_ok=True)
  ds, split = trainer.load_data(config)
  logging.info('Dataset %s: %d users, %d items, %d interactions.', ds.name,
               ds.num_users, ds.num_items, ds.num_interactions)

  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(cfg.batch_size, mesh, 'finetune.batch_size')
  n = cfg.get('micro_batches', 1)
  if n < 1 or cfg.batch_size % n:
    raise ValueError(f'finetune.micro_batches={n} must divide '
                     f'finetune.batch_size={cfg.batch_size}')
  if n > 1:
    sharding.check_batch(cfg.batch_size // n, mesh,
                         'finetune.batch_size / finetune.micro_batches')

  max_len = config.model.max_len
  task = cfg.get('task', 'next')
  values, rating_mean = None, 0.0
  if task == 'rating':
    values, _, _ = tasks.rating_split(ds)
    rating_mean = float(np.concatenate(values).mean())
  keep = labelled_users(list(range(len(split.train))),
                        cfg.get('label_fraction', 1.0), config.seed)
  train = [split.train[u] for u in keep]
  if values is not None:
    values = [values[u] for u in keep]
  segments = pipeline.make_segments(train, max_len,
                                    shift=cfg.objective == 'causal',
                                    values=values)
  stream = pipeline.TrainStream(
      segments, batch_size=cfg.batch_size, max_len=max_len, seed=config.seed,
      row_slice=sharding.process_rows(cfg.batch_size))
  joint = aux_weights(cfg)
  if joint:
    if task != 'next' or cfg.objective != 'causal':
      raise ValueError(f'finetune.aux.objectives {joint} train with the '
                       "causal next-item task only (finetune.objective="
                       f"{cfg.objective!r}, task={task!r})")
    sharding.check_batch(cfg.aux.batch_size, mesh, 'finetune.aux.batch_size')
    stream = pipeline.JointStream(stream, pipeline.UserStream(
        train, batch_size=cfg.aux.batch_size, max_len=max_len,
        seed=config.seed + 2, row_slice=sharding.process_rows(
            cfg.aux.batch_size),
        random_prefix=False, partners='duorec' in joint))
    logging.info('Joint objectives %s over %d users a step.', joint,
                 cfg.aux.batch_size)
  steps_per_epoch = stream.steps_in_epoch(0)
  total_steps = steps_per_epoch * cfg.num_epochs
  logging.info('%d training targets in %d segments; ~%d steps per epoch.',
               segments.num_targets, len(segments.lengths), steps_per_epoch)

  graphdef, abs_params, param_sh = abstract_model(config, ds.num_items, mesh)
  tx, lr_schedule = optimizers.make(cfg.optimizer, total_steps)
  method = cfg.get('method', 'full')
  tx = peft.wrap(tx, abs_params, method, config.model.num_layers,
                 cfg.get('partial_layers', 1))
  trainable, total = peft.count(abs_params, method, config.model.num_layers,
                                cfg.get('partial_layers', 1))
  logging.info('Fine-tuning method %r: %d of %d parameters train (%.2f%%).',
               method, trainable, total, 100 * trainable / total)
  abs_opt, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  log_q = None
  if cfg.get('sampler', 'uniform') not in ('uniform', 'popularity',
                                           'in_batch'):
    raise ValueError(f'finetune.sampler={cfg.sampler!r}: expected uniform, '
                     'popularity or in_batch')
  if cfg.sampler == 'in_batch' and cfg.loss != 'sampled_softmax':
    raise ValueError('finetune.sampler=in_batch needs '
                     'finetune.loss=sampled_softmax')
  if cfg.loss in ('sampled_softmax', 'bce') and cfg.sampler in (
      'popularity', 'in_batch'):
    counts = np.bincount(segments.targets, minlength=ds.num_items + 1)
    vocab = abs_params['encoder']['item_embed'].shape[0]
    log_q = jnp.asarray(losses.popularity_log_q(counts, ds.num_items, vocab))
  trainer.log_params(abs_params, param_sh)

  # Start-up: resume this stage > initialise from a pretrained run > fresh.
  ckpt = checkpoints.Manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                             async_save=config.checkpoint.async_save)
  init_path = config.init_from.path or init_from
  resumed = ckpt.latest_step() is not None
  if resumed:
    state, meta = ckpt.restore(trainer.abstract_state(abs_params, abs_opt,
                                                      state_sh))
    logging.info('Resumed from %s/checkpoints/%d (epoch %d, batch %d).',
                 workdir, ckpt.latest_step(), meta['epoch'], meta['index'])
  else:
    params = init_params(config, ds.num_items, mesh, param_sh, config.seed)
    meta = trainer.fresh_meta()
    if init_path:
      allow = [p for p in config.init_from.allow_mismatch.split(',') if p]
      allow += list(peft.ADDED)  # method parameters start fresh.
      allow += list(peft.CONSTANT)  # data, e.g. another catalog's texts.
      allow.append(peft.TEXT_LAYERS)  # tuned text layers: from the LM.
      params, meta['init_from'] = bridge.init_subtree(
          init_path, params, param_sh, subtree=config.init_from.subtree,
          allow_mismatch=allow)
    # This dataset's item texts, also over a checkpoint from another one;
    # tuned text layers the checkpoint did not hold start from the LM.
    fresh = meta.get('init_from', {}).get('kept_fresh', []) if init_path \
        else None
    params = trainer.fill_text_features(
        config, ds, params, param_sh, load_layers=fresh is None or any(
            k.startswith('encoder/text/layers/') for k in fresh))
    state = trainer.init_state(tx, params, state_sh, mesh)
    with open(os.path.join(workdir, 'config.json'), 'w',
              encoding='utf-8') as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  aux_ctx = aux_context(config, ds, split, abs_params['encoder'][
      'item_embed'].shape[0], mesh)
  step_fn = jit_train_step(cfg, graphdef, tx, state_sh, mesh, ds.num_items,
                           log_q, rating_mean, aux_ctx)
  key = sharding.put_replicated(mesh, jax.random.key(config.seed))
  evaluator = evaluate.Evaluator(
      graphdef=graphdef, mesh=mesh, max_len=max_len,
      mask_id=ds.num_items + 1 if not config.model.causal else None,
      batch_size=config.eval.batch_size, top_k=config.eval.top_k,
      exclude_history=config.eval.exclude_history)
  validate = validation(config, ds, split, evaluator)
  if init_path and not resumed:
    # The model before any fine-tuning step, the "before" of a before/after
    # comparison: the pretrained model itself under LoRA or adapters (they
    # start as the identity), not under a prefix or a fresh head. Only at a
    # fresh start: a resumed run's params are mid-fine-tune (its meta holds
    # the score already, unless the run predates init_valid).
    meta['init_valid'] = {k: float(v) for k, v in
                          validate(state['params']).items()}
    logging.info('Before fine-tuning: validation %s.', ' '.join(
        f'{k}={v:.4f}' for k, v in sorted(meta['init_valid'].items())))
  writer = writers.MetricWriter(workdir)
  spec = trainer.LoopSpec(
      stream=stream, step_fn=step_fn, num_epochs=cfg.num_epochs,
      lr_schedule=lr_schedule, log_every=config.log_every_steps,
      checkpoint_every=config.checkpoint.every_steps,
      evaluate=validate,
      eval_every=eval_every(config.eval, steps_per_epoch),
      metric=config.eval.metric,
      mode=config.eval.get('mode', 'max'),
      patience=cfg.patience, desc='finetune')
  state, meta = trainer.fit(spec, state=state, meta=meta, ckpt=ckpt,
                            writer=writer, mesh=mesh, key=key, workdir=workdir)
  ckpt.close()
  writer.close()
  out = trainer.summary(meta, int(jax.device_get(state['step'])))
  out.update(method=method, trainable_params=trainable, total_params=total)
  if meta.get('init_from'):
    out['init_from'] = meta['init_from']['source']
  if meta.get('init_valid'):
    out['init_valid'] = meta['init_valid']
  return out


save_json = trainer.save_json
