r"""A classical feature baseline: what learned encoders add.

Item features are a truncated SVD of the TF-IDF-weighted item-item
co-occurrence matrix of the training sequences (items co-occurring within
`window` steps); a user is the recency-weighted mean of the features of
their history; a linear head (user W . item + item bias) is trained with
full-softmax cross-entropy on every training prefix and evaluated like
every rec_jax model (full ranking, history excluded, leave-one-out).

  python -m rec_jax.classical --dataset=beauty --out=/tmp/classical.json
"""

import json
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse
import scipy.sparse.linalg

from rec_jax import metrics
from rec_jax.data import datasets
from rec_jax.data import pipeline


def item_features(train, num_items: int, dim: int, window: int = 3):
  """float32 [num_items + 1, dim] (row 0 zero): SVD of TF-IDF
  co-occurrence counts, rows scaled to unit norm."""
  rows, cols = [], []
  for seq in train:
    seq = np.asarray(seq, np.int64)
    for d in range(1, window + 1):
      rows += [seq[:-d], seq[d:]]
      cols += [seq[d:], seq[:-d]]
  r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
  c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
  n = num_items + 1
  m = scipy.sparse.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n)).tocsr()
  m.sum_duplicates()
  df = np.bincount(m.indices, minlength=n)  # items co-occurring with each.
  idf = np.log((n + 1) / (df + 1)) + 1.0
  m = m.multiply(idf[None, :]).tocsr()
  m.data = np.log1p(m.data)
  k = min(dim, n - 2)  # svds needs k < min(shape).
  u, s, _ = scipy.sparse.linalg.svds(m.astype(np.float64), k=k,
                                     random_state=0)
  feats = u * np.sqrt(s)[None]
  feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-9)
  feats[0] = 0.0
  out = np.zeros((n, dim), np.float32)
  out[:, :k] = feats
  return out


def prefix_features(seqs, feats, decay: float = 0.8):
  """For every position of every sequence, the recency-weighted mean of
  the item features up to it. Returns (X [T, dim], next item [T]) of the
  training pairs (each prefix and the item after it)."""
  xs, ys = [], []
  for seq in seqs:
    acc = np.zeros(feats.shape[1], np.float64)
    w = 0.0
    for t in range(len(seq) - 1):
      acc = decay * acc + feats[seq[t]]
      w = decay * w + 1.0
      xs.append(acc / w)
      ys.append(seq[t + 1])
  return np.asarray(xs, np.float32), np.asarray(ys, np.int32)


def user_features(histories, feats, decay: float = 0.8):
  out = np.zeros((len(histories), feats.shape[1]), np.float32)
  for i, h in enumerate(histories):
    acc = np.zeros(feats.shape[1], np.float64)
    w = 0.0
    for item in h:
      acc = decay * acc + feats[item]
      w = decay * w + 1.0
    out[i] = acc / max(w, 1e-9)
  return out


def fit_linear_head(x, y, feats, *, epochs: int = 5, batch: int = 1024,
                    lr: float = 3e-3, seed: int = 0):
  """(W [d, d], item bias [V]) trained with full-softmax CE."""
  d, v = feats.shape[1], feats.shape[0]
  params = dict(w=jnp.eye(d, dtype=jnp.float32) * 5.0,
                b=jnp.zeros((v,), jnp.float32))
  table = jnp.asarray(feats)
  tx = optax.adam(lr)
  opt = tx.init(params)
  valid = jnp.arange(v) > 0

  @jax.jit
  def step(params, opt, xb, yb):
    def loss_fn(p):
      logits = (xb @ p['w']) @ table.T + p['b']
      logits = jnp.where(valid[None], logits, -jnp.inf)
      return jnp.mean(jax.nn.logsumexp(logits, -1) -
                      jnp.take_along_axis(logits, yb[:, None], -1)[:, 0])
    loss, g = jax.value_and_grad(loss_fn)(params)
    upd, opt = tx.update(g, opt)
    return optax.apply_updates(params, upd), opt, loss

  rng = np.random.default_rng(seed)
  loss = None
  for _ in range(epochs):
    order = rng.permutation(len(y))
    for i in range(0, len(y) - batch + 1, batch):
      idx = order[i:i + batch]
      params, opt, loss = step(params, opt, x[idx], y[idx])
  return jax.device_get(params), float(loss) if loss is not None else None


def evaluate(params, feats, histories, targets, batch: int = 512):
  """Full-ranking metrics with each user's history excluded."""
  table = jnp.asarray(feats)
  width = pipeline.history_width(histories)

  @jax.jit
  def ranks_fn(xb, tb, hist):
    scores = (xb @ params['w']) @ table.T + params['b']
    ids = jnp.arange(scores.shape[1])
    scores = jnp.where(ids[None] > 0, scores, -jnp.inf)
    return metrics.target_rank(metrics.exclude(scores, hist, tb), tb)

  users = user_features(histories, feats)
  out = []
  for i in range(0, len(targets), batch):
    hist = pipeline.pad_histories(histories[i:i + batch], width)
    xb, tb = users[i:i + batch], np.asarray(targets[i:i + batch], np.int32)
    n = len(tb)
    pad = batch - n
    out.append(np.asarray(ranks_fn(np.pad(xb, ((0, pad), (0, 0))),
                                   np.pad(tb, (0, pad)),
                                   np.pad(hist, ((0, pad), (0, 0)))))[:n])
  ranks = np.concatenate(out)
  return metrics.mean(metrics.from_ranks(ranks, xp=np))


def run(dataset: str, *, dim: int = 64, epochs: int = 5, data_dir=None,
        cache_dir=None, **synthetic) -> dict:
  ds = datasets.load(dataset, data_dir=data_dir, cache_dir=cache_dir,
                     **synthetic)
  split = pipeline.leave_one_out(ds)
  t = time.perf_counter()
  feats = item_features(split.train, ds.num_items, dim)
  x, y = prefix_features(split.train, feats)
  params, loss = fit_linear_head(x, y, feats, epochs=epochs)
  seconds = time.perf_counter() - t
  return dict(dataset=ds.name, model='cooccurrence-tfidf-svd + linear head',
              dim=dim, train_loss=loss, train_seconds=seconds,
              valid=evaluate(params, feats, split.valid_history,
                             split.valid_target),
              test=evaluate(params, feats, split.test_history,
                            split.test_target))


def main(argv):
  del argv
  f = flags.FLAGS
  res = run(f.dataset, dim=f.dim, epochs=f.epochs)
  text = json.dumps(res, indent=2)
  if f.out:
    os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
    with open(f.out, 'w', encoding='utf-8') as fh:
      fh.write(text)
  print(text)


if __name__ == '__main__':
  flags.DEFINE_string('dataset', 'synthetic', 'Dataset name.')
  flags.DEFINE_integer('dim', 64, 'Feature dimension.')
  flags.DEFINE_integer('epochs', 5, 'Linear-head epochs.')
  flags.DEFINE_string('out', '', 'Where to write the results JSON.')
  app.run(main)
