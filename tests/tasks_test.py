"""CTR task: AUC / log loss against hand-computed values, negatives."""

import numpy as np
import pytest

from conftest import load_config
from rec_jax import tasks


def test_auc_counts_pairs_with_half_ties():
  pos = np.array([0.9, 0.4])
  neg = np.array([[0.1, 0.4], [0.5, 0.95]])
  # Pairs (pos > neg): 0.9 beats 0.1, 0.4, 0.5 (3) and loses to 0.95;
  # 0.4 beats 0.1, ties 0.4 (1/2), loses to 0.5 and 0.95: 4.5 of 8.
  assert tasks.auc(pos, neg) == pytest.approx(4.5 / 8)
  assert tasks.auc(np.array([2.0]), np.array([[1.0, 0.0]])) == 1.0


def test_logloss_is_mean_binary_cross_entropy():
  pos, neg = np.array([0.0, 2.0]), np.array([[-1.0], [3.0]])
  sig = lambda x: 1 / (1 + np.exp(-x))
  expect = -(np.log(sig(0.0)) + np.log(sig(2.0)) + np.log(1 - sig(-1.0)) +
             np.log(1 - sig(3.0))) / 4
  assert tasks.logloss(pos, neg) == pytest.approx(expect)


def test_popularity_negatives_avoid_history_and_follow_popularity():
  counts = np.array([0, 1000, 1, 1, 1, 1, 1, 1, 1, 1, 1])
  hist = [np.array([2, 3]), np.array([1])]
  neg = tasks.popularity_negatives(hist, np.array([4, 5]), counts, 3, seed=0)
  assert neg.shape == (2, 3)
  assert not set(neg[0]) & {2, 3, 4} and not set(neg[1]) & {1, 5}
  assert len(set(neg[0])) == 3
  many = tasks.popularity_negatives([np.array([2])] * 300, np.full(300, 3),
                                    counts, 1, seed=1)
  assert (many == 1).mean() > 0.9  # item 1 holds ~99% of the mass.


def test_popularity_baseline_is_calibrated_on_validation():
  rng = np.random.default_rng(0)
  counts = np.concatenate([[0], rng.integers(1, 100, 50)])
  top = np.argsort(-counts[1:])[:10] + 1
  valid = (rng.choice(top, 200), rng.integers(1, 51, (200, 4)))
  test = (rng.choice(top, 200), rng.integers(1, 51, (200, 4)))
  out = tasks.popularity_baseline(counts, valid, test)
  assert out['auc'] > 0.7
  assert out['logloss'] < np.log(2)  # better than a constant 1/2.


def test_ctr_config_and_unknown_tasks():
  config = load_config('recommended', 'smoke,task=ctr')
  assert config.finetune.loss == 'bce' and config.eval.metric == 'auc'
  assert config.finetune.sampler == 'popularity'
  with pytest.raises(ValueError, match="task='rating'"):
    load_config('recommended', 'task=rating')
