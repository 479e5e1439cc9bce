"""The pretrain -> fine-tune bridge: initialise one subtree of a model (the
encoder) from another run's checkpoint.

Only `subtree` is read, straight onto the fine-tune shardings (the meshes
of the two runs may differ); heads and optimizer state start fresh. Every
parameter of the subtree must exist in the checkpoint with the same shape,
and the checkpoint's subtree must hold nothing the model lacks, unless the
key matches one of the `allow_mismatch` glob patterns (such parameters keep
their fresh initialisation). Otherwise the error shows both sides.
"""

import fnmatch

from absl import logging
import jax

from rec_jax import checkpoints
from rec_jax import trees


def _flat(tree, prefix):
  """{'prefix/a/0/b': (path of original keys, leaf)}."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {f'{prefix}/{trees.path_str(path)}': (
      tuple(getattr(k, 'key', k) for k in path), leaf) for path, leaf in flat}


def _set(tree, keys, value):
  for k in keys[:-1]:
    tree = tree.setdefault(k, {})
  tree[keys[-1]] = value


def _get(tree, keys):
  for k in keys:
    tree = tree[k]
  return tree


def diff(model: dict, ckpt: dict, allow=()) -> list[str]:
  """Readable lines for every key / shape that differs and is not allowed.

  Args:
    model: {key: shape} the fine-tune model expects.
    ckpt: {key: shape} the checkpoint holds (same prefix).
    allow: glob patterns of keys allowed to differ.
  """
  ok = lambda k: any(fnmatch.fnmatch(k, p) for p in allow)
  lines = []
  for k in sorted(set(model) | set(ckpt)):
    if ok(k):
      continue
    if k not in ckpt:
      lines.append(f'  - {k:<50} model {model[k]}  | checkpoint: missing')
    elif k not in model:
      lines.append(f'  + {k:<50} model: missing      | checkpoint {ckpt[k]}')
    elif tuple(model[k]) != tuple(ckpt[k]):
      lines.append(f'  ~ {k:<50} model {model[k]}  | checkpoint {ckpt[k]}')
  return lines


def init_subtree(path: str, params: dict, param_sh: dict, *,
                 subtree: str = 'encoder', allow_mismatch=()):
  """params with params[subtree] read from the checkpoint at `path`.

  Args:
    path: a run, stage or checkpoint directory (see
      checkpoints.resolve_params_dir).
    params: freshly initialised params (pure dict, sharded).
    param_sh: their shardings.
    subtree: top-level key to restore.
    allow_mismatch: glob patterns (e.g. 'encoder/pos_embed') of keys that
      may be missing, extra or differently shaped; they stay fresh.

  Returns:
    (params, report dict: restored / kept_fresh key lists, source).

  Raises:
    ValueError: on a key or shape mismatch that is not allowed.
  """
  if subtree not in params:
    raise ValueError(f'init_from.subtree={subtree!r} is not a top-level key '
                     f'of the model: {sorted(params)}')
  params_dir = checkpoints.resolve_params_dir(path)
  saved = {k: v for k, v in checkpoints.params_metadata(params_dir).items()
           if k.split('/')[0] == subtree}
  mine = _flat(params[subtree], subtree)
  mine_shapes = {k: tuple(v.shape) for k, (_, v) in mine.items()}
  problems = diff(mine_shapes, saved, allow_mismatch)
  if problems:
    raise ValueError(
        f'init_from: {params_dir} does not match the model under '
        f'{subtree!r} (- only in the model, + only in the checkpoint, '
        '~ shape differs); list keys that may differ in '
        'init_from.allow_mismatch:\n' + '\n'.join(problems))
  take = sorted(k for k in mine if saved.get(k) == mine_shapes[k])
  sh = _flat(param_sh[subtree], subtree)
  abstract = {}
  for k in take:
    keys, leaf = mine[k]
    _set(abstract, keys, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                              sharding=sh[k][1]))
  restored = checkpoints.restore_subtree(params_dir, abstract, subtree)
  new_sub = jax.tree.map(lambda x: x, params[subtree])
  for k in take:
    keys = mine[k][0]
    _set(new_sub, keys, _get(restored, keys))
  fresh = sorted(set(mine) - set(take))
  logging.info('init_from %s: restored %d arrays of %r; kept fresh: %s',
               params_dir, len(take), subtree, fresh or 'none')
  out = dict(params)
  out[subtree] = new_sub
  return out, dict(source=params_dir, restored=take, kept_fresh=fresh)
