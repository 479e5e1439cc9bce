"""Next-item losses over the tied item table. All return (sum, count) so that
callers normalise by the number of real targets across the whole batch.

`next_item_loss(cfg, ...)` picks one of them from a fine-tune config, once,
outside any traced function: the train step only calls what it returns.
"""

import contextlib
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np



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
  return softmax_ce(hidden, targets, table, num_items)


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


_NEG = -1e30  # a finite "minus infinity": no NaN from rows that are no item.


def softmax_ce(hidden, targets, table, num_items: int, *, mesh=None,
               chunk_size: int = 0):
  """The exact full-softmax cross-entropy of every target against the
  whole catalog, at the cost of its matmuls.

  Only real item rows are scored (ids 1..num_items: no mask over padded
  rows), each target's logit is a row gather, and the backward pass is its
  own (jax.custom_vjp): softmax times the targets' weights against the
  item rows, minus the targets' rows, scattered back per target, never a
  dense [tokens, V] one-hot. Three paths, equal to each other:

  * dense (no mesh, no chunk): the tokens in blocks of at most
    _BLOCK_BYTES of [tokens, items] logits; under differentiation each
    block's gradients are computed while its logits are at hand (the loss
    is a sum: its gradients are the cotangent times them), so the logits
    are made once and never kept for a backward pass.
  * chunked (`chunk_size`): the item rows `chunk_size` at a time with an
    online log-sum-exp; the backward pass recomputes each chunk, so memory
    holds one [tokens, chunk] block, not [tokens, V].
  * sharded (mesh with `model` > 1): each shard scores only its own rows
    of the table (chunked too when asked), the log-sum-exp is combined
    across shards; no device ever holds logits for the whole catalog.

  Returns:
    (sum of per-target losses, number of targets).
  """
  b, l, d = hidden.shape
  shards = 1 if mesh is None else mesh.shape.get('model', 1)
  if shards > 1 and table.shape[0] % shards:
    raise ValueError(f'{table.shape[0]} table rows do not split over '
                     f'{shards} model shards')
  total = _ce_sum(hidden.reshape(b * l, d), targets.reshape(b * l), table,
                  _CeShape(num_items, chunk_size, mesh if shards > 1 else None))
  return total, jnp.sum((targets > 0).astype(jnp.float32))


class _CeShape(tuple):
  """(num_items, chunk_size, mesh or None): the static part of a CE."""

  def __new__(cls, num_items, chunk_size, mesh):
    return super().__new__(cls, (int(num_items), int(chunk_size), mesh))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _ce_sum(h, targets, table, shape):
  num_items, chunk, mesh = shape
  if mesh is None and not chunk:
    lse, _, _ = _dense_blocks(h, targets, table, num_items, grads=False)
    return _target_sum(lse, h, targets, table)
  return _target_sum(_lse(h, table, shape), h, targets, table)


def _target_sum(lse, h, targets, table):
  """sum over targets of lse - the target's logit (a row gather)."""
  tl = jnp.sum(h.astype(jnp.float32) * jnp.take(table, targets, axis=0)
               .astype(jnp.float32), -1)
  return jnp.sum(jnp.where(targets > 0, lse - tl, 0.0))


def _ce_fwd(h, targets, table, shape):
  num_items, chunk, mesh = shape
  if mesh is None and not chunk:
    # The loss is a sum, so its gradients are its cotangent times fixed
    # arrays: computed here, block by block, while each block's logits
    # are at hand; the backward pass only scales them.
    lse, dh, d_rows = _dense_blocks(h, targets, table, num_items, grads=True)
    dh, dtable = _with_targets(
        dh, _to_table(d_rows, table, num_items), h, targets, table,
        (targets > 0).astype(jnp.float32))
    return _target_sum(lse, h, targets, table), (None, dh, dtable)
  lse = _lse(h, table, shape)
  return _target_sum(lse, h, targets, table), ((h, targets, table, lse),
                                               None, None)


def _ce_bwd(shape, res, g):
  saved, dh, dtable = res
  if saved is None:
    return ((dh * g).astype(dh.dtype), None,
            (dtable * g).astype(dtable.dtype))
  h, targets, table, lse = saved
  w = (targets > 0).astype(jnp.float32) * g           # [N] target weights.
  dh, dtable = _with_targets(*_softmax_grads(h, table, lse, w, shape), h,
                             targets, table, w)
  return dh.astype(h.dtype), None, dtable.astype(table.dtype)


def _with_targets(dh, dtable, h, targets, table, w):
  """The softmax part's gradients minus each target's own term: its row
  against dh, h scattered onto its row of the table (per target, no dense
  one-hot)."""
  dh = dh - w[:, None] * jnp.take(table, targets, axis=0).astype(jnp.float32)
  dtable = dtable.at[targets].add(-w[:, None] * h.astype(jnp.float32))
  return dh.astype(h.dtype), dtable.astype(table.dtype)


