"""Augmentations: exact counts, invariants and sampling statistics."""

import collections

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rec_jax.data import augment

W = 12


def row(n, offset=10):
  x = np.zeros(W, np.int32)
  x[W - n:] = np.arange(offset, offset + n)
  return jnp.asarray(x), jnp.int32(n)


def keys(n, seed=0):
  return jax.random.split(jax.random.key(seed), n)


def real(x, n):
  return np.asarray(x)[W - int(n):]


@pytest.mark.parametrize('n', [1, 2, 5, 9, 12])
def test_crop_keeps_a_contiguous_window_of_eta_n(n):
  x, length = row(n)
  for k in keys(20):
    out, m = augment.crop(k, x, length, 0.6)
    m = int(m)
    assert m == max(1, int(np.floor(0.6 * n)))
    kept = real(out, m)
    assert np.all(np.asarray(out)[:W - m] == 0)
    assert np.all(np.diff(kept) == 1)  # contiguous in the original order.
    assert kept[0] >= 10 and kept[-1] <= 10 + n - 1


def test_crop_window_start_is_uniform():
  x, length = row(10)
  starts = collections.Counter(
      int(real(*augment.crop(k, x, length, 0.5))[0]) for k in keys(1200))
  # floor(0.5 * 10) = 5 items: 6 possible windows, each ~1/6.
  assert sorted(starts) == list(range(10, 16))
  freq = np.array([starts[s] for s in sorted(starts)]) / 1200
  np.testing.assert_allclose(freq, 1 / 6, atol=0.04)


def test_mask_hides_exactly_gamma_n_uniformly():
  x, length = row(10)
  hits = np.zeros(W)
  for k in keys(1000):
    out, m = augment.mask(k, x, length, 0.3, mask_id=99)
    out = np.asarray(out)
    assert int(m) == 10
    assert (out == 99).sum() == 3
    assert np.all(out[:W - 10] == 0)
    np.testing.assert_array_equal(out[out != 99], np.asarray(x)[out != 99])
    hits += out == 99
  np.testing.assert_allclose(hits[W - 10:] / 1000, 0.3, atol=0.05)
  assert hits[:W - 10].sum() == 0


def test_reorder_shuffles_only_inside_one_window():
  x, length = row(6)
  for k in keys(200):
    out, _ = augment.reorder(k, x, length, 0.5)  # a window of 3.
    r = real(out, 6)
    assert sorted(r.tolist()) == list(range(10, 16))
    moved = np.flatnonzero(r != np.arange(10, 16))
    if len(moved):
      assert moved.max() - moved.min() < 3


def test_reorder_orders_are_uniform():
  x, length = row(3)
  perms = collections.Counter(
      tuple(real(augment.reorder(k, x, length, 1.0)[0], 3).tolist())
      for k in keys(1800))
  assert len(perms) == 6
  np.testing.assert_allclose(np.array(list(perms.values())) / 1800, 1 / 6,
                             atol=0.04)


def test_substitute_replaces_alpha_n_with_correlated_items():
  x, length = row(10)
  similar = np.arange(128, dtype=np.int32)[:, None] + np.array([[100, 200]])
  for k in keys(50):
    out, m = augment.substitute(k, x, length, 0.3, jnp.asarray(similar))
    out, orig = np.asarray(out), np.asarray(x)
    changed = np.flatnonzero(out != orig)
    assert len(changed) == 3 and int(m) == 10
    for i in changed:
      assert out[i] in similar[orig[i]]


@pytest.mark.parametrize('n,expect', [(4, 5), (10, 12), (12, 12)])
def test_insert_adds_correlated_items_and_keeps_order(n, expect):
  x, length = row(n)
  similar = np.arange(128, dtype=np.int32)[:, None] + 100
  for k in keys(30):
    out, m = augment.insert(k, x, length, 0.3, jnp.asarray(similar))
    out = np.asarray(out)
    assert int(m) == expect
    assert np.all(out[:W - expect] == 0)
    r = out[W - expect:]
    originals = r[r < 100]
    # The original items in order (the oldest may fall off a full row).
    np.testing.assert_array_equal(originals, np.arange(10 + n - len(
        originals), 10 + n))
    for i in np.flatnonzero(r >= 100):
      assert i + 1 < len(r) and r[i + 1] == r[i] - 100  # before its item.


def test_augment_batch_mixes_ops_and_validates():
  cfg = ml_collections.ConfigDict(dict(crop_eta=0.6, mask_gamma=0.3,
                                       reorder_beta=0.6, correlated_alpha=0.3))
  items = jnp.tile(row(10)[0], (400, 1))
  lengths = jnp.full((400,), 10)
  fn = jax.jit(lambda k: augment.augment(k, items, lengths,
                                         ops=('crop', 'mask'), cfg=cfg,
                                         mask_id=99))
  out, m = fn(jax.random.key(1))
  cropped = np.asarray(m) == 6
  masked = (np.asarray(out) == 99).any(-1)
  assert np.all(cropped ^ masked)
  assert 0.4 < cropped.mean() < 0.6
  with pytest.raises(ValueError, match='unknown ops'):
    augment.augment(jax.random.key(0), items, lengths, ops=('shuffle',),
                    cfg=cfg, mask_id=99)
  with pytest.raises(ValueError, match='correlated-items table'):
    augment.augment(jax.random.key(0), items, lengths, ops=('insert',),
                    cfg=cfg, mask_id=99)


def test_item_correlations_from_training_windows():
  train = [np.array([1, 2, 3]), np.array([1, 2]), np.array([4])]
  table = augment.item_correlations(train, num_items=5, vocab=8, k=2,
                                    window=1)
  assert table.shape == (8, 2)
  assert table[1, 0] == 2            # 1-2 co-occur twice.
  assert set(table[2]) == {1, 3}
  np.testing.assert_array_equal(table[4], [4, 4])  # no neighbours: itself.
  np.testing.assert_array_equal(table[6], [6, 6])  # not an item.
