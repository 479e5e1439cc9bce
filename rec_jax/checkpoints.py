"""Orbax checkpointing; the only module that imports Orbax.

Layout under a stage workdir:
  checkpoints/<step>/   periodic: {'state': train state, 'meta': loop JSON}
  best/<step>/          the best model by validation metric: {'params', 'meta'}
"""

import os

import jax
import orbax.checkpoint as ocp

from rec_jax import trees


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
    self._periodic.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                        force=True)

  def restore(self, abstract_state, step: int | None = None):
    """Restores (state, meta) with the shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    out = self._periodic.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(abstract_state)),
        meta=ocp.args.JsonRestore()))
    return out['state'], out['meta']

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
