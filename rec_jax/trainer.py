"""What every training stage shares: data loading, sharded model and state
construction, the jitted step's shardings and gradient accumulation,
restoring a trained stage, and the resumable epoch loop (metrics,
checkpoints, progress, early stopping). Stages (pretrain, finetune) supply
a step function, a batch stream and, optionally, an evaluation.

Batch sharding has one policy: a batch is a dict of host arrays whose
first axis is rows (of packed sequences, or of users); the loop places it
with `sharding.host_to_global` (rows split over the mesh's data axes, every
other axis whole) and the jitted steps take it as it arrives.
"""

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from typing import Any, Callable

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rec_jax import bridge
from rec_jax import checkpoints
from rec_jax import config_checks
from rec_jax import config_lib
from rec_jax import models
from rec_jax import sharding
from rec_jax import trees
from rec_jax.data import datasets
from rec_jax.data import pipeline

# ---------------------------------------------------------------- setup ----


def load_data(config):
  """(dataset, leave-one-out split) named by config.data. `rec_jax.main`
  loads them once and hands them to every stage; a stage run on its own
  loads them itself."""
  data = config.data
  kwargs = dict(data.synthetic) if data.name == 'synthetic' else {}
  ds = datasets.load(data.name, data_dir=data.data_dir or None,
                     cache_dir=data.cache_dir or None, **kwargs)
  if data.new_interactions:
    ds = datasets.append_interactions(ds, data.new_interactions)
  if data.cold_fraction:
    ds = datasets.cold_start(ds, data.cold_fraction, config.seed)
  split = pipeline.leave_one_out(ds)
  logging.info('Dataset %s: %d users, %d items, %d interactions.', ds.name,
               ds.num_users, ds.num_items, ds.num_interactions)
  return ds, split


def resolved(config, data):
  """`config` with its values from the data set (config_lib.FROM_DATA)."""
  ds, split = data
  return config_lib.resolve_from_data(config, split.train, ds.num_items)


def setup(config, workdir: str, data=None):
  """(config resolved on its data, dataset, split) of a stage run in
  `workdir` (created), loading the data when `data` is None."""
  config_checks.check_values(config)
  data = data or load_data(config)
  os.makedirs(workdir, exist_ok=True)
  return (resolved(config, data), *data)


def start(config, workdir: str, *, tx, abs_params, param_sh, mesh, fresh):
  """(checkpoint manager, train state, loop meta, resumed) of a stage: its
  own latest checkpoint when it has one, else `fresh()` -> (params, meta)
  laid out as a new state, with the resolved config written beside it."""
  abs_opt, state_sh = state_shardings(tx, abs_params, param_sh, mesh)
  ckpt = checkpoints.Manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                             async_save=config.checkpoint.async_save)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(abstract_state(abs_params, abs_opt, state_sh))
    logging.info('Resumed from %s/checkpoints/%d (epoch %d, batch %d).',
                 workdir, ckpt.latest_step(), meta['epoch'], meta['index'])
    return ckpt, state, meta, True
  params, meta = fresh()
  state = init_state(tx, params, state_sh, mesh)
  write_config(config, workdir)
  return ckpt, state, meta, False


def write_config(config, workdir: str):
  """The resolved config as `<workdir>/config.json`, before step 0."""
  with open(os.path.join(workdir, 'config.json'), 'w', encoding='utf-8') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


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
  """step_fn(state, batch, key) jitted once with the state's shardings;
  the batch keeps the (data-parallel) shardings it arrives with (module
  docstring)."""
  return jax.jit(step_fn,
                 in_shardings=(state_sh, None, sharding.replicated(mesh)),
                 out_shardings=(state_sh, sharding.replicated(mesh)),
                 donate_argnums=0)


