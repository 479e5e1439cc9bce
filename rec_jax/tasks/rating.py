"""Rating prediction (rating): the held-out item's rating, by MSE through a
rating head on the encoder (models.heads.RatingHead, which also reads the
user's own rating history); RMSE and MAE against the global, user and item
mean ratings of the training part. Needs a dataset with ratings (ml-100k).
"""

import functools

from flax import nnx
import jax.numpy as jnp
import numpy as np

JOINT = False
SERVED = False


def overrides() -> dict:
  return {'finetune.task': 'rating', 'model.rating_head': True,
          'eval.metric': 'rmse', 'eval.mode': 'min'}


def check(config) -> None:
  if not config.model.rating_head:
    raise ValueError('task=rating needs model.rating_head=true (set by '
                     'tasks.overrides("rating"))')


def train_values(ds):
  """Each user's training ratings, aligned with their training items."""
  return rating_split(ds)[0]


def mean_rating(ds) -> float:
  """The global mean of the training ratings (the rating head's offset)."""
  return float(np.concatenate(rating_split(ds)[0]).mean())


def loss(config, *, ds, vocab: int, mesh, target_counts):
  """(model, batch, k_drop, k_loss) -> (sum of squared errors, count)."""
  del config, vocab, mesh, target_counts
  mean = mean_rating(ds)

  def fn(model, batch, k_drop, k_loss):
    del k_loss
    hidden = model(batch['inputs'], batch['positions'], batch['segment_ids'],
                   key=k_drop)
    table = model.encoder.item_table()
    targets = batch['targets']
    pred = model.rating_head(hidden, targets, table, mean,
                             batch['history_sum'], batch['history_count'])
    w = (targets > 0).astype(jnp.float32)
    return jnp.sum(jnp.square(pred - batch['values']) * w), jnp.sum(w)
  return fn


def rating_step(params, batch, *, graphdef, mean: float):
  """Predicted ratings [E] of each user's target item. Jit-able."""
  model = nnx.merge(graphdef, params)
  return model.rating_head(batch['user'], batch['targets'],
                           model.encoder.item_table(), mean,
                           batch['history_sum'], batch['history_count'])


def predict(evaluator, step, params, histories, items, history_ratings):
  """Predicted ratings of `items` after `histories`, whose own ratings are
  `history_ratings` (the encoder's window of them, the newest max_len,
  feeds the user term of the rating head)."""
  window = [np.asarray(r, np.float32)[-evaluator.max_len:]
            for r in history_ratings]
  fields = dict(
      history_sum=np.array([w.sum() for w in window], np.float32),
      history_count=np.array([len(w) for w in window], np.float32))
  return evaluator.map_users(step, params, histories, items, fields=fields)


def validation(config, ds, split, evaluator):
  del config
  train_r, valid_r, _ = rating_split(ds)
  step = functools.partial(rating_step, mean=mean_rating(ds))
  return lambda params: rating_metrics(predict(
      evaluator, step, params, split.valid_history, split.valid_target,
      train_r), valid_r)


def results(config, ds, split, evaluator, params, out: dict) -> dict:
  del config
  train_r, valid_r, test_r = rating_split(ds)
  step = functools.partial(rating_step, mean=mean_rating(ds))
  out['valid_ranking'], out['test_ranking'] = out['valid'], out['test']
  out['valid'] = rating_metrics(predict(
      evaluator, step, params, split.valid_history, split.valid_target,
      train_r), valid_r)
  out['test'] = rating_metrics(predict(
      evaluator, step, params, split.test_history, split.test_target,
      history_ratings(train_r, valid_r)), test_r)
  out['baselines'] = rating_baselines(split.train, train_r,
                                      split.test_target, test_r)
  out['protocol'] = dict(task='rating', split='leave-one-out',
                         target='rating of the held-out item')
  return out


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