_ce_sum.defvjp(_ce_fwd, _ce_bwd)


# The dense path scores tokens in blocks of at most this many bytes of
# logits. On Beauty's 16 x 50 tokens against 12,101 items one block would be
# 39 MB: past the CPU's 32 MB L3 and past glibc's largest mmap threshold, so
# that XLA's temporaries for it were fresh pages some steps (~7,000 faults a
# step in such processes, measured). Blocks of <= 16 MB made the Beauty step
# 1.06-1.23x faster than one block (benchmarks/results/ce_speed.md); 4 MB
# blocks were slower (52 vs 43 ms a step, more, smaller matmuls).
_BLOCK_BYTES = 16 << 20


@contextlib.contextmanager
def block_budget(nbytes: int):
  """Traces the dense CE with blocks of at most `nbytes` of logits inside
  the block (benchmarks: 1 << 62 gives the single block, whose FLOPs XLA
  counts whole; it counts a while loop's body once)."""
  global _BLOCK_BYTES
  if type(nbytes) is not int or nbytes < 1:  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f'block_budget(nbytes={nbytes!r}): a positive number '
                     'of bytes')
  real, _BLOCK_BYTES = _BLOCK_BYTES, nbytes
  try:
    yield
  finally:
    _BLOCK_BYTES = real


