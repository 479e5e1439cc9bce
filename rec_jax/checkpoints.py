"""Orbax checkpointing; the only module that imports Orbax.

Layout under a stage workdir:
  checkpoints/<step>/   periodic: {'state': train state, 'meta': loop JSON}
  best/<step>/          the best model by validation metric: {'params', 'meta'}
  corrupt/<step>-<time>/  periodic checkpoints that did not read back

A periodic checkpoint's meta holds a fingerprint of its state (a 32-bit
hash per array, any flipped bit changes it). Resuming restores the newest
checkpoint that reads back and matches its fingerprint: a newer one that is
truncated, damaged or half-written is moved to corrupt/ with a warning that
names it, and the run goes on from the one before. Orbax writes each step
into a temporary directory and renames it when complete, so a save that
dies (a full disk, a kill) leaves no step that looks finished.
"""

import datetime
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rec_jax import trees

_FINGERPRINT = '_state_fingerprint'


class CheckpointError(RuntimeError):
  """No periodic checkpoint of a stage reads back."""


def _leaf_hash(x):
  """uint32 hash of an array's bits: sum of (bits * odd weight) mod 2^32,
  so a change of any one bit changes it."""
  x = jnp.asarray(x)
  if x.dtype == jnp.bool_:
    bits = x.astype(jnp.uint32)
  elif x.dtype.itemsize < 4:
    width = {1: jnp.uint8, 2: jnp.uint16}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
  else:  # 64-bit values become two uint32 words.
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
  bits = bits.reshape(-1)
  weight = 2 * jax.lax.iota(jnp.uint32, bits.size) + 1
  return jnp.sum(bits * weight, dtype=jnp.uint32)


_hashes = jax.jit(lambda tree: [_leaf_hash(x) for x in jax.tree.leaves(tree)])


def _host_hash(x: np.ndarray) -> int:
  """_leaf_hash in numpy (the same value)."""
  if x.dtype == np.bool_:
    bits = x.astype(np.uint32)
  elif x.dtype.itemsize < 4:
    bits = x.view({1: np.uint8, 2: np.uint16}[x.dtype.itemsize]).astype(
        np.uint32)
  else:
    bits = np.ascontiguousarray(x).view(np.uint32)
  bits = bits.reshape(-1)
  weight = 2 * np.arange(bits.size, dtype=np.uint32) + 1
  return int(np.sum(bits * weight, dtype=np.uint32))


def fingerprint(tree) -> list[str]:
  """Per-array hashes of a pytree of arrays. On accelerators they are
  computed where the arrays live (nothing large is copied); on CPU, where
  the arrays are host memory already, in numpy (no compile: ~0.5 s saved
  per stage)."""
  leaves = jax.tree.leaves(tree)
  on_cpu = all(d.platform == 'cpu' for x in leaves for d in x.devices())
  if on_cpu and jax.process_count() == 1:
    hashes = [_host_hash(np.asarray(x)) for x in leaves]
  else:
    hashes = [int(h) for h in np.asarray(jax.device_get(_hashes(tree)))]
  return [f'{h:08x}' for h in hashes]


def _abstract(tree):
  return jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
      tree)


