"""What every training stage shares: data loading, sharded model and state
construction, and the resumable epoch loop (metrics, checkpoints, progress,
early stopping). Stages (pretrain, finetune) supply a step function, a batch
stream and, optionally, an evaluation.
"""

import dataclasses
import json
import os
import time
from typing import Any, Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rec_jax import config_lib
from rec_jax import sharding
from rec_jax.data import datasets
from rec_jax.data import pipeline

# ---------------------------------------------------------------- setup ----


def load_data(config):
  """The dataset named by config.data, and its leave-one-out split.

  Also sets the config's values that depend on the training data, in place
  (config_lib.resolve_from_data: the model's dropout where it is FROM_DATA),
  so every stage that loads the data builds the same model."""
  kwargs = {}
  if config.data.name == 'synthetic':
    kwargs = dict(config.data.synthetic)
  ds = datasets.load(config.data.name, data_dir=config.data.data_dir or None,
                     cache_dir=config.data.cache_dir or None, **kwargs)
  if config.data.get('new_interactions'):
    ds = datasets.append_interactions(ds, config.data.new_interactions)
  if config.data.get('cold_fraction', 0.0):
    ds = datasets.cold_start(ds, config.data.cold_fraction, config.seed)
  split = pipeline.leave_one_out(ds)
  config_lib.resolve_from_data(config, split.train, ds.num_items)
  return ds, split


def _load_weights(new, old, sh, where: str):
  """`old` (a params subtree) with the leaves of `new` put in their place,
  on old's shardings and dtypes; leaves only `old` has (LoRA adapters the
  fine-tune adds) stay."""
  if not isinstance(new, dict):
    if new.shape != old.shape:
      raise ValueError(f'{where}: weight {new.shape} does not fit the '
                       f'model\'s {old.shape}')
    return jax.device_put(np.asarray(new, old.dtype), sh)
  missing = sorted(set(new) - set(old))
  if missing:
    raise ValueError(f'{where}: the model has no {missing}')
  return {k: _load_weights(new[k], v, sh[k], f'{where}/{k}') if k in new
          else v for k, v in old.items()}


def fill_text_features(config, ds, params, shardings, *,
                       load_layers: bool = True):
  """Writes the items' text inputs into the model's constant parameters
  when it reads item text: the text embeddings (encoder/text/features), or
  with model.text_tune_layers=k the token states entering the top k text
  blocks (encoder/text/hidden, token_mask) and, when `load_layers`, those
  blocks' pretrained weights (False: they came from a checkpoint).
  Returns params."""
  m = config.model
  if not m.get('text_dim', 0):
    return params
  from rec_jax import item_text  # pylint: disable=g-import-not-at-top
  text = dict(params['encoder']['text'])
  sh = shardings['encoder']['text']
  k = m.get('text_tune_layers', 0)
  if k:
    from rec_jax.models import sequence  # pylint: disable=g-import-not-at-top
    depth = sequence.text_layers_in_use(m)
    states, masks, enc, stats = item_text.item_token_states(
        ds, model_path=m.get('text_model', ''),
        max_length=m.get('text_max_length', 128), below=depth - k,
        random_init=m.get('text_random_init', False))
    target = text['hidden']
    if states.shape[1] > target.shape[1] or states.shape[2] != target.shape[2]:
      raise ValueError(f'token states {states.shape} do not fit '
                       f'encoder/text/hidden {target.shape}')
    full = np.zeros(target.shape, np.float32)
    full[:len(states), :states.shape[1]] = states
    mask = np.zeros(text['token_mask'].shape, np.float32)
    mask[:len(masks), :masks.shape[1]] = masks
    text['hidden'] = jax.device_put(full.astype(target.dtype), sh['hidden'])
    text['token_mask'] = jax.device_put(mask, sh['token_mask'])
    if load_layers:
      layers = dict(text['layers'])
      for i in range(k):
        layers[i] = _load_weights(enc().layer_params(depth - k + i),
                                  layers[i], sh['layers'][i],
                                  f'text layer {depth - k + i}')
      text['layers'] = layers
    logging.info('Item text: token states of %d items below text layer %d '
                 '(%s, %s, %.1f s); top %d layers tune%s.', ds.num_items,
                 depth - k, 'x'.join(map(str, states.shape)),
                 'from cache' if stats['cached'] else 'computed',
                 stats['seconds'], k,
                 ' from the pretrained weights' if load_layers else '')
  else:
    feats, stats = item_text.item_embeddings(
        ds, model_path=m.get('text_model', ''),
        max_length=m.get('text_max_length', 128),
        num_layers=m.get('text_layers', 0),
        random_init=m.get('text_random_init', False))
    target = text['features']
    if feats.shape[1] != target.shape[1]:
      raise ValueError(f'model.text_dim={target.shape[1]} but the text '
                       f'encoder gives {feats.shape[1]}-d embeddings')
    full = np.zeros(target.shape, np.float32)
    full[:len(feats)] = feats
    logging.info('Item text features: %d items, %s (%.1f s).',
                 ds.num_items, 'from cache' if stats['cached'] else
                 'computed', stats['seconds'])
    text['features'] = jax.device_put(full.astype(target.dtype),
                                      sh['features'])
  params = dict(params)
  params['encoder'] = dict(params['encoder'])
  params['encoder']['text'] = text
  return params


