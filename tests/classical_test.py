"""The classical co-occurrence baseline."""

import numpy as np

from rec_jax import classical


def test_items_with_shared_neighbours_get_similar_features():
  # 1 and 2 both sit next to 5; 3 and 4 next to 6.
  train = [np.array([1, 5]), np.array([2, 5]), np.array([3, 6]),
           np.array([4, 6])] * 5
  feats = classical.item_features(train, num_items=6, dim=4, window=1)
  assert feats.shape == (7, 4) and np.all(feats[0] == 0)
  norms = np.linalg.norm(feats[1:], axis=1)
  np.testing.assert_allclose(norms[norms > 0], 1, atol=1e-5)
  cos = feats @ feats.T
  assert cos[1, 2] > 0.9 and cos[3, 4] > 0.9 and abs(cos[1, 3]) < 0.1


def test_prefix_features_are_recency_weighted_means():
  feats = np.eye(4, dtype=np.float32)
  x, y = classical.prefix_features([np.array([1, 2, 3])], feats, decay=0.5)
  np.testing.assert_array_equal(y, [2, 3])
  np.testing.assert_allclose(x[0], [0, 1, 0, 0])
  np.testing.assert_allclose(x[1], np.array([0, 0.5, 1, 0]) / 1.5)


def test_linear_head_beats_chance_on_synthetic():
  res = classical.run('synthetic', dim=16, epochs=3, num_users=300,
                      num_items=100, num_clusters=5, min_len=5, max_len=20,
                      seed=0)
  assert res['test']['ndcg@10'] > 3 * 10 / 100 * 0.5  # chance ~0.04.
