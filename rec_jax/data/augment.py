"""Sequence augmentations for contrastive objectives (CL4SRec, CoSeRec).

Every function works on one left-padded row (`items` int [W], the newest
item at W - 1, `length` real items) and is pure, shape-static and jit /
vmap-friendly; `augment` applies one randomly chosen augmentation per row of
a batch. Counts follow CL4SRec: crop keeps max(1, floor(eta * n)) items,
mask hides floor(gamma * n), reorder shuffles a window of floor(beta * n),
substitute / insert touch max(1, floor(alpha * n)) positions (CoSeRec).

`item_correlations` builds, from training sequences only, the table of
correlated items that substitute and insert draw from.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np

OPS = ('crop', 'mask', 'reorder', 'substitute', 'insert')


def _positions(items, length):
  """(index [W], real [W] bool, start): real items occupy [start, W)."""
  width = items.shape[-1]
  idx = jnp.arange(width)
  start = width - length
  return idx, idx >= start, start


def _count(rate, length, minimum):
  return jnp.clip(jnp.floor(rate * length).astype(jnp.int32), minimum, length)


def _rank(score):
  """int [W]: each entry's place in a stable ascending sort of `score`
  (argsort(argsort(score))), by W x W comparisons: on a CPU, XLA's sort of
  many short rows costs far more than this."""
  i = jnp.arange(score.shape[-1])
  below = score[None, :] < score[:, None]
  tied_before = (score[None, :] == score[:, None]) & (i[None, :] < i[:, None])
  return jnp.sum(below | tied_before, axis=-1)


def _choose(key, real, k):
  """Bool [W]: exactly k (<= number of real) random real positions."""
  score = jnp.where(real, jax.random.uniform(key, real.shape), 2.0)
  return _rank(score) < k


def crop(key, items, length, eta: float):
  """Keeps a random contiguous window of max(1, floor(eta * n)) items."""
  width = items.shape[-1]
  idx, _, start = _positions(items, length)
  k = _count(eta, length, 1)
  begin = start + jax.random.randint(key, (), 0, jnp.maximum(length - k, 0) + 1)
  src = begin + idx - (width - k)
  out = jnp.where(idx >= width - k,
                  jnp.take(items, jnp.clip(src, 0, width - 1)), 0)
  return out * (length > 0), jnp.where(length > 0, k, 0)


def mask(key, items, length, gamma: float, mask_id: int):
  """Replaces floor(gamma * n) random items with `mask_id`."""
  _, real, _ = _positions(items, length)
  hide = _choose(key, real, _count(gamma, length, 0))
  return jnp.where(hide, mask_id, items), length


def reorder(key, items, length, beta: float):
  """Shuffles a random contiguous window of floor(beta * n) items."""
  k1, k2 = jax.random.split(key)
  idx, _, start = _positions(items, length)
  k = _count(beta, length, 0)
  begin = start + jax.random.randint(k1, (), 0, jnp.maximum(length - k, 0) + 1)
  inside = (idx >= begin) & (idx < begin + k)
  # Sort keys: integers outside the window, distinct reals inside it.
  sort_key = jnp.where(
      inside, begin - 0.5 + jax.random.uniform(k2, idx.shape) * k, idx)
  # items in the order argsort(sort_key) gives, without the sort.
  return jnp.zeros_like(items).at[_rank(sort_key)].set(items), length


def _correlated(key, items, similar):
  """A random entry of each item's correlated-items row."""
  options = jnp.take(similar, items, axis=0)  # [W, K]
  pick = jax.random.randint(key, items.shape, 0, similar.shape[-1])
  return jnp.take_along_axis(options, pick[:, None], -1)[:, 0]


def substitute(key, items, length, alpha: float, similar):
  """Replaces max(1, floor(alpha * n)) items with correlated items."""
  k1, k2 = jax.random.split(key)
  _, real, _ = _positions(items, length)
  change = _choose(k1, real, _count(alpha, length, 1))
  return jnp.where(change, _correlated(k2, items, similar), items), length