class Manager:
  """Periodic + best checkpoints of one stage."""

  def __init__(self, workdir: str, *, max_to_keep: int = 2,
               async_save: bool = True):
    self.workdir = os.path.abspath(workdir)
    opts = lambda n: ocp.CheckpointManagerOptions(
        max_to_keep=n, enable_async_checkpointing=async_save,
        create=True)
    self._periodic = ocp.CheckpointManager(
        os.path.join(self.workdir, 'checkpoints'), options=opts(max_to_keep),
        item_names=('state', 'meta'))
    self._best = ocp.CheckpointManager(
        os.path.join(self.workdir, 'best'), options=opts(1),
        item_names=('params', 'meta'))

  def latest_step(self):
    return self._periodic.latest_step()

  def save(self, step: int, state, meta: dict):
    """Saves the periodic checkpoint of `step` (replacing one of the same
    step, e.g. after a resume from a pre-emption save)."""
    meta = dict(meta, **{_FINGERPRINT: fingerprint(state)})
    if step in self._periodic.all_steps():
      self._periodic.wait_until_finished()
      self._periodic.delete(step)
    self._periodic.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                        force=True)

  def _restore_step(self, step: int, abstract_state):
    out = self._periodic.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(abstract_state)),
        meta=ocp.args.JsonRestore()))
    state, meta = out['state'], dict(out['meta'])
    want = meta.pop(_FINGERPRINT, None)  # absent in older checkpoints.
    if want is not None:
      got = fingerprint(state)
      bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
      if bad or len(got) != len(want):
        raise CheckpointError(
            f'the restored state does not match its fingerprint (arrays '
            f'{bad[:5]} of {len(got)} differ): the files were damaged '
            'after they were written')
    return state, meta

  def restore(self, abstract_state, step: int | None = None):
    """Restores (state, meta) with the shardings of `abstract_state`: of
    `step`, or of the newest checkpoint that reads back (see the module
    docstring); newer ones that do not are moved to corrupt/.

    Raises:
      CheckpointError: when none reads back (then nothing is moved).
    """
    if step is not None:
      return self._restore_step(step, abstract_state)
    failed = []
    for s in sorted(self._periodic.all_steps(), reverse=True):
      try:
        out = self._restore_step(s, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        # Orbax and TensorStore raise many kinds for a damaged step.
        failed.append((s, f'{type(e).__name__}: {str(e)[:300]}'))
        continue
      for bad, why in failed:
        self._set_aside(bad, why, s)
      if failed:
        self._periodic.reload()
      return out
    raise CheckpointError(
        f'No checkpoint under {self.workdir}/checkpoints reads back: ' +
        '; '.join(f'step {s}: {why}' for s, why in failed) + '. Move them '
        'away to start the stage afresh.')

  def _set_aside(self, step: int, why: str, resumed: int):
    src = os.path.join(self.workdir, 'checkpoints', str(step))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime(
        '%Y%m%dT%H%M%S')
    dst = os.path.join(self.workdir, 'corrupt', f'{step}-{stamp}')
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      os.rename(src, dst)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    logging.warning('Checkpoint %s does not read back (%s); moved it to %s '
                    'and resumed from step %d.', src, why, dst, resumed)

  def save_best(self, step: int, params, meta: dict):
    self._best.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
                    force=True)

  def best_step(self):
    return self._best.latest_step()

  def wait(self):
    self._periodic.wait_until_finished()
    self._best.wait_until_finished()

  def close(self):
    self.wait()
    self._periodic.close()
    self._best.close()


def restore_best_params(workdir: str, abstract_params):
  """Restores the best params of a stage workdir onto the given shardings.

  Returns:
    (params, meta) of the best checkpoint.

  Raises:
    FileNotFoundError: when the workdir has no best checkpoint.
  """
  path = os.path.join(os.path.abspath(workdir), 'best')
  mgr = ocp.CheckpointManager(path, item_names=('params', 'meta'))
  step = mgr.latest_step()
  if step is None:
    raise FileNotFoundError(f'No best checkpoint under {path}: run training '
                            'first (or point --workdir at a trained run).')
  out = mgr.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(abstract_params)),
      meta=ocp.args.JsonRestore()))
  mgr.close()
  return out['params'], out['meta']


# ------------------------------------------------ pretrain -> fine-tune ----


def resolve_params_dir(path: str) -> str:
  """The `params` item of the best checkpoint under `path`.

  `path` may be a stage workdir (holding best/), a recipe workdir (holding
  pretrain/ or finetune/), or a checkpoint step directory.

  Raises:
    FileNotFoundError: naming every place that was looked at.
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'params')):
    return os.path.join(path, 'params')
  tried = []
  for stage in ('', 'pretrain', 'finetune'):
    best = os.path.join(path, stage, 'best')
    tried.append(best)
    if not os.path.isdir(best):
      continue
    steps = sorted(int(d) for d in os.listdir(best) if d.isdigit())
    if steps:
      return os.path.join(best, str(steps[-1]), 'params')
  raise FileNotFoundError(
      f'init_from.path={path!r} holds no checkpoint; looked for '
      f'{", ".join(tried)}.')


def params_metadata(params_dir: str) -> dict:
  """{'a/b/c': shape} of every array saved in a params item."""
  meta = ocp.PyTreeCheckpointer().metadata(params_dir)
  tree = getattr(meta, 'item_metadata', meta)
  tree = getattr(tree, 'tree', tree)
  return {k: tuple(leaf.shape) for k, leaf in trees.flatten(
      tree, is_leaf=lambda x: hasattr(x, 'shape')).items()}


def restore_subtree(params_dir: str, abstract: dict, subtree: str):
  """Restores `params[subtree]` of a checkpoint onto `abstract`'s shardings
  (which may come from a mesh of another shape than the one that saved)."""
  partial = {subtree: _abstract(abstract)}
  restored = ocp.PyTreeCheckpointer().restore(
      params_dir, args=ocp.args.PyTreeRestore(
          item=partial,
          restore_args=ocp.checkpoint_utils.construct_restore_args(partial),
          partial_restore=True))
  return restored[subtree]
