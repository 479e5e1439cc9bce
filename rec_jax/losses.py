"""Next-item losses over the tied item table. All return (sum, count) so that
callers normalise by the number of real targets across the whole batch."""

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax.models import sequence


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
  logits = sequence.mask_non_items(logits.astype(jnp.float32), num_items)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  weight = (targets > 0).astype(jnp.float32)
  # Padding targets (id 0) have a -inf logit: select, never multiply by 0.
  loss = jnp.where(targets > 0, lse - target_logit, 0.0)
  return jnp.sum(loss), jnp.sum(weight)


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


def sampled_softmax(hidden, targets, table, num_items: int, key,
                    num_negatives: int, log_q=None):
  """Softmax over the positive and shared sampled negatives, logQ-corrected.

  N negatives are drawn from a proposal Q and shared by the whole batch (one
  [N, D] gather instead of a [B, L, V] matmul). Each negative's logit is
  reduced by log(N Q(item)), so that the sum of their exponentials is an
  unbiased estimate of the full partition function; the loss then tends to
  the full-softmax cross-entropy as N grows (Bengio & Senecal; Yi et al.,
  RecSys 2019). A negative equal to the positive is dropped.

  Args:
    hidden: [B, L, D]; targets: int [B, L] (0 = none); table: [V, D].
    num_items: catalog size. key: PRNG key. num_negatives: N.
    log_q: optional [V] float32 proposal log-probabilities (-inf for rows
      that are not items); None means uniform over 1..num_items.

  Returns:
    (sum of per-target losses, number of targets).
  """
  if log_q is None:
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
