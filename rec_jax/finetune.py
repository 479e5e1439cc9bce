"""The supervised training stage: train a sequence encoder on the training
part of a leave-one-out split for the recipe's task (rec_jax.tasks: next
item, ctr or rating), early-stopped on the task's validation metric.

  python -m rec_jax.main --config=configs/sasrec.py:dataset=beauty \
      --workdir=/tmp/sasrec_beauty --stage=finetune

Start-up precedence: (1) resume from this stage's own checkpoints if any;
(2) else initialise the encoder from a pretrained run (`init_from`, through
rec_jax.bridge) and the rest fresh; (3) else fresh initialisation.
"""

import dataclasses
import functools
from typing import Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rec_jax import bridge
from rec_jax import evaluate
from rec_jax import item_text
from rec_jax import models
from rec_jax import objectives
from rec_jax import optimizers
from rec_jax import peft
from rec_jax import sharding
from rec_jax import tasks
from rec_jax import trainer
from rec_jax import writers
from rec_jax.data import augment
from rec_jax.data import pipeline
from rec_jax.models import items

# ---------------------------------------------------------------- model ----


def builder(config, num_items: int):
  """rngs -> the fine-tune model for a catalog of num_items."""
  return lambda rngs: models.build(config.model, num_items, rngs=rngs)


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


# ---------------------------------------------------------- objective ----


@dataclasses.dataclass(frozen=True)
class Objective:
  """What one step optimises, chosen once from the config (never inside
  the traced step):

  corrupt(batch, key) -> batch: input corruption (Cloze masking, item
    dropout) or the identity.
  loss(model, batch, k_drop, k_loss) -> (sum, count): the task's loss.
  joint(model, batch, key) -> (loss, metrics) | None: the weighted joint
    sequence-level objectives over the batch's user rows.
  micro_batches: gradient accumulation (trainer.accumulate).
  """
  corrupt: Callable
  loss: Callable
  joint: Callable | None = None
  micro_batches: int = 1


def joint_weights(cfg) -> dict[str, float]:
  """{objective: weight} of the joint sequence-level objectives that are
  on (finetune.aux.objectives); {} when none."""
  weights = dict(cfg.aux.objectives)
  unknown = sorted(set(weights) - set(objectives.JOINT))
  if unknown:
    raise ValueError(f'finetune.aux.objectives: unknown {unknown}; joint '
                     f'objectives are {objectives.JOINT}')
  return {k: float(v) for k, v in weights.items() if float(v)}


def corruption(cfg, mask_id: int) -> Callable:
  """batch, key -> batch with the fine-tune's input corruption: Cloze
  (objective=cloze: hide a random subset of real positions behind [MASK]
  and predict them), item dropout (input_mask_prob: hide inputs, keep every
  target), or none."""
  if cfg.objective not in ('causal', 'cloze'):
    raise ValueError(f"finetune.objective={cfg.objective!r}: expected "
                     "'causal' or 'cloze'")
  cloze = cfg.objective == 'cloze'
  prob = float(cfg.mask_prob if cloze else cfg.input_mask_prob)
  if not cloze and not prob:
    return lambda batch, key: batch

  def corrupt(batch, key):
    inputs = batch['inputs']
    hide = jax.random.bernoulli(key, prob, inputs.shape)
    hide &= batch['segment_ids'] > 0
    out = dict(batch, inputs=jnp.where(hide, mask_id, inputs))
    if cloze:
      out['targets'] = jnp.where(hide, inputs, 0)
    return out
  return corrupt


def joint_objective(config, ds, split, mesh) -> Callable | None:
  """(model, user rows, key) -> (weighted loss, metrics) of the joint
  objectives (None when off); their tables (correlated items) come from
  the training sequences only."""
  cfg = config.finetune
  weights = joint_weights(cfg)
  if not weights:
    return None
  similar = None
  ops = [o for o in cfg.aux.augment.ops.split(',') if o]
  if 'contrastive' in weights and {'substitute', 'insert'} & set(ops):
    vocab = items.vocab_size(ds.num_items, config.model.vocab_multiple)
    similar = np.asarray(augment.item_correlations(
        split.train, ds.num_items, vocab, k=cfg.aux.augment.num_correlated))
  ctx = objectives.Context(
      num_items=ds.num_items, causal=config.model.causal, cfg=cfg.aux,
      similar=similar, num_groups=sharding.data_parallel_size(mesh))

  def joint(model, batch, key):
    loss, metrics = objectives.total_loss(model, batch, key, ctx, weights)
    return loss, {k.replace('train/', 'train/aux_'): v
                  for k, v in metrics.items()}
  return joint