def accumulate(grad_fn, params, batch, keys, micro_batches: int):
  """((loss sum, target count), summed gradients) of `batch`.

  `grad_fn(params, batch, *keys)` is a value_and_grad of a (sum, count)
  loss. With micro_batches = n > 1 the batch's rows are processed n at a
  time (gradient accumulation: the activations of one micro-batch live at
  once), micro-batch i taking rows i, i + n, ... so that each device keeps
  its own rows, with every key folded with i; the sums equal the whole
  batch's.
  """
  n = micro_batches
  if n == 1:
    return grad_fn(params, batch, *keys)
  split = jax.tree.map(
      lambda x: jnp.moveaxis(x.reshape(x.shape[0] // n, n, *x.shape[1:]),
                             1, 0), batch)

  def body(carry, xs):
    mb, i = xs
    (t, c), g = grad_fn(params, mb, *[jax.random.fold_in(k, i) for k in keys])
    return (carry[0] + t, carry[1] + c,
            jax.tree.map(jnp.add, carry[2], g)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (total, count, grads), _ = jax.lax.scan(
      body, (jnp.zeros(()), jnp.zeros(()), zeros), (split, jnp.arange(n)))
  return (total, count), grads


def load_trained(config, stage_dir: str, num_items: int, mesh, *,
                 encoder_only: bool = False):
  """(graphdef, params, meta) of the fine-tune model with the best params
  of a trained stage, laid out on `mesh`. With `encoder_only` only the
  encoder is read (through rec_jax.bridge, so `stage_dir` may be a
  pretraining stage) and the rest is freshly initialised; meta is then the
  bridge's report."""
  graphdef, abs_params, param_sh = abstract_model(
      lambda rngs: models.build(config.model, num_items, rngs=rngs), config,
      mesh)
  if encoder_only:
    params = init_params(
        lambda rngs: models.build(config.model, num_items, rngs=rngs),
        config, mesh, param_sh, 0)
    params, meta = bridge.init_subtree(stage_dir, params, param_sh)
    return graphdef, params, meta
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abs_params, param_sh)
  params, meta = checkpoints.restore_best_params(stage_dir, abstract)
  return graphdef, params, meta


def log_params(params, shardings):
  rows = []
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  flat_sh = jax.tree.leaves(shardings)
  total = 0
  for (path, leaf), sh in zip(flat, flat_sh):
    rows.append(f'  {trees.path_str(path):<45} {str(leaf.shape):<16} '
                f'{sh.spec}')
    total += int(np.prod(leaf.shape))
  logging.info('Parameters (%d):\n%s', total, '\n'.join(rows))
  return total


def save_json(path: str, obj):
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def fresh_meta() -> dict:
  return dict(epoch=0, index=0, best=None, best_step=-1, best_epoch=-1,
              bad_evals=0, train_seconds=0.0, evals=[], stopped_early=False,
              epoch_seconds=[], compile_seconds=0.0, compilations=0)


# JAX's own timings of the work before a jitted function first runs:
# tracing to a jaxpr, lowering to StableHLO and the XLA compile.
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_COMPILE = dict(seconds=0.0, compilations=0, listening=False)


def compile_clock() -> tuple[float, int]:
  """(seconds, XLA compilations) this process has spent compiling so far,
  from JAX's monitoring events; a stage reports the difference across its
  run, so its log separates compile time from training time."""
  if not _COMPILE['listening']:
    def listen(event, duration, **_):
      if event in _COMPILE_EVENTS:
        _COMPILE['seconds'] += duration
        _COMPILE['compilations'] += event == _COMPILE_EVENTS[-1]
    jax.monitoring.register_event_duration_secs_listener(listen)
    _COMPILE['listening'] = True
  return _COMPILE['seconds'], _COMPILE['compilations']


# ----------------------------------------------------------------- loop ----


@dataclasses.dataclass
class LoopSpec:
  """How a stage trains: its stream, step, schedule and evaluation.

  `evaluate(params) -> metrics` runs after every `eval_every` epochs (or
  every `eval_every_steps` steps, within epochs, and after the last); with
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
  # Epoch-end checkpoints at least this many steps apart (always after an
  # evaluation and at the end): short epochs do not spend their time
  # writing checkpoints.
  checkpoint_min_steps: int = 0
  evaluate: Callable | None = None
  eval_every: int = 1       # epochs between validations ...
  eval_every_steps: int = 0  # ... or steps, when > 0 (then at the end too).
  metric: str = 'ndcg@10'
  mode: str = 'max'         # 'min' when lower `metric` is better (rmse).
  patience: int = 0         # 0: never stop early.
  desc: str = 'train'
  # The run's steps when the stage has counted them (pretraining does, for
  # its LR schedule); 0: the progress bar estimates them from this epoch.
  total_steps: int = 0


class Preempted(SystemExit):
  """SIGTERM stopped the stage after saving its state (exit status 143)."""

  def __init__(self, step: int):
    super().__init__(128 + signal.SIGTERM)
    self.step = step


@contextlib.contextmanager
def _sigterm_flag():
  """Yields a list that SIGTERM appends to, the default action restored on
  exit. Installed for one process on the main thread only: the processes
  of a multi-host run could see the signal at different steps."""
  got = []
  if (jax.process_count() > 1 or
      threading.current_thread() is not threading.main_thread()):
    yield got
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, _: got.append(
      signum))
  try:
    yield got
  finally:
    signal.signal(signal.SIGTERM, previous)


def fit(spec: LoopSpec, **kwargs):
  """Runs (or resumes) a stage's epochs. Returns (state, meta).

  On SIGTERM (a pre-emption notice) the stage finishes its step, saves a
  checkpoint there, waits for it to be written and raises Preempted: the
  next start resumes from that step.

  Raises:
    FloatingPointError: when the loss turns non-finite (the last good
      checkpoint is kept).
    Preempted: after SIGTERM, once its checkpoint is written.
  """
  with _sigterm_flag() as sigterm:
    return _fit(spec, sigterm=sigterm, **kwargs)


def _fit(spec: LoopSpec, *, state, meta: dict, ckpt, writer, mesh, key,
         workdir: str, sigterm: list):
  """`fit`, with `sigterm` non-empty once the signal has arrived."""
  stream = spec.stream
  compiled_before = compile_clock()
  eval_compile = 0.0  # validation's compiles, outside train_seconds.
  for k, v in fresh_meta().items():  # checkpoints of older versions.
    meta.setdefault(k, v)
  step = int(jax.device_get(state['step']))
  # The bar's total from this epoch's length (the loop plans it next
  # anyway): packing plans each epoch afresh, a row or so more or less, and
  # planning all of them up front cost 5.6 s on Beauty (200 epochs).
  epochs_left = spec.num_epochs - meta['epoch']
  total_steps = spec.total_steps or step - meta['index'] + (
      epochs_left * stream.steps_in_epoch(meta['epoch']) if epochs_left > 0
      else 0)
  bar = tqdm.tqdm(total=total_steps, initial=step, unit='step',
                  desc=spec.desc, disable=jax.process_index() != 0,
                  dynamic_ncols=True)
  postfix = {}
  pending = []  # per-step metrics not yet fetched from the device.
  marks = dict(t=time.perf_counter(), step=step, saved=step)

  def drain():
    """Fetches pending metrics, checks finiteness, logs their mean."""
    if not pending:
      return
    fetched = jax.device_get(pending)
    pending.clear()
    # The loss of step s is computed from the params before it; the norm
    # of the params after it. Both are checked before any save, so no
    # checkpoint ever holds non-finite params.
    bad = []  # (step, what, values) of each check that fails.
    for name, what in (('train/loss', 'training loss'),
                       ('train/param_norm', 'parameter norm after the step')):
      if name in fetched[0]:
        values = np.array([m[name] for m in fetched])
        if not np.all(np.isfinite(values)):
          first = step - len(fetched) + int(np.argmin(np.isfinite(values)))
          bad.append((first + 1, what, values.tolist()[-5:]))
    if bad:
      at, what, values = min(bad, key=lambda b: b[0])
      last = ckpt.latest_step()
      kept = (f'Kept the last good checkpoint, {workdir}/checkpoints/{last}'
              if last is not None else 'No checkpoint was saved')
      raise FloatingPointError(
          f'Non-finite {what} at step {at} ({values}). {kept}; lower the '
          'learning rate or check the data.')
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

  def validate(epoch):
    """Validation at this step, compile time kept apart."""
    nonlocal eval_compile
    before = compile_clock()[0]
    _evaluate(spec, state, meta, ckpt, writer, step, epoch)
    eval_compile += compile_clock()[0] - before
    postfix[f'best_{spec.metric}'] = (
        '-' if not meta['best'] else f"{meta['best'][spec.metric]:.4f}")
    bar.set_postfix(postfix)
    meta['evaluated_step'] = step

  by_steps = spec.evaluate is not None and spec.eval_every_steps > 0
  with jax.transfer_guard('disallow'):
    for epoch in range(meta['epoch'], spec.num_epochs):
      if meta['stopped_early']:
        break
      t_epoch = time.perf_counter()
      if meta['index'] == 0:
        meta['epoch_start_seconds'] = meta['train_seconds']
      save_at_end = False  # a save due at the epoch's last step.
      for index in range(meta['index'], stream.steps_in_epoch(epoch)):
        batch = sharding.host_to_global(mesh, stream.batch(epoch, index))
        state, m = spec.step_fn(state, batch, key)
        pending.append(m)
        step += 1
        bar.update(1)
        if step % spec.log_every == 0:
          drain()
        mid_eval = by_steps and step % spec.eval_every_steps == 0
        if mid_eval or (spec.checkpoint_every and
                        step % spec.checkpoint_every == 0):
          drain()
          jax.block_until_ready(state)
          meta.update(epoch=epoch, index=index + 1, train_seconds=meta[
              'train_seconds'] + time.perf_counter() - t_epoch)
          if mid_eval:
            validate(epoch)
          if index + 1 < stream.steps_in_epoch(epoch):
            ckpt.save(step, state, meta)
            marks['saved'] = step
          else:  # the epoch-end save below writes this step (once).
            save_at_end = True
          t_epoch = time.perf_counter()
          if meta['stopped_early']:
            break
        if sigterm:
          if marks['saved'] != step:
            drain()
            jax.block_until_ready(state)
            meta.update(epoch=epoch, index=index + 1, train_seconds=meta[
                'train_seconds'] + time.perf_counter() - t_epoch)
            ckpt.save(step, state, meta)
          ckpt.wait()
          bar.close()
          logging.warning('SIGTERM: saved %s/checkpoints/%d; stopping (the '
                          'next start resumes there).', workdir, step)
          raise Preempted(step)
      if meta['stopped_early'] and meta['index'] < stream.steps_in_epoch(
          epoch):
        break  # stopped by a validation within the epoch, saved there.
      drain()
      jax.block_until_ready(state)
      meta['train_seconds'] += time.perf_counter() - t_epoch
      meta['epoch_seconds'].append(
          meta['train_seconds'] - meta.get('epoch_start_seconds', 0.0))
      meta.update(epoch=epoch + 1, index=0)
      last = epoch + 1 == spec.num_epochs
      if by_steps:  # ... and once at the very end, unless just done.
        evaluated = last and meta.get('evaluated_step') != step
      else:
        evaluated = spec.evaluate is not None and (
            (epoch + 1) % spec.eval_every == 0 or last)
      if evaluated:
        validate(epoch)
      if (save_at_end or evaluated or last or
          step - marks['saved'] >= spec.checkpoint_min_steps):
        ckpt.save(step, state, meta)
        marks['saved'] = step
  bar.close()
  seconds, count = (a - b for a, b in zip(compile_clock(), compiled_before))
  meta['compile_seconds'] += seconds - eval_compile
  meta['compilations'] += count
  logging.info('%s: %d steps, %.1f s training (median epoch %.2f s), of '
               'which %.1f s compiling in this process; validation compiled '
               'for %.1f s more (%d XLA compilations in all).', spec.desc,
               step, meta['train_seconds'], median_epoch_seconds(meta),
               seconds - eval_compile, eval_compile, count)
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


def median_epoch_seconds(meta: dict) -> float:
  """Training seconds of the median epoch: the steady state, which the
  first epoch's compilation does not move once there are three."""
  times = meta.get('epoch_seconds') or [0.0]
  return float(np.median(times))


def summary(meta: dict, step: int) -> dict:
  return dict(best_valid=meta['best'], best_step=meta['best_step'],
              best_epoch=meta['best_epoch'], epochs=meta['epoch'],
              steps=step, train_seconds=meta['train_seconds'],
              stopped_early=meta['stopped_early'],
              seconds_per_epoch=meta['train_seconds'] / max(meta['epoch'], 1),
              median_epoch_seconds=median_epoch_seconds(meta),
              compile_seconds=meta.get('compile_seconds', 0.0),
              compilations=meta.get('compilations', 0),
              hardware=hardware(), peak_device_mb=peak_device_mb())
