"""Downstream tasks besides next-item ranking.

ctr: binary click / purchase prediction. Each user's held-out next item is
  a positive; negatives are items drawn in proportion to their training
  popularity among items the user has not interacted with (the temporal
  split holds: counts come from the training part only). The model scores
  (user, item) pairs as user-vector . item-embedding, trained with BCE
  against popularity-sampled negatives; metrics are the pooled ROC AUC and
  the log loss, and a popularity baseline (log count, Platt-calibrated on
  validation) is computed on the same pairs.
"""

import numpy as np

TASKS = ('next', 'ctr', 'rating')


def configure(config, task: str):
  """Sets the finetune / eval fields for `task` (call inside a config)."""
  if task not in TASKS:
    raise ValueError(f'task={task!r}: expected one of {TASKS}')
  config.finetune.task = task
  if task == 'ctr':
    config.finetune.update(loss='bce', sampler='popularity', num_negatives=4)
    config.eval.metric = 'auc'
    config.eval.ctr_negatives = 4
  if task == 'rating':
    config.model.rating_head = True
    config.eval.metric = 'rmse'
    config.eval.mode = 'min'
  return config


def rating_split(ds):
  """Ratings aligned with the leave-one-out split: (train ratings per
  user, valid ratings [N], test ratings [N]).

  Raises:
    ValueError: when the dataset carries no ratings.
  """
  if ds.ratings is None:
    raise ValueError(f'task=rating: dataset {ds.name!r} has no ratings '
                     '(ml-100k has them; the offline ml-1m copy does not).')
  r = [np.asarray(x, np.float32) for x in ds.ratings]
  return ([x[:-2] for x in r], np.array([x[-2] for x in r], np.float32),
          np.array([x[-1] for x in r], np.float32))


def history_ratings(train_ratings, valid_ratings) -> list[np.ndarray]:
  """The ratings of each test history: training ratings, then validation."""
  if len(train_ratings) != len(valid_ratings):
    raise ValueError(f'history_ratings: {len(train_ratings)} users of '
                     f'training ratings, {len(valid_ratings)} validation')
  return [np.append(np.asarray(t, np.float32), np.float32(v))
          for t, v in zip(train_ratings, valid_ratings)]


def rating_metrics(pred, true) -> dict:
  err = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
  return dict(rmse=float(np.sqrt(np.mean(err ** 2))),
              mae=float(np.mean(np.abs(err))))


def rating_baselines(train_items, train_ratings, items, true) -> dict:
  """Global, user and item means of the training ratings, scored on
  (items [N], true ratings [N]) of users 0..N-1 (unseen items / users fall
  back to the global mean)."""
  flat_i = np.concatenate([np.asarray(t) for t in train_items])
  flat_r = np.concatenate(train_ratings).astype(np.float64)
  mu = float(flat_r.mean())
  sums = np.bincount(flat_i, weights=flat_r, minlength=int(
      max(flat_i.max(), np.max(items))) + 1)
  cnt = np.bincount(flat_i, minlength=len(sums))
  item_mean = np.where(cnt > 0, sums / np.maximum(cnt, 1), mu)
  user_mean = np.array([r.mean() if len(r) else mu for r in train_ratings])
  items = np.asarray(items)
  return {'global_mean': rating_metrics(np.full(len(true), mu), true),
          'user_mean': rating_metrics(user_mean, true),
          'item_mean': rating_metrics(item_mean[items], true)}


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
