"""CTR task: AUC / log loss against hand-computed values, negatives."""

import numpy as np
import pytest

from conftest import load_config
from rec_jax.tasks import ctr
from rec_jax.tasks import rating


def test_auc_counts_pairs_with_half_ties():
  pos = np.array([0.9, 0.4])
  neg = np.array([[0.1, 0.4], [0.5, 0.95]])
  # Pairs (pos > neg): 0.9 beats 0.1, 0.4, 0.5 (3) and loses to 0.95;
  # 0.4 beats 0.1, ties 0.4 (1/2), loses to 0.5 and 0.95: 4.5 of 8.
  assert ctr.auc(pos, neg) == pytest.approx(4.5 / 8)
  assert ctr.auc(np.array([2.0]), np.array([[1.0, 0.0]])) == 1.0


def test_logloss_is_mean_binary_cross_entropy():
  pos, neg = np.array([0.0, 2.0]), np.array([[-1.0], [3.0]])
  sig = lambda x: 1 / (1 + np.exp(-x))
  expect = -(np.log(sig(0.0)) + np.log(sig(2.0)) + np.log(1 - sig(-1.0)) +
             np.log(1 - sig(3.0))) / 4
  assert ctr.logloss(pos, neg) == pytest.approx(expect)


def test_popularity_negatives_avoid_history_and_follow_popularity():
  counts = np.array([0, 1000, 1, 1, 1, 1, 1, 1, 1, 1, 1])
  hist = [np.array([2, 3]), np.array([1])]
  neg = ctr.popularity_negatives(hist, np.array([4, 5]), counts, 3, seed=0)
  assert neg.shape == (2, 3)
  assert not set(neg[0]) & {2, 3, 4} and not set(neg[1]) & {1, 5}
  assert len(set(neg[0])) == 3
  many = ctr.popularity_negatives([np.array([2])] * 300, np.full(300, 3),
                                    counts, 1, seed=1)
  assert (many == 1).mean() > 0.9  # item 1 holds ~99% of the mass.


def test_popularity_baseline_is_calibrated_on_validation():
  rng = np.random.default_rng(0)
  counts = np.concatenate([[0], rng.integers(1, 100, 50)])
  top = np.argsort(-counts[1:])[:10] + 1
  valid = (rng.choice(top, 200), rng.integers(1, 51, (200, 4)))
  test = (rng.choice(top, 200), rng.integers(1, 51, (200, 4)))
  out = ctr.popularity_baseline(counts, valid, test)
  assert out['auc'] > 0.7
  assert out['logloss'] < np.log(2)  # better than a constant 1/2.


def test_ctr_config_and_unknown_tasks():
  config = load_config('recommended', 'smoke,task=ctr')
  assert config.finetune.loss == 'bce' and config.eval.metric == 'auc'
  assert config.finetune.sampler == 'popularity'
  config = load_config('recommended', 'task=rating')
  assert config.model.rating_head and config.eval.mode == 'min'
  with pytest.raises(ValueError, match="task='click'"):
    load_config('recommended', 'task=click')


def test_rating_baselines_by_hand():
  train_items = [np.array([1, 2]), np.array([2, 3])]
  train_r = [np.array([5.0, 3.0]), np.array([1.0, 4.0])]
  items, true = np.array([2, 4]), np.array([2.0, 4.0])
  out = rating.rating_baselines(train_items, train_r, items, true)
  # global mean 3.25; user means 4, 2.5; item 2 mean 2, item 4 unseen.
  rmse = lambda p: float(np.sqrt(np.mean((np.array(p) - true) ** 2)))
  assert out['global_mean']['rmse'] == pytest.approx(rmse([3.25, 3.25]))
  assert out['user_mean']['rmse'] == pytest.approx(rmse([4.0, 2.5]))
  assert out['item_mean']['rmse'] == pytest.approx(rmse([2.0, 3.25]))
  assert out['item_mean']['mae'] == pytest.approx((0 + 0.75) / 2)