def objective(config, *, ds, split, mesh, target_counts=None) -> Objective:
  """The Objective of `config`'s fine-tune (`target_counts`: training
  targets per item id, for popularity-sampled negatives)."""
  cfg = config.finetune
  task = tasks.get(cfg.task)
  return Objective(
      corrupt=corruption(cfg, ds.num_items + 1),
      loss=task.loss(config, ds=ds, vocab=items.vocab_size(
          ds.num_items, config.model.vocab_multiple), mesh=mesh,
                     target_counts=target_counts),
      joint=joint_objective(config, ds, split, mesh),
      micro_batches=cfg.micro_batches)


# ----------------------------------------------------------------- step ----


def train_step(state, batch, key, *, graphdef, tx, objective: Objective):
  """One optimizer step: the task loss of the (corrupted) packed rows plus
  the joint objectives over the user rows. Returns (state, scalar
  metrics)."""
  key = jax.random.fold_in(key, state['step'])
  k_drop, k_mask, k_loss = jax.random.split(key, 3)
  batch, joint_batch = pipeline.split_joint(batch)
  batch = objective.corrupt(batch, k_mask)

  def sums(params, mb, k_drop, k_loss):
    return objective.loss(nnx.merge(graphdef, params), mb, k_drop, k_loss)

  (total, count), grads = trainer.accumulate(
      jax.value_and_grad(sums, has_aux=True), state['params'], batch,
      (k_drop, k_loss), objective.micro_batches)
  denom = jnp.maximum(count, 1.0)
  loss = total / denom
  grads = jax.tree.map(lambda g: g / denom, grads)
  metrics = {}
  if objective.joint is not None:
    (extra, metrics), joint_grads = jax.value_and_grad(
        lambda p: objective.joint(nnx.merge(graphdef, p), joint_batch,
                                  jax.random.fold_in(k_loss, 1)),
        has_aux=True)(state['params'])
    metrics['train/next_item_loss'] = loss
    loss = loss + extra
    grads = jax.tree.map(jnp.add, grads, joint_grads)
  updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
  params = optax.apply_updates(state['params'], updates)
  new_state = dict(step=state['step'] + 1, params=params, opt_state=opt_state)
  return new_state, {'train/loss': loss, 'train/targets': count,
                     'train/grad_norm': optax.tree.norm(grads),
                     'train/param_norm': optax.tree.norm(params), **metrics}


def make_train_step(config, graphdef, tx, state_sh, mesh, *, ds, split=None,
                    target_counts=None):
  """train_step with the recipe's Objective, jitted once (tests, plan,
  benchmarks; `split` is needed with joint objectives)."""
  return trainer.jit_step(functools.partial(
      train_step, graphdef=graphdef, tx=tx, objective=objective(
          config, ds=ds, split=split, mesh=mesh,
          target_counts=target_counts)), state_sh, mesh)


# ---------------------------------------------------------------- setup ----


def check(config) -> None:
  """Refuses settings that cannot train, before any data are read."""
  cfg = config.finetune
  task = tasks.get(cfg.task)
  task.check(config)
  n = cfg.micro_batches
  if n < 1 or cfg.batch_size % n:
    raise ValueError(f'finetune.micro_batches={n} must divide '
                     f'finetune.batch_size={cfg.batch_size}')
  for key in ('every_steps', 'every_epochs'):
    if config.eval[key] < 0 or (key == 'every_epochs' and
                                config.eval[key] < 1):
      raise ValueError(f'eval.{key}={config.eval[key]} must be '
                       f"{'>= 0' if key == 'every_steps' else '>= 1'}")
  joint = joint_weights(cfg)
  if joint and not (task.JOINT and cfg.objective == 'causal'):
    raise ValueError(f'finetune.aux.objectives {joint} train with the '
                     "causal next-item task only (finetune.objective="
                     f"{cfg.objective!r}, task={cfg.task!r})")


