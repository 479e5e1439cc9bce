"""Next-item losses over the tied item table. All return (sum, count) so that
callers normalise by the number of real targets across the whole batch.

`next_item_loss(cfg, ...)` picks one of them from a fine-tune config, once,
outside any traced function: the train step only calls what it returns.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np

from rec_jax.models import items


def full_softmax_ce(hidden, targets, table, num_items: int):
  """Cross-entropy against every item in the catalog.

  Args:
    hidden: [B, L, D] sequence outputs.
    targets: int [B, L] item to predict at each position; 0 = no target.
    table: [V, D] item table (tied output layer).
    num_items: catalog size; table rows outside 1..num_items get no mass.

  Returns:
    (sum of per-target losses, number of targets).
  """
  logits = jnp.einsum('bld,vd->blv', hidden, table.astype(hidden.dtype))
  logits = items.mask_non_items(logits.astype(jnp.float32), num_items)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  weight = (targets > 0).astype(jnp.float32)
  # Padding targets (id 0) have a -inf logit: select, never multiply by 0.
  loss = jnp.where(targets > 0, lse - target_logit, 0.0)
  return jnp.sum(loss), jnp.sum(weight)


def smoothing_term(hidden, targets, table, num_items: int):
  """What label smoothing eps adds to the summed CE, divided by eps.

  Smoothing mixes each one-hot target with the uniform distribution over
  the catalog: (1 - eps) (lse - s_t) + eps (lse - mean_v s_v) = CE
  + eps (s_t - mean_v s_v). The mean logit over items v = 1..num_items is
  h . mean_v e_v, so no [N, V] block is needed (it works under any CE
  implementation: full, chunked or sharded over the catalog).

  Returns:
    sum over targets (id > 0) of (target logit - mean item logit).
  """
  rows = jnp.arange(table.shape[0])
  is_item = ((rows >= 1) & (rows <= num_items)).astype(jnp.float32)
  mean_row = (is_item @ table.astype(jnp.float32)) / num_items      # [D]
  h = hidden.astype(jnp.float32)
  target_rows = jnp.take(table, targets, axis=0).astype(jnp.float32)
  gap = jnp.sum(h * (target_rows - mean_row), -1)
  return jnp.sum(jnp.where(targets > 0, gap, 0.0))


_NEG = -1e30  # a finite "minus infinity": no NaN in gradients of masked rows.


def _lse_over_table(h, table, first_id: int | jax.Array, num_items: int,
                    chunk_size: int):
  """log-sum-exp over the rows of `table` (ids first_id, first_id + 1, ...)
  that are items, for h [N, D]; in chunks of `chunk_size` rows (0: all at
  once; the last chunk may be shorter), each recomputed in the backward
  pass, so that memory holds one [N, chunk] block of logits, not [N, V]."""
  rows = table.shape[0]
  chunk = chunk_size if 0 < chunk_size < rows else rows

  @jax.checkpoint
  def block(lse, tab, offset):
    logits = (h @ tab.astype(h.dtype).T).astype(jnp.float32)
    ids = first_id + offset + jnp.arange(tab.shape[0])
    logits = jnp.where((ids >= 1) & (ids <= num_items), logits, _NEG)
    m = jax.lax.stop_gradient(jnp.maximum(lse, jnp.max(logits, -1)))
    return m + jnp.log(jnp.exp(lse - m) + jnp.sum(
        jnp.exp(logits - m[:, None]), -1))

  lse = jnp.full(h.shape[:1], _NEG, jnp.float32)
  full = rows // chunk
  if full == 1 and rows == chunk:
    return block(lse, table, 0)
  if full:
    def body(lse, start):
      tab = jax.lax.dynamic_slice_in_dim(table, start, chunk, 0)
      return block(lse, tab, start), None
    lse, _ = jax.lax.scan(body, lse, jnp.arange(0, full * chunk, chunk))
  if rows % chunk:
    lse = block(lse, table[full * chunk:], full * chunk)
  return lse


def softmax_ce(hidden, targets, table, num_items: int, *, mesh=None,
               chunk_size: int = 0):
  """Full-softmax cross-entropy without materialising [B, L, V] logits
  where it matters: with the table split over the mesh's `model` axis each
  shard scores only its own rows and the log-sum-exp is combined across
  shards (max, then sum of exponentials): no device ever holds logits for
  the whole catalog; with `chunk_size` the rows are also visited in chunks.
  Equals `full_softmax_ce` (tests check it).

  Returns:
    (sum of per-target losses, number of targets).
  """
  shards = 1 if mesh is None else mesh.shape.get('model', 1)
  b, l, d = hidden.shape
  # The target logit needs only the target's own row.
  pos = jnp.take(table, targets, axis=0).astype(hidden.dtype)
  target_logit = jnp.sum(hidden * pos, -1).astype(jnp.float32)
  if shards == 1:
    lse = _lse_over_table(hidden.reshape(b * l, d), table, 0, num_items,
                          chunk_size).reshape(b, l)
  else:
    rows = table.shape[0]
    if rows % shards:
      raise ValueError(f'{rows} table rows do not split over {shards} '
                       'model shards')
    local = rows // shards
    batch_axes = ('data', 'fsdp')

    @functools.partial(
        jax.shard_map, mesh=mesh,
        in_specs=(P(batch_axes), P('model', None)), out_specs=P(batch_axes),
        check_vma=False)
    def sharded_lse(h, tab):
      first = jax.lax.axis_index('model') * local
      hb, hl, hd = h.shape
      part = _lse_over_table(h.reshape(hb * hl, hd), tab, first, num_items,
                             chunk_size)
      m = jax.lax.pmax(jax.lax.stop_gradient(part), 'model')
      total = jax.lax.psum(jnp.exp(part - m), 'model')
      return (m + jnp.log(total)).reshape(hb, hl)

    lse = sharded_lse(hidden, table)
  loss = jnp.where(targets > 0, lse - target_logit, 0.0)
  return jnp.sum(loss), jnp.sum((targets > 0).astype(jnp.float32))


def sample_proposal(key, log_q, shape):
  """int32 draws from the distribution with log-probabilities `log_q` [V]
  (-inf rows are never drawn), by inverse CDF: O(log V) per draw, where
  `jax.random.categorical` would draw V Gumbel numbers for each."""
  cdf = jnp.cumsum(jnp.exp(log_q.astype(jnp.float32) - jnp.max(log_q)))
  u = jax.random.uniform(key, shape, jnp.float32) * cdf[-1]
  ids = jnp.searchsorted(cdf, u, side='right')
  return jnp.minimum(ids, log_q.shape[0] - 1).astype(jnp.int32)


def sampled_bce(hidden, targets, table, num_items: int, key,
                num_negatives: int = 1, log_q=None):
  """Binary cross-entropy with sampled negatives (SASRec, S3-Rec; CTR).

  Each target position scores its positive against `num_negatives` items
  drawn uniformly from 1..num_items, or from the proposal `log_q` ([V]
  log-probabilities, e.g. popularity); a draw equal to the positive is
  masked.
  """
  pos = jnp.take(table, targets, axis=0).astype(hidden.dtype)  # [B, L, D]
  if log_q is None:
    neg_ids = jax.random.randint(key, targets.shape + (num_negatives,), 1,
                                 num_items + 1)
  else:
    neg_ids = sample_proposal(key, log_q, targets.shape + (num_negatives,))
  neg = jnp.take(table, neg_ids, axis=0).astype(hidden.dtype)  # [B, L, N, D]
  pos_logit = jnp.sum(hidden * pos, -1).astype(jnp.float32)
  neg_logit = jnp.einsum('bld,blnd->bln', hidden, neg).astype(jnp.float32)
  weight = (targets > 0).astype(jnp.float32)
  neg_weight = weight[..., None] * (neg_ids != targets[..., None])
  loss = (-jax.nn.log_sigmoid(pos_logit) * weight
          + jnp.sum(-jax.nn.log_sigmoid(-neg_logit) * neg_weight, -1))
  return jnp.sum(jnp.where(targets > 0, loss, 0.0)), jnp.sum(weight)


def in_batch_negatives(key, targets, num_negatives: int):
  """int32 [N] negatives drawn (with replacement) from the targets of the
  whole batch, the global one under a mesh (so negatives cross devices).
  Batch targets follow item popularity: correct with its log Q."""
  flat = targets.reshape(-1)
  real = jnp.log((flat > 0).astype(jnp.float32))  # -inf on padding.
  where = sample_proposal(key, real, (num_negatives,))
  return jnp.take(flat, where)


def sampled_softmax(hidden, targets, table, num_items: int, key,
                    num_negatives: int, log_q=None, in_batch: bool = False):
  """Softmax over the positive and shared sampled negatives, logQ-corrected.

  N negatives are drawn from a proposal Q and shared by the whole batch (one
  [N, D] gather instead of a [B, L, V] matmul). Each negative's logit is
  reduced by log(N Q(item)), so that the sum of their exponentials is an
  unbiased estimate of the full partition function; the loss then tends to
  the full-softmax cross-entropy as N grows (Bengio & Senecal; Yi et al.,
  RecSys 2019). A negative equal to the positive is dropped. With
  `in_batch` the negatives are other targets of the (global) batch, whose
  proposal is popularity: pass its `log_q`.

  Args:
    hidden: [B, L, D]; targets: int [B, L] (0 = none); table: [V, D].
    num_items: catalog size. key: PRNG key. num_negatives: N.
    log_q: optional [V] float32 proposal log-probabilities (-inf for rows
      that are not items); None means uniform over 1..num_items.

  Returns:
    (sum of per-target losses, number of targets).
  """
  if in_batch:
    if log_q is None:
      raise ValueError('in-batch negatives need the popularity log_q')
    neg_ids = in_batch_negatives(key, targets, num_negatives)
    neg_log_q = jnp.take(log_q, neg_ids)
  elif log_q is None:
    neg_ids = jax.random.randint(key, (num_negatives,), 1, num_items + 1)
    neg_log_q = jnp.full((num_negatives,), -jnp.log(float(num_items)))
  else:
    neg_ids = sample_proposal(key, log_q, (num_negatives,))
    neg_log_q = jnp.take(log_q, neg_ids)
  neg = jnp.take(table, neg_ids, axis=0).astype(hidden.dtype)  # [N, D]
  pos = jnp.take(table, targets, axis=0).astype(hidden.dtype)  # [B, L, D]
  pos_logit = jnp.sum(hidden * pos, -1).astype(jnp.float32)
  neg_logit = jnp.einsum('bld,nd->bln', hidden, neg).astype(jnp.float32)
  neg_logit -= (neg_log_q + jnp.log(float(num_negatives)))[None, None]
  neg_logit = jnp.where(neg_ids[None, None] == targets[..., None], -jnp.inf,
                        neg_logit)
  logits = jnp.concatenate([pos_logit[..., None], neg_logit], -1)
  loss = jax.nn.logsumexp(logits, -1) - pos_logit
  weight = (targets > 0).astype(jnp.float32)
  return jnp.sum(jnp.where(targets > 0, loss, 0.0)), jnp.sum(weight)


def popularity_log_q(counts, num_items: int, vocab: int, smoothing=1.0):
  """[V] log-probabilities proportional to item counts (+ smoothing)."""
  q = np.zeros((vocab,), np.float64)
  q[1:num_items + 1] = np.asarray(counts[1:num_items + 1], np.float64) + smoothing
  q /= q.sum()
  with np.errstate(divide='ignore'):
    return np.log(q).astype(np.float32)


LOSSES = ('ce', 'bce', 'sampled_softmax')
SAMPLERS = ('uniform', 'popularity', 'in_batch')


def check_next_item(cfg) -> None:
  """Raises ValueError on a `finetune` section whose loss settings do not
  fit together (checked before any data are read)."""
  if cfg.loss not in LOSSES:
    raise ValueError(f'finetune.loss={cfg.loss!r}: expected one of {LOSSES}')
  if cfg.sampler not in SAMPLERS:
    raise ValueError(f'finetune.sampler={cfg.sampler!r}: expected uniform, '
                     'popularity or in_batch')
  if cfg.sampler == 'in_batch' and cfg.loss != 'sampled_softmax':
    raise ValueError('finetune.sampler=in_batch needs '
                     'finetune.loss=sampled_softmax')
  if cfg.label_smoothing and cfg.loss != 'ce':
    raise ValueError(f'finetune.label_smoothing={cfg.label_smoothing} needs '
                     f"finetune.loss='ce', not {cfg.loss!r}")


def next_item_loss(cfg, *, num_items: int, vocab: int, mesh=None,
                   target_counts=None) -> Callable:
  """The next-item loss of a `finetune` config section, as a pure function
  (hidden [B, L, D], targets [B, L], table [V, D], key) -> (sum, count).

  ce: the full-softmax cross-entropy; dense, or sharded over the mesh's
  `model` axis and / or chunked (finetune.ce_chunk_size) without holding
  [tokens, V] logits; plus label smoothing. bce / sampled_softmax draw
  `num_negatives` from `sampler`: uniform, or by popularity (the training
  targets' `target_counts` [num_items + 1]), or from the batch.
  """
  check_next_item(cfg)
  if cfg.loss == 'ce':
    sharded = mesh is not None and mesh.shape.get('model', 1) > 1
    if sharded or cfg.ce_chunk_size:
      ce = functools.partial(softmax_ce, mesh=mesh if sharded else None,
                             chunk_size=cfg.ce_chunk_size)
    else:
      ce = full_softmax_ce
    smoothing = float(cfg.label_smoothing)

    def ce_loss(hidden, targets, table, key):
      del key
      total, count = ce(hidden, targets, table, num_items)
      if smoothing:
        total += smoothing * smoothing_term(hidden, targets, table, num_items)
      return total, count
    return ce_loss
  log_q = None
  if cfg.sampler in ('popularity', 'in_batch'):
    if target_counts is None:
      raise ValueError(f'finetune.sampler={cfg.sampler!r} needs the '
                       'training targets\' counts')
    log_q = popularity_log_q(target_counts, num_items, vocab)
  negatives = int(cfg.num_negatives)
  if cfg.loss == 'bce':
    return lambda hidden, targets, table, key: sampled_bce(
        hidden, targets, table, num_items, key, negatives, log_q)
  in_batch = cfg.sampler == 'in_batch'
  return lambda hidden, targets, table, key: sampled_softmax(
      hidden, targets, table, num_items, key, negatives, log_q,
      in_batch=in_batch)