def test_rating_head_user_term_by_hand():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from rec_jax.models import heads  # pylint: disable=g-import-not-at-top
  head = heads.RatingHead(4, 6, rngs=nnx.Rngs(0))
  table = jnp.zeros((6, 4))  # no interaction term: biases and user term.
  h = jnp.ones((2, 4))
  items = jnp.array([1, 2])
  # k = 5 at start: user mean (10 + 5 * 3) / (2 + 5) = 25 / 7.
  out = head(h, items, table, 3.0, jnp.array([10.0, 0.0]),
             jnp.array([2.0, 0.0]))
  assert np.allclose(out, [25 / 7, 3.0], atol=1e-5)
  assert np.allclose(head(h, items, table, 3.0), [3.0, 3.0])
  with pytest.raises(ValueError, match='history_ratings'):
    rating.history_ratings([np.ones(2)], np.ones(2))


def test_rating_values_follow_their_targets():
  from rec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from rec_jax.data import types  # pylint: disable=g-import-not-at-top
  seqs = [np.array([3, 4, 5, 6, 7]), np.array([8, 9, 10])]
  ratings = [np.array([1., 2., 3., 4., 5.]), np.array([2., 3., 4.])]
  seg = pipeline.make_segments(seqs, 3, shift=True, values=ratings)
  for t, v in zip(seg.targets, seg.values):
    owner = 0 if t <= 7 else 1
    assert v == ratings[owner][list(seqs[owner]).index(t)]
  batch = pipeline.TrainStream(seg, batch_size=2, max_len=3, seed=0).batch(
      0, 0)
  assert batch['values'].shape == (2, 3)
  # The user's rating history, causally: sum and count of the ratings of
  # the inputs up to and including each position, within its segment.
  full = pipeline.TrainStream(seg, batch_size=8, max_len=3, seed=0)
  seen = 0
  for b in (full.batch(0, i) for i in range(full.steps_in_epoch(0))):
    for row in range(len(b['inputs'])):
      for col in np.nonzero(b['segment_ids'][row])[0]:
        owner = 0 if b['inputs'][row, col] <= 7 else 1
        sid = b['segment_ids'][row, col]
        first = np.nonzero(b['segment_ids'][row] == sid)[0][0]
        items = list(seqs[owner])
        expect = [ratings[owner][items.index(x)]
                  for x in b['inputs'][row, first:col + 1]]
        assert b['history_sum'][row, col] == pytest.approx(sum(expect))
        assert b['history_count'][row, col] == len(expect)
        seen += 1
  assert seen == 6  # every input position of both users.
  ds = types.SequenceDataset(name='x', sequences=seqs, num_items=10)
  with pytest.raises(ValueError, match="dataset 'x' has no ratings"):
    rating.rating_split(ds)
  with pytest.raises(ValueError, match='2 values for 3 items'):
    pipeline.make_segments(seqs[1:], 3, shift=True, values=[np.ones(2)])


@pytest.mark.parametrize('task,keys', [('ctr', {'auc', 'logloss'}),
                                       ('rating', {'rmse', 'mae'})])
def test_task_end_to_end(task, keys, tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  proc = subprocess.run(
      [sys.executable, '-m', 'rec_jax.main',
       f'--config=configs/recommended.py:smoke,pretrain=false,task={task}',
       f'--workdir={tmp_path}', '--config.checkpoint.async_save=false'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads((tmp_path / 'results.json').read_text())
  assert set(r['valid']) == keys and set(r['test']) == keys
  assert 'ndcg@10' in r['test_ranking']
  assert r['baselines'] and all(set(v) == keys for v in r['baselines'].values())
  assert r['protocol']['task'] == task
  rows = [json.loads(l) for l in open(tmp_path / 'finetune' / 'metrics.jsonl')]
  assert any(f'eval/valid/{sorted(keys)[0]}' in row for row in rows)