def check_mesh(cfg, mesh) -> None:
  """Every batch the stage builds divides the data-parallel axes."""
  sharding.check_batch(cfg.batch_size, mesh, 'finetune.batch_size')
  if cfg.micro_batches > 1:
    sharding.check_batch(cfg.batch_size // cfg.micro_batches, mesh,
                         'finetune.batch_size / finetune.micro_batches')
  if joint_weights(cfg):
    sharding.check_batch(cfg.aux.batch_size, mesh, 'finetune.aux.batch_size')


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


def train_stream(config, ds, split):
  """(batch stream, its segments) of the fine-tune: packed rows of the
  labelled users' training items (one user per row for a family that does
  not pack), with the joint objectives' user rows when they are on."""
  cfg, max_len = config.finetune, config.model.max_len
  values = tasks.get(cfg.task).train_values(ds)
  keep = labelled_users(list(range(len(split.train))), cfg.label_fraction,
                        config.seed)
  train = [split.train[u] for u in keep]
  segments = pipeline.make_segments(
      train, max_len, shift=cfg.objective == 'causal',
      values=None if values is None else [values[u] for u in keep])
  stream = pipeline.TrainStream(
      segments, batch_size=cfg.batch_size, max_len=max_len, seed=config.seed,
      row_slice=sharding.process_rows(cfg.batch_size),
      packed=models.packs_rows(config.model))
  joint = joint_weights(cfg)
  if joint:
    stream = pipeline.JointStream(stream, pipeline.UserStream(
        train, batch_size=cfg.aux.batch_size, max_len=max_len,
        seed=config.seed + 2, row_slice=sharding.process_rows(
            cfg.aux.batch_size),
        random_prefix=False, partners='duorec' in joint))
    logging.info('Joint objectives %s over %d users a step.', joint,
                 cfg.aux.batch_size)
  logging.info('%d training targets in %d segments; ~%d steps per epoch.',
               segments.num_targets, len(segments.lengths),
               stream.steps_in_epoch(0))
  return stream, segments


def optimizer(config, abs_params, total_steps: int):
  """(tx, lr schedule, (trainable, total) parameter counts): the recipe's
  optimizer on the parameters its fine-tuning method trains."""
  cfg = config.finetune
  tx, lr_schedule = optimizers.make(cfg.optimizer, total_steps)
  layers = config.model.num_layers
  tx = peft.wrap(tx, abs_params, cfg.method, layers, cfg.partial_layers)
  trainable, total = peft.count(abs_params, cfg.method, layers,
                                cfg.partial_layers)
  logging.info('Fine-tuning method %r: %d of %d parameters train (%.2f%%).',
               cfg.method, trainable, total, 100 * trainable / total)
  return tx, lr_schedule, (trainable, total)