def abstract_model(build: Callable[[nnx.Rngs], nnx.Module], config, mesh):
  """(graphdef, abstract params as a pure dict, param shardings).

  Args:
    build: rngs -> the model (nothing is allocated here).
    config: the recipe (for its axis rules).
    mesh: the device mesh.
  """
  with sharding.use(mesh, config.axis_rules):
    model = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
    graphdef, params = nnx.split(model, nnx.Param)
    shardings = nnx.to_pure_dict(nnx.get_named_sharding(params, mesh))
  params = nnx.to_pure_dict(params)
  return graphdef, params, sharding.fit_to_shapes(shardings, params, mesh)


def init_params(build, config, mesh, shardings, seed: int):
  """Fresh params created directly with their shardings."""
  def init(key):
    return nnx.to_pure_dict(nnx.state(build(nnx.Rngs(key)), nnx.Param))
  with sharding.use(mesh, config.axis_rules):
    return jax.jit(init, out_shardings=shardings)(jax.random.key(seed))


def state_shardings(tx, abs_params, param_sh, mesh):
  """(abstract optimizer state, shardings of the whole train state)."""
  abs_opt = jax.eval_shape(tx.init, abs_params)
  return abs_opt, dict(
      step=sharding.replicated(mesh), params=param_sh,
      opt_state=sharding.opt_state_shardings(tx, abs_opt, param_sh, mesh))


def abstract_state(abs_params, abs_opt, state_sh):
  """The train state as ShapeDtypeStructs carrying their shardings."""
  return jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      dict(step=jax.ShapeDtypeStruct((), jnp.int32), params=abs_params,
           opt_state=abs_opt), state_sh)


def init_state(tx, params, state_sh, mesh):
  """{'step': 0, 'params', 'opt_state'} laid out with `state_sh`."""
  with jax.set_mesh(mesh):
    return jax.jit(lambda p: dict(step=jnp.zeros((), jnp.int32), params=p,
                                  opt_state=tx.init(p)),
                   out_shardings=state_sh)(params)


def jit_step(step_fn, state_sh, mesh):
  """step_fn(state, batch, key) jitted with the state's shardings; the
  batch keeps the (data-parallel) shardings it arrives with."""
  return jax.jit(step_fn,
                 in_shardings=(state_sh, None, sharding.replicated(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)),
                 donate_argnums=0)


def log_params(params, shardings):
  rows = []
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_sh = jax.tree.leaves(shardings)
  total = 0
  for (path, leaf), sh in zip(flat, flat_sh):
    rows.append(f'  {path_str(path):<45} {str(leaf.shape):<16} {sh.spec}')
    total += int(np.prod(leaf.shape))
  logging.info('Parameters (%d):\n%s', total, '\n'.join(rows))
  return total


def path_str(path) -> str:
  return '/'.join(str(getattr(p, 'key', p)) for p in path)