def insert(key, items, length, alpha: float, similar):
  """Inserts a correlated item before max(1, floor(alpha * n)) items.

  The row keeps its newest W items when the sequence outgrows it.
  """
  k1, k2 = jax.random.split(key)
  width = items.shape[-1]
  _, real, _ = _positions(items, length)
  add = _choose(k1, real, _count(alpha, length, 1)) & real
  emitted = real.astype(jnp.int32) + add.astype(jnp.int32)
  after = jnp.cumsum(emitted[::-1])[::-1] - emitted  # tokens to the right.
  # Positions pushed off the left end go to `width`, which 'drop' discards
  # (a negative index would wrap around).
  pos_item = width - 1 - after
  pos_new = pos_item - 1
  pos_item = jnp.where(real & (pos_item >= 0), pos_item, width)
  pos_new = jnp.where(add & (pos_new >= 0), pos_new, width)
  out = jnp.zeros_like(items)
  out = out.at[pos_item].set(items, mode='drop')
  out = out.at[pos_new].set(_correlated(k2, items, similar), mode='drop')
  new_length = jnp.minimum(length + add.sum(), width)
  return jnp.where(jnp.arange(width) >= width - new_length, out, 0), new_length


def max_growth(ops, cfg, length: int) -> int:
  """The most items any of `ops` adds to a sequence of `length` (insert:
  max(1, floor(alpha * n)), the others none), plus one of slack for the
  float rounding of that count on device."""
  if 'insert' not in ops or not length:
    return 0
  return max(1, int(np.floor(cfg.correlated_alpha * length))) + 1


def augment(key, items, lengths, *, ops, cfg, mask_id: int, similar=None):
  """One random augmentation from `ops` per row.

  Args:
    key: PRNG key.
    items: int [B, W] left-padded rows.
    lengths: int [B] real items per row.
    ops: names from OPS to choose from (uniformly, per row).
    cfg: rates: crop_eta, mask_gamma, reorder_beta, correlated_alpha.
    mask_id: the [MASK] token id.
    similar: int [V, K] correlated items (substitute / insert).

  Returns:
    (items [B, W], lengths [B]) of the augmented rows.
  """
  if not ops:
    raise ValueError('augment: no augmentation ops configured')
  unknown = set(ops) - set(OPS)
  if unknown:
    raise ValueError(f'augment: unknown ops {sorted(unknown)}; known: {OPS}')
  if ({'substitute', 'insert'} & set(ops)) and similar is None:
    raise ValueError('substitute / insert need the correlated-items table')
  fns = {
      'crop': lambda k, x, n: crop(k, x, n, cfg.crop_eta),
      'mask': lambda k, x, n: mask(k, x, n, cfg.mask_gamma, mask_id),
      'reorder': lambda k, x, n: reorder(k, x, n, cfg.reorder_beta),
      'substitute': lambda k, x, n: substitute(k, x, n, cfg.correlated_alpha,
                                               similar),
      'insert': lambda k, x, n: insert(k, x, n, cfg.correlated_alpha, similar),
  }

  def one(k, x, n):
    k_op, k_aug = jax.random.split(k)
    choice = jax.random.randint(k_op, (), 0, len(ops))
    branches = [lambda a, b, c, f=fns[o]: f(a, b, c) for o in ops]
    return jax.lax.switch(choice, branches, k_aug, x, n)

  keys = jax.random.split(key, items.shape[0])
  return jax.vmap(one)(keys, items, lengths.astype(jnp.int32))


def item_correlations(train: list[np.ndarray], num_items: int, vocab: int,
                      k: int = 8, window: int = 3) -> np.ndarray:
  """Top-k co-occurring items of every item within `window` steps.

  Built from training sequences only (no validation / test leakage). An
  item with fewer than k neighbours repeats its best ones; an item with none
  maps to itself (so substitute / insert leave it unchanged in effect).

  Returns:
    int32 [vocab, k]; rows outside 1..num_items map to themselves.
  """
  counts = collections.defaultdict(collections.Counter)
  for seq in train:
    seq = np.asarray(seq)
    for d in range(1, window + 1):
      for a, b in zip(seq[:-d].tolist(), seq[d:].tolist()):
        if a != b:
          counts[a][b] += 1
          counts[b][a] += 1
  out = np.repeat(np.arange(vocab, dtype=np.int32)[:, None], k, axis=1)
  for item in range(1, num_items + 1):
    c = counts.get(item)
    if not c:
      continue
    best = [b for b, _ in c.most_common(k)]
    out[item] = np.resize(np.asarray(best, np.int32), k)
  return out