def _token_blocks(n: int, rows: int) -> int:
  """How many blocks the dense path splits n tokens into: the fewest that
  keep a block's [tokens, rows] float32 logits within _BLOCK_BYTES, raised
  to a divisor of n when one is near (then no padding), else n is padded."""
  k = max(1, -(-(n * rows * 4) // _BLOCK_BYTES))
  for j in range(k, min(2 * k, n) + 1):
    if n % j == 0:
      return j
  return k


def _dense_blocks(h, targets, table, num_items: int, grads: bool):
  """(lse [N], the softmax part's dh [N, D] and d item rows
  [num_items, D] for unit target weights, both None without `grads`) over
  the item rows, tokens
  a block at a time (_BLOCK_BYTES). Block i holds tokens i, i + k, ...:
  strided, so that tokens split over the data axes stay on their device.
  """
  rows = _item_rows(table, num_items)
  n, d = h.shape
  k = _token_blocks(n, rows.shape[0])
  w = (targets > 0).astype(jnp.float32)
  pad = -n % k
  hb = jnp.pad(h, ((0, pad), (0, 0))).reshape(-1, k, d).swapaxes(0, 1)
  wb = jnp.pad(w, (0, pad)).reshape(-1, k).swapaxes(0, 1)

  def block(d_rows, xs):
    hk, wk = xs
    logits = _logits(hk, rows)
    m = jnp.max(logits, -1, keepdims=True)
    ex = jnp.exp(logits - m)
    s = jnp.sum(ex, -1)
    lse = m[:, 0] + jnp.log(s)
    if not grads:
      return d_rows, (lse,)
    p = (ex * (wk / s)[:, None]).astype(h.dtype)
    return (d_rows + _mm(p.T, hk),
            (lse, _mm(p, rows.astype(h.dtype))))

  init = jnp.zeros(rows.shape, jnp.float32) if grads else None
  if k == 1:
    d_rows, out = block(init, (hb[0], wb[0]))
    out = tuple(o[None] for o in out)
  else:
    d_rows, out = jax.lax.scan(block, init, (hb, wb))
  # [k, N / k, ...] back to token order, padding dropped.
  out = [o.swapaxes(0, 1).reshape(-1, *o.shape[2:])[:n] for o in out]
  if not grads:
    return out[0], None, None
  return out[0], out[1], d_rows


def _to_table(d_rows, table, num_items: int):
  """Gradients of the item rows (ids 1..num_items) laid out as the whole
  table's, zero on the rows that are no item."""
  return jnp.pad(d_rows, ((1, table.shape[0] - 1 - num_items), (0, 0)))


def _mm(a, b):
  return jnp.dot(a, b, preferred_element_type=jnp.float32)


def _logits(h, rows):
  """float32 [N, R] scores of `rows` [R, D] for h [N, D]."""
  return _mm(h, rows.astype(h.dtype).T)


def _item_rows(table, num_items: int):
  """The rows of the table that are items (ids 1..num_items)."""
  return jax.lax.slice_in_dim(table, 1, num_items + 1, axis=0)


def _chunks(rows: int, chunk: int):
  """(number of full chunks, their size, size of the remainder) of `rows`
  visited `chunk` at a time (0: all at once)."""
  size = chunk if 0 < chunk < rows else rows
  return rows // size, size, rows % size


def _bias(first, size: int, num_items: int):
  """[size] 0 for the ids first.. that are items, _NEG for the others (a
  shard's padding or [MASK] rows)."""
  ids = first + jnp.arange(size)
  return jnp.where((ids >= 1) & (ids <= num_items), 0.0, _NEG)


def _block_lse(h, rows, first, num_items: int, chunk: int, masked: bool):
  """log-sum-exp [N] over `rows` (ids first, first + 1, ...), `chunk`
  rows at a time (online), rows that are no item left out when `masked`."""
  n_full, size, rest = _chunks(rows.shape[0], chunk)

  def block(carry, tab, offset):
    m, s = carry
    logits = _logits(h, tab)
    if masked:
      logits = logits + _bias(first + offset, tab.shape[0], num_items)
    m_new = jnp.maximum(m, jnp.max(logits, -1))
    return m_new, s * jnp.exp(m - m_new) + jnp.sum(
        jnp.exp(logits - m_new[:, None]), -1)

  carry = (jnp.full(h.shape[:1], _NEG, jnp.float32),
           jnp.zeros(h.shape[:1], jnp.float32))
  if n_full == 1 and not rest:
    carry = block(carry, rows, 0)
  elif n_full:
    carry, _ = jax.lax.scan(
        lambda c, start: (block(c, jax.lax.dynamic_slice_in_dim(
            rows, start, size, 0), start), None),
        carry, jnp.arange(0, n_full * size, size))
  if rest:
    carry = block(carry, rows[n_full * size:], n_full * size)
  return carry


def _block_grads(h, rows, first, lse, w, num_items: int, chunk: int,
                 masked: bool):
  """(dh [N, D], d rows [R, D]) of the softmax part of the CE over `rows`:
  p = exp(logits - lse) * w, dh = p rows, d rows = p^T h, chunk by chunk."""
  n_full, size, rest = _chunks(rows.shape[0], chunk)

  def block(dh, tab, offset):
    logits = _logits(h, tab)
    if masked:
      logits = logits + _bias(first + offset, tab.shape[0], num_items)
    p = (jnp.exp(logits - lse[:, None]) * w[:, None]).astype(h.dtype)
    return dh + _mm(p, tab.astype(h.dtype)), _mm(p.T, h)

  dh = jnp.zeros(h.shape, jnp.float32)
  parts = []
  if n_full == 1 and not rest:
    dh, d = block(dh, rows, 0)
    parts.append(d)
  elif n_full:
    dh, d = jax.lax.scan(
        lambda acc, start: block(acc, jax.lax.dynamic_slice_in_dim(
            rows, start, size, 0), start),
        dh, jnp.arange(0, n_full * size, size))
    parts.append(d.reshape(n_full * size, -1))
  if rest:
    dh, d = block(dh, rows[n_full * size:], n_full * size)
    parts.append(d)
  return dh, jnp.concatenate(parts) if len(parts) > 1 else parts[0]


_BATCH = ('data', 'fsdp')


def _lse(h, table, shape):
  """log-sum-exp [N] of every target's logits over the items: over the
  item rows in chunks on one shard, or per `model` shard and combined."""
  num_items, chunk, mesh = shape
  if mesh is None:
    m, s = _block_lse(h, _item_rows(table, num_items), 1, num_items, chunk,
                      masked=False)
    return m + jnp.log(s)
  local = table.shape[0] // mesh.shape['model']

  @functools.partial(jax.shard_map, mesh=mesh,
                     in_specs=(P(_BATCH), P('model', None)),
                     out_specs=P(_BATCH), check_vma=False)
  def sharded(h, tab):
    first = jax.lax.axis_index('model') * local
    m, s = _block_lse(h, tab, first, num_items, chunk, masked=True)
    top = jax.lax.pmax(m, 'model')
    return top + jnp.log(jax.lax.psum(s * jnp.exp(m - top), 'model'))
  return sharded(h, table)


def _softmax_grads(h, table, lse, w, shape):
  """(dh, dtable) of the softmax part of the CE (see _block_grads)."""
  num_items, chunk, mesh = shape
  if mesh is None:
    dh, d_rows = _block_grads(h, _item_rows(table, num_items), 1, lse, w,
                              num_items, chunk, masked=False)
    return dh, _to_table(d_rows, table, num_items)
  local = table.shape[0] // mesh.shape['model']

  @functools.partial(jax.shard_map, mesh=mesh,
                     in_specs=(P(_BATCH), P('model', None), P(_BATCH),
                               P(_BATCH)),
                     out_specs=(P(_BATCH), P('model', None)), check_vma=False)
  def sharded(h, tab, lse, w):
    first = jax.lax.axis_index('model') * local
    dh, d_tab = _block_grads(h, tab, first, lse, w, num_items, chunk,
                             masked=True)
    # The batch is split over the data axes and the rows over `model`: a
    # shard's rows gather its batch's gradient from every data shard, a
    # token's gradient from every row shard.
    return jax.lax.psum(dh, 'model'), jax.lax.psum(d_tab, _BATCH)
  return sharded(h, table, lse, w)


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
