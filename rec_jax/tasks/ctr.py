"""Click / purchase prediction (ctr).

Each user's held-out next item is a positive; negatives are items drawn in
proportion to their training popularity among items the user has not
interacted with (the temporal split holds: counts come from the training
part only). The model scores (user, item) pairs as user-vector .
item-embedding, trained with BCE against popularity-sampled negatives;
metrics are the pooled ROC AUC and the log loss, and a popularity baseline
(log count, Platt-calibrated on validation) is computed on the same pairs.
"""

import numpy as np

from rec_jax.tasks import next as next_item

JOINT = False
SERVED = False
# Seeds of the validation and test negatives.
_SEEDS = {'valid': 1, 'test': 2}


def overrides() -> dict:
  return {'finetune.task': 'ctr', 'finetune.loss': 'bce',
          'finetune.sampler': 'popularity', 'finetune.num_negatives': 4,
          'eval.metric': 'auc', 'eval.ctr_negatives': 4}


check = next_item.check
train_values = next_item.train_values
# The same loss as next-item ranking: BCE against popularity negatives.
loss = next_item.loss


def scores(evaluator, params, histories, targets, negatives):
  """AUC and log loss of targets (positives) against negatives."""
  cands = np.concatenate([np.asarray(targets, np.int32)[:, None],
                          np.asarray(negatives, np.int32)], axis=1)
  s = evaluator.candidate_scores(params, histories, cands)
  return metrics(s[:, 0], s[:, 1:])


def _negatives(config, ds, split, name: str):
  hist = getattr(split, f'{name}_history')
  target = getattr(split, f'{name}_target')
  counts = train_counts(split.train, ds.num_items)
  return hist, target, popularity_negatives(
      hist, target, counts, config.eval.ctr_negatives, seed=_SEEDS[name])


def validation(config, ds, split, evaluator):
  hist, target, negatives = _negatives(config, ds, split, 'valid')
  return lambda params: scores(evaluator, params, hist, target, negatives)


def results(config, ds, split, evaluator, params, out: dict) -> dict:
  """The task's own metrics lead; full ranking is kept beside them."""
  pairs = {}
  for name in ('valid', 'test'):
    hist, target, neg = _negatives(config, ds, split, name)
    pairs[name] = (target, neg)
    out[name + '_ranking'] = out[name]
    out[name] = scores(evaluator, params, hist, target, neg)
  out['baselines'] = {'popularity': popularity_baseline(
      train_counts(split.train, ds.num_items), pairs['valid'],
      pairs['test'])}
  out['protocol'] = dict(
      task='ctr', negatives_per_positive=config.eval.ctr_negatives,
      negatives='popularity, outside the history', split='leave-one-out')
  return out


def train_counts(train, num_items: int) -> np.ndarray:
  """Interactions per item id (index 0 unused) in the training part."""
  flat = np.concatenate([np.asarray(t, np.int64) for t in train]) if len(
      train) else np.zeros(0, np.int64)
  return np.bincount(flat, minlength=num_items + 1)[:num_items + 1]


def popularity_negatives(histories, targets, counts, k: int, seed: int):
  """int32 [N, k] negatives per user, drawn by popularity (+1 smoothing)
  without replacement among items outside the history and the target."""
  num_items = len(counts) - 1
  p = (np.asarray(counts[1:], np.float64) + 1.0)
  p /= p.sum()
  rng = np.random.default_rng([seed, 5])
  out = np.zeros((len(targets), k), np.int32)
  for u, (h, t) in enumerate(zip(histories, targets)):
    seen = set(np.asarray(h).tolist()) | {int(t)}
    got = []
    while len(got) < k:
      draw = rng.choice(num_items, size=2 * k, p=p) + 1
      for d in draw.tolist():
        if d not in seen:
          seen.add(d)
          got.append(d)
          if len(got) == k:
            break
    out[u] = got
  return out


def auc(pos, neg) -> float:
  """Pooled ROC AUC of positives [N] against negatives [N, K] (ties 1/2)."""
  scores = np.concatenate([np.ravel(pos), np.ravel(neg)])
  labels = np.concatenate([np.ones(np.size(pos)), np.zeros(np.size(neg))])
  order = np.argsort(scores, kind='mergesort')
  ranks = np.empty(len(scores))
  sorted_scores = scores[order]
  # Average ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True,
                               return_counts=True)
  avg = first + (counts - 1) / 2.0 + 1.0
  ranks[order] = np.repeat(avg, counts)
  n_pos, n_neg = labels.sum(), len(labels) - labels.sum()
  return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) /
               (n_pos * n_neg))


def logloss(pos_logits, neg_logits) -> float:
  """Mean binary cross-entropy of sigmoid(logit) over all pairs."""
  pos = np.ravel(pos_logits).astype(np.float64)
  neg = np.ravel(neg_logits).astype(np.float64)
  lp = np.logaddexp(0.0, -pos)   # -log sigmoid(x)
  ln = np.logaddexp(0.0, neg)    # -log (1 - sigmoid(x))
  return float((lp.sum() + ln.sum()) / (len(pos) + len(neg)))


def metrics(pos_logits, neg_logits) -> dict:
  return dict(auc=auc(pos_logits, neg_logits),
              logloss=logloss(pos_logits, neg_logits))


def platt(pos, neg, steps: int = 50):
  """(a, b) of sigmoid(a x + b) fitted by Newton's method on the pairs."""
  x = np.concatenate([np.ravel(pos), np.ravel(neg)]).astype(np.float64)
  y = np.concatenate([np.ones(np.size(pos)), np.zeros(np.size(neg))])
  w = np.zeros(2)
  feats = np.stack([x, np.ones_like(x)], 1)
  for _ in range(steps):
    p = 1.0 / (1.0 + np.exp(-(feats @ w)))
    grad = feats.T @ (p - y)
    hess = feats.T @ (feats * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
    w -= np.linalg.solve(hess, grad)
  return w


def popularity_baseline(counts, valid, test) -> dict:
  """AUC / log loss of log(1 + count), calibrated on validation pairs.

  Args:
    counts: training interactions per item.
    valid, test: (targets [N], negatives [N, K]) item ids.
  """
  score = lambda ids: np.log1p(np.asarray(counts)[np.asarray(ids)])
  a, b = platt(score(valid[0]), score(valid[1]))
  pos, neg = a * score(test[0]) + b, a * score(test[1]) + b
  return metrics(pos, neg)