def eval_every(eval_cfg, steps_per_epoch: int) -> int:
  """Epochs between validations: eval.every_epochs, stretched so that at
  least eval.min_steps training steps separate two of them (early stopping
  counts validations, so its patience stays a number of steps too)."""
  every = eval_cfg.every_epochs
  need = eval_cfg.min_steps
  if need and steps_per_epoch * every < need:
    every = -(-need // max(steps_per_epoch, 1))
    logging.info('Validating every %d epochs (%d steps an epoch, '
                 'eval.min_steps=%d).', every, steps_per_epoch, need)
  return every


def fresh_start(config, ds, mesh, param_sh, init_path: str | None):
  """(params, meta) of a run that starts now: fresh, with the encoder read
  from `init_path` when given; the dataset's item texts filled in (also
  over a checkpoint from another dataset; tuned text layers that the
  checkpoint did not hold start from the language model)."""
  params = init_params(config, ds.num_items, mesh, param_sh, config.seed)
  meta = trainer.fresh_meta()
  fresh = None
  if init_path:
    allow = [p for p in config.init_from.allow_mismatch.split(',') if p]
    allow += list(peft.ADDED)  # method parameters start fresh.
    allow += list(peft.CONSTANT)  # data, e.g. another catalog's texts.
    allow.append(peft.TEXT_LAYERS)  # tuned text layers: from the LM.
    params, meta['init_from'] = bridge.init_subtree(
        init_path, params, param_sh, subtree=config.init_from.subtree,
        allow_mismatch=allow)
    fresh = meta['init_from']['kept_fresh']
  params = item_text.fill_params(
      config.model, ds, params, param_sh, load_layers=fresh is None or any(
          k.startswith('encoder/text/layers/') for k in fresh))
  return params, meta


# ----------------------------------------------------------------- loop ----


def run(config, workdir: str, init_from: str | None = None,
        data=None) -> dict:
  """Trains, early-stops on validation, keeps the best checkpoint.

  Args:
    config: the recipe.
    workdir: this stage's directory (checkpoints, metrics).
    init_from: a pretrained run to initialise the encoder from (see
      rec_jax.bridge); `config.init_from.path`, when set, takes precedence.
    data: (dataset, split) as trainer.load_data gives them (loaded when
      None).

  Returns:
    A summary: best validation metrics, best step, epochs, train seconds.

  Raises:
    FloatingPointError: when the loss turns non-finite (the last good
      checkpoint is kept).
  """
  # Setup: refuse what cannot train before reading any data.
  check(config)
  config, ds, split = trainer.setup(config, workdir, data)
  cfg = config.finetune

  # Mesh.
  mesh = sharding.make_mesh(config.mesh)
  check_mesh(cfg, mesh)

  # Data.
  stream, segments = train_stream(config, ds, split)
  steps_per_epoch = stream.steps_in_epoch(0)

  # Model and optimizer.
  graphdef, abs_params, param_sh = abstract_model(config, ds.num_items, mesh)
  tx, lr_schedule, (trainable, total) = optimizer(
      config, abs_params, steps_per_epoch * cfg.num_epochs)
  _, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  trainer.log_params(abs_params, param_sh)

  # Init / bridge: resume this stage > a pretrained run's encoder > fresh.
  init_path = config.init_from.path or init_from
  ckpt, state, meta, resumed = trainer.start(
      config, workdir, tx=tx, abs_params=abs_params, param_sh=param_sh,
      mesh=mesh, fresh=lambda: fresh_start(config, ds, mesh, param_sh,
                                           init_path))

  # Step.
  step_fn = make_train_step(
      config, graphdef, tx, state_sh, mesh, ds=ds, split=split,
      target_counts=np.bincount(segments.targets,
                                minlength=ds.num_items + 1))
  key = sharding.put_replicated(mesh, jax.random.key(config.seed))

  # Loop.
  evaluator = evaluate.make_evaluator(config, graphdef, mesh, ds.num_items)
  validate = tasks.get(cfg.task).validation(config, ds, split, evaluator)
  if init_path and not resumed:
    meta['init_valid'] = before_finetuning(validate, state['params'])
  spec = trainer.LoopSpec(
      stream=stream, step_fn=step_fn, num_epochs=cfg.num_epochs,
      lr_schedule=lr_schedule, log_every=config.log_every_steps,
      checkpoint_every=config.checkpoint.every_steps,
      checkpoint_min_steps=config.checkpoint.min_steps, evaluate=validate,
      eval_every=eval_every(config.eval, steps_per_epoch),
      eval_every_steps=config.eval.every_steps,
      metric=config.eval.metric, mode=config.eval.mode,
      patience=cfg.patience, desc='finetune')
  writer = writers.MetricWriter(workdir)
  state, meta = trainer.fit(spec, state=state, meta=meta, ckpt=ckpt,
                            writer=writer, mesh=mesh, key=key, workdir=workdir)
  ckpt.close()
  writer.close()
  out = trainer.summary(meta, int(jax.device_get(state['step'])))
  out.update(method=cfg.method, trainable_params=trainable, total_params=total)
  if meta.get('init_from'):
    out['init_from'] = meta['init_from']['source']
  if meta.get('init_valid'):
    out['init_valid'] = meta['init_valid']
  return out


def before_finetuning(validate, params) -> dict:
  """Validation metrics of the model before any fine-tuning step, the
  "before" of a before/after comparison: the pretrained model itself under
  LoRA or adapters (they start as the identity), not under a prefix or a
  fresh head. Only at a fresh start: a resumed run's params are mid-fine-
  tune (its meta holds the score already)."""
  out = {k: float(v) for k, v in validate(params).items()}
  logging.info('Before fine-tuning: validation %s.', ' '.join(
      f'{k}={v:.4f}' for k, v in sorted(out.items())))
  return out
