"""Ranking metrics as pure jnp functions, and a sharded top-K.

Ranks are 0-based and pessimistic: an item whose score ties the target's is
counted as ranked above it, so a model with constant scores scores zero.
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

KS = (5, 10, 20)
METRIC_NAMES = tuple(f'hr@{k}' for k in KS) + tuple(
    f'ndcg@{k}' for k in KS) + ('mrr',)


def target_rank(scores, targets):
  """0-based rank of each target among all candidates (ties count above).

  Args:
    scores: [B, V] float; excluded candidates must be -inf.
    targets: int [B] index of the target column (its score must be finite).

  Returns:
    int32 [B] number of other candidates scoring >= the target, or -1 for a
    row that cannot be ranked: a NaN or +inf score anywhere in it, or a
    target whose score is not finite. `from_ranks` refuses such rows.
  """
  t = jnp.take_along_axis(scores, targets[:, None], axis=1)
  rank = jnp.sum(scores >= t, axis=1, dtype=jnp.int32) - 1
  # NaN and +inf are the scores that are not below +inf (-inf marks the
  # excluded candidates); NaN would otherwise count below every target.
  bad = ~jnp.all(scores < jnp.inf, axis=1) | ~jnp.isfinite(t[:, 0])
  return jnp.where(bad, -1, rank)


def check_finite_rows(finite, what: str = 'scores'):
  """Raises FloatingPointError naming the rows where `finite` [N] is False.

  Rows are positions in the evaluated list (row i is `Split.users[i]`).
  """
  bad = np.flatnonzero(~np.asarray(finite, bool))
  if len(bad):
    more = ' ...' if len(bad) > 10 else ''
    raise FloatingPointError(
        f'Non-finite {what} (NaN or inf) for {len(bad)} of {len(finite)} '
        f'evaluated users, at rows {bad[:10].tolist()}{more}: no metric is '
        'computed from them. The model (its parameters or inputs) produces '
        'NaN / inf there.')


def from_ranks(ranks, ks=KS, xp=jnp):
  """Per-example HR@k, NDCG@k and MRR from 0-based ranks.

  Args:
    ranks: int [B] 0-based ranks (-1: a row `target_rank` could not rank,
      refused on the host with the rows named).
    ks: cut-offs.
    xp: array module: jnp inside jit, np on the host.

  Returns:
    dict name -> float32 [B].
  """
  if xp is np:
    check_finite_rows(np.asarray(ranks) >= 0)
  ranks = xp.asarray(ranks).astype(xp.float32)
  out = {}
  for k in ks:
    out[f'hr@{k}'] = (ranks < k).astype(xp.float32)
  for k in ks:
    out[f'ndcg@{k}'] = xp.where(ranks < k, 1.0 / xp.log2(ranks + 2.0), 0.0)
  out['mrr'] = 1.0 / (ranks + 1.0)
  return out


def exclude(scores, exclude_ids, keep_ids):
  """Sets scores of `exclude_ids` (0 = none) to -inf, except `keep_ids`.

  Args:
    scores: [B, V]. exclude_ids: int [B, H] (e.g. the user's history).
    keep_ids: int [B] ids never excluded (the target).
  """
  b = jnp.arange(scores.shape[0])[:, None]
  drop = jnp.zeros(scores.shape, bool).at[b, exclude_ids].set(True)
  drop = drop.at[:, 0].set(False)  # 0 is padding in exclude_ids.
  drop = drop.at[jnp.arange(scores.shape[0]), keep_ids].set(False)
  return jnp.where(drop, -jnp.inf, scores)


def top_k(scores, k: int, mesh=None):
  """Top-k over the last axis; per-shard then merged when V is split.

  When `mesh` has a `model` axis larger than 1 the candidate axis is split
  over it: each shard takes its local top-k and only B x k x shards values
  are gathered, never the full [B, V] scores.

  Returns:
    (values [B, k], indices [B, k]).
  """
  if mesh is None or mesh.shape.get('model', 1) == 1:
    return jax.lax.top_k(scores, k)
  shards = mesh.shape['model']
  vocab = scores.shape[-1]
  if vocab % shards:
    raise ValueError(f'{vocab} candidates do not split over {shards} shards')
  local = vocab // shards
  batch_axes = ('data', 'fsdp')

  @functools.partial(
      jax.shard_map, mesh=mesh, in_specs=P(batch_axes, 'model'),
      out_specs=(P(batch_axes), P(batch_axes)), check_vma=False)
  def _local(s):
    v, i = jax.lax.top_k(s, min(k, local))
    i = i + jax.lax.axis_index('model') * local
    v = jax.lax.all_gather(v, 'model', axis=1, tiled=True)
    i = jax.lax.all_gather(i, 'model', axis=1, tiled=True)
    v2, j = jax.lax.top_k(v, k)
    return v2, jnp.take_along_axis(i, j, axis=1)

  return _local(scores)


def mean(per_example: dict, weight=None) -> dict:
  """Host-side weighted mean of per-example metric arrays."""
  out = {}
  for name, v in per_example.items():
    v = np.asarray(v, np.float64)
    w = np.ones_like(v) if weight is None else np.asarray(weight, np.float64)
    out[name] = float((v * w).sum() / max(w.sum(), 1.0))
  return out
