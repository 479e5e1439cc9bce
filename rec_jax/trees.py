"""Parameter-tree paths: the one spelling of a leaf's place in a pytree,
'encoder/blocks/0/attn/query', that logs, PEFT patterns, the bridge's
diffs and checkpoint metadata all use."""

import jax


def key_name(key) -> str:
  """One entry of a jax key path as text: a dict key, a sequence index or
  an attribute name."""
  for attr in ('key', 'idx', 'name'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path) -> str:
  """'a/b/0' for the key path of a leaf (jax.tree_util.*_with_path)."""
  return '/'.join(key_name(k) for k in path)


def flatten(tree, *, is_leaf=None) -> dict:
  """{'a/b/0': leaf} of every leaf of `tree`, in tree order."""
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {path_str(p): leaf for p, leaf in flat}
