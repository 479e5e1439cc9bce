"""Ranking metrics against hand-computed values; sharded top-k."""

import math

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rec_jax import metrics
from rec_jax import sharding
from rec_jax import config_lib


def test_from_ranks_hand_values():
  # Ranks 0, 3, 7, 15 and 30 (0-based).
  m = metrics.from_ranks(np.array([0, 3, 7, 15, 30]), xp=np)
  np.testing.assert_allclose(m['hr@5'], [1, 1, 0, 0, 0])
  np.testing.assert_allclose(m['hr@10'], [1, 1, 1, 0, 0])
  np.testing.assert_allclose(m['hr@20'], [1, 1, 1, 1, 0])
  np.testing.assert_allclose(m['ndcg@5'], [1, 1 / math.log2(5), 0, 0, 0])
  np.testing.assert_allclose(
      m['ndcg@20'], [1, 1 / math.log2(5), 1 / math.log2(9), 1 / math.log2(17),
                     0], rtol=1e-6)
  np.testing.assert_allclose(m['mrr'], [1, 1 / 4, 1 / 8, 1 / 16, 1 / 31],
                             rtol=1e-6)
  mean = metrics.mean(m)
  assert mean['hr@10'] == pytest.approx(3 / 5)
  assert mean['ndcg@10'] == pytest.approx(
      (1 + 1 / math.log2(5) + 1 / math.log2(9)) / 5, rel=1e-6)


def test_target_rank_is_pessimistic_on_ties():
  scores = jnp.array([[0.0, 1.0, 2.0, 3.0],
                      [0.0, 5.0, 5.0, 5.0],   # a three-way tie
                      [0.0, 1.0, 1.0, 1.0]])
  ranks = metrics.target_rank(scores, jnp.array([2, 1, 3]))
  np.testing.assert_array_equal(ranks, [1, 2, 2])


def test_exclude_history_keeps_target_and_drops_history():
  scores = jnp.arange(8, dtype=jnp.float32)[None].repeat(2, 0)
  # User 0 saw items 7 and 6; user 1 saw 7 and its own target 5.
  hist = jnp.array([[7, 6, 0], [7, 5, 0]])
  out = metrics.exclude(scores, hist, jnp.array([3, 5]))
  assert np.isneginf(out[0, 7]) and np.isneginf(out[0, 6])
  assert out[0, 0] == 0.0  # padding id 0 in the history is not excluded.
  assert out[1, 5] == 5.0  # the target is never excluded.
  ranks = metrics.target_rank(out, jnp.array([3, 5]))
  # User 0: items 4, 5 outrank 3 once 6, 7 are gone; user 1: only 6 does.
  np.testing.assert_array_equal(ranks, [2, 1])


def test_sharded_top_k_equals_unsharded():
  mesh = sharding.make_mesh(config_lib.mesh_config(data=4, model=2))
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(8, 256)).astype(np.float32)
  x = jax.device_put(scores, NamedSharding(mesh, P(('data', 'fsdp'),
                                                   'model')))
  v, i = jax.jit(lambda s: metrics.top_k(s, 20, mesh))(x)
  v0, i0 = jax.lax.top_k(jnp.asarray(scores), 20)
  np.testing.assert_array_equal(np.asarray(i), np.asarray(i0))
  np.testing.assert_allclose(np.asarray(v), np.asarray(v0))