def save_json(path: str, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def fresh_meta() -> dict:
  return dict(epoch=0, index=0, best=None, best_step=-1, best_epoch=-1,
              bad_evals=0, train_seconds=0.0, evals=[], stopped_early=False)


# ----------------------------------------------------------------- loop ----


@dataclasses.dataclass
class LoopSpec:
  """How a stage trains: its stream, step, schedule and evaluation.

  `evaluate(params) -> metrics` runs after every `eval_every` epochs; with
  it the loop keeps the best params under `best/` and stops after
  `patience` evaluations without improving `metric`. Without it the final
  params are saved as `best/` (the pretraining stage's output).
  """
  stream: Any               # .steps_in_epoch(epoch), .batch(epoch, index)
  step_fn: Callable         # jitted (state, batch, key) -> (state, metrics)
  num_epochs: int
  lr_schedule: Callable
  log_every: int
  checkpoint_every: int = 0
  evaluate: Callable | None = None
  eval_every: int = 1
  metric: str = 'ndcg@10'
  mode: str = 'max'         # 'min' when lower `metric` is better (rmse).
  patience: int = 0         # 0: never stop early.
  desc: str = 'train'


def fit(spec: LoopSpec, *, state, meta: dict, ckpt, writer, mesh, key,
        workdir: str):
  """Runs (or resumes) a stage's epochs. Returns (state, meta).

  Raises:
    FloatingPointError: when the loss turns non-finite (the last good
      checkpoint is kept).
  """
  stream = spec.stream
  total_steps = sum(stream.steps_in_epoch(e) for e in range(spec.num_epochs))
  step = int(jax.device_get(state['step']))
  bar = tqdm.tqdm(total=total_steps, initial=step, unit='step',
                  desc=spec.desc, disable=jax.process_index() != 0,
                  dynamic_ncols=True)
  postfix = {}
  pending = []  # per-step metrics not yet fetched from the device.
  marks = dict(t=time.perf_counter(), step=step)

  def drain():
    """Fetches pending metrics, checks finiteness, logs their mean."""
    if not pending:
      return
    fetched = jax.device_get(pending)
    pending.clear()
    loss = np.array([m['train/loss'] for m in fetched])
    if not np.all(np.isfinite(loss)):
      bad = step - len(fetched) + int(np.argmin(np.isfinite(loss))) + 1
      raise FloatingPointError(
          f'Non-finite training loss at step {bad} ({loss.tolist()[-5:]}). '
          f'Kept the last good checkpoint in {workdir}/checkpoints; lower '
          'the learning rate or check the data.')
    now = time.perf_counter()
    mean = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    mean['train/steps_per_s'] = (step - marks['step']) / max(
        now - marks['t'], 1e-9)
    mean['train/lr'] = float(spec.lr_schedule(step))
    marks.update(t=now, step=step)
    writer.write_scalars(step, mean)
    writer.flush()
    postfix['loss'] = f"{mean['train/loss']:.4f}"
    bar.set_postfix(postfix)

  with jax.transfer_guard('disallow'):
    for epoch in range(meta['epoch'], spec.num_epochs):
      if meta['stopped_early']:
        break
      t_epoch = time.perf_counter()
      for index in range(meta['index'], stream.steps_in_epoch(epoch)):
        batch = sharding.host_to_global(mesh, stream.batch(epoch, index))
        state, m = spec.step_fn(state, batch, key)
        pending.append(m)
        step += 1
        bar.update(1)
        if step % spec.log_every == 0:
          drain()
        if spec.checkpoint_every and step % spec.checkpoint_every == 0:
          drain()
          meta.update(epoch=epoch, index=index + 1, train_seconds=meta[
              'train_seconds'] + time.perf_counter() - t_epoch)
          t_epoch = time.perf_counter()
          ckpt.save(step, state, meta)
      drain()
      jax.block_until_ready(state)
      meta['train_seconds'] += time.perf_counter() - t_epoch
      meta.update(epoch=epoch + 1, index=0)
      if spec.evaluate is not None and (
          (epoch + 1) % spec.eval_every == 0 or epoch + 1 == spec.num_epochs):
        _evaluate(spec, state, meta, ckpt, writer, step, epoch)
        postfix[f'best_{spec.metric}'] = (
            '-' if not meta['best'] else f"{meta['best'][spec.metric]:.4f}")
        bar.set_postfix(postfix)
      ckpt.save(step, state, meta)
  bar.close()
  if spec.evaluate is None and ckpt.best_step() != step:
    ckpt.save_best(step, state['params'], dict(step=step,
                                                epoch=meta['epoch']))
  return state, meta


def _evaluate(spec, state, meta, ckpt, writer, step, epoch):
  valid = spec.evaluate(state['params'])
  writer.write_scalars(step, {f'eval/valid/{k}': v for k, v in valid.items()})
  meta['evals'].append(dict(epoch=epoch + 1, step=step, **valid))
  name = spec.metric
  sign = -1.0 if spec.mode == 'min' else 1.0
  if meta['best'] is None or sign * valid[name] > sign * meta['best'][name]:
    meta.update(best=valid, best_step=step, best_epoch=epoch + 1, bad_evals=0)
    ckpt.save_best(step, state['params'], dict(step=step, epoch=epoch + 1,
                                                valid=valid))
  else:
    meta['bad_evals'] += 1
    if spec.patience and meta['bad_evals'] >= spec.patience:
      meta['stopped_early'] = True
  logging.info('epoch %d step %d: valid %s=%.4f (best %.4f at epoch %d)',
               epoch + 1, step, name, valid[name], meta['best'][name],
               meta['best_epoch'])


def hardware() -> str:
  """What the run's times were measured on, e.g. '1x NVIDIA H200' or
  '8x cpu (2 cores)' (tables that mix machines say which row ran where)."""
  devices = jax.devices()
  kind = devices[0].device_kind
  if devices[0].platform == 'cpu':
    kind = f'cpu ({os.cpu_count()} cores)'
  return f'{len(devices)}x {kind}'


def peak_device_mb() -> float | None:
  """Peak accelerator memory of this process so far (None on CPU, whose
  devices keep no such count; see the process's peak RSS there)."""
  stats = jax.local_devices()[0].memory_stats()
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return stats['peak_bytes_in_use'] / 2**20


def summary(meta: dict, step: int) -> dict:
  return dict(best_valid=meta['best'], best_step=meta['best_step'],
              best_epoch=meta['best_epoch'], epochs=meta['epoch'],
              steps=step, train_seconds=meta['train_seconds'],
              stopped_early=meta['stopped_early'],
              seconds_per_epoch=meta['train_seconds'] / max(meta['epoch'], 1),
              hardware=hardware(), peak_device_mb=peak_device_mb())
