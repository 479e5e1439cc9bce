"""Tests for rec_jax.data.synthetic."""

import time

import numpy as np
import pytest

from rec_jax.data import synthetic


@pytest.fixture(scope='module')
def ds():
  return synthetic.generate()


def _assert_same(a, b):
  assert a.num_items == b.num_items and a.num_attributes == b.num_attributes
  for field in ('sequences', 'ratings', 'timestamps'):
    assert all(np.array_equal(x, y)
               for x, y in zip(getattr(a, field), getattr(b, field)))
  assert np.array_equal(a.item_attributes, b.item_attributes)
  assert np.array_equal(a.sample_negatives, b.sample_negatives)
  assert a.item_text == b.item_text


def test_deterministic_from_seed(ds):
  _assert_same(ds, synthetic.generate())
  other = synthetic.generate(seed=1)
  assert not all(np.array_equal(x, y)
                 for x, y in zip(ds.sequences, other.sequences))


def test_shapes_and_ranges(ds):
  assert ds.name == 'synthetic'
  assert ds.num_users == 1000 and ds.num_items == 500
  lengths = np.array([len(s) for s in ds.sequences])
  assert lengths.min() >= 5 and lengths.max() <= 30
  assert lengths.min() == 5 and lengths.max() == 30  # Both ends drawn.
  flat = np.concatenate(ds.sequences)
  assert flat.dtype == np.int32
  assert flat.min() >= 1 and flat.max() <= 500
  assert len(np.unique(flat)) > 450  # Nearly every item is used.
  # Like every real dataset here, nobody meets an item twice.
  assert all(len(np.unique(s)) == len(s) for s in ds.sequences)

  assert all(r.dtype == np.float32 and len(r) == len(s)
             for r, s in zip(ds.ratings, ds.sequences))
  ratings = np.concatenate(ds.ratings)
  assert set(np.unique(ratings)) <= {1., 2., 3., 4., 5.}
  assert all(t.dtype == np.int64 and len(t) == len(s) and
             np.all(np.diff(t) > 0)
             for t, s in zip(ds.timestamps, ds.sequences))

  assert ds.item_attributes.shape == (501, 3)
  assert ds.item_attributes.dtype == np.int32
  assert not ds.item_attributes[0].any()
  assert (ds.item_attributes[1:] >= 1).all()
  assert ds.item_attributes.max() <= ds.num_attributes
  assert len(np.unique(ds.item_attributes[1:])) == ds.num_attributes

  assert len(ds.item_text) == 501 and ds.item_text[0] == ''
  assert all(len(t.split()) == 3 for t in ds.item_text[1:])

  assert ds.sample_negatives.shape == (1000, 99)
  assert ds.sample_negatives.dtype == np.int32
  for row, seq in zip(ds.sample_negatives, ds.sequences):
    assert len(set(row.tolist())) == 99
    assert row.min() >= 1 and row.max() <= 500
    assert not np.isin(row, seq).any()


def test_fast():
  start = time.perf_counter()
  synthetic.generate(seed=5)
  assert time.perf_counter() - start < 0.5


def _successor_baseline(ds, k=10):
  """Hit@k of 'most frequent successor of the previous item' on the last item.

  Transitions are counted on every sequence without its last item, as in
  leave-one-out evaluation.
  """
  counts = np.zeros((ds.num_items + 1, ds.num_items + 1))
  for seq in ds.sequences:
    train = seq[:-1]
    np.add.at(counts, (train[:-1], train[1:]), 1)
  counts[:, 0] = -1
  hits = [seq[-1] in np.argsort(-counts[seq[-2]], kind='stable')[:k]
          for seq in ds.sequences]
  return float(np.mean(hits))


def test_next_item_is_learnable(ds):
  # Random hit@10 is 10/500 = 0.02; popularity is about as bad because items
  # are spread evenly over clusters. The first-order baseline gets ~0.75.
  assert _successor_baseline(ds) > 0.5
  popularity = np.bincount(np.concatenate([s[:-1] for s in ds.sequences]),
                           minlength=ds.num_items + 1)
  popularity[0] = -1
  top = np.argsort(-popularity)[:10]
  assert np.mean([s[-1] in top for s in ds.sequences]) < 0.1


def test_neighbours_share_cluster_features(ds):
  # Consecutive items mostly come from one cluster, so they share a cluster
  # attribute and the text's noun vocabulary far more often than random pairs.
  attrs = ds.item_attributes

  def shared(a, b):
    return np.mean([bool(set(attrs[x, :2]) & set(attrs[y, :2]))
                    for x, y in zip(a, b)])

  pairs = np.concatenate([np.stack([s[:-1], s[1:]], 1) for s in ds.sequences])
  rng = np.random.default_rng(0)
  random_pairs = rng.integers(1, ds.num_items + 1, size=(len(pairs), 2))
  assert shared(pairs[:, 0], pairs[:, 1]) > 0.6
  assert shared(random_pairs[:, 0], random_pairs[:, 1]) < 0.2


def test_other_sizes():
  small = synthetic.generate(num_users=7, num_items=40, num_clusters=1,
                             min_len=3, max_len=3, seed=2)
  assert small.num_users == 7
  assert all(len(s) == 3 for s in small.sequences)
  # Sequences as long as the catalogue: every user sees every item once.
  full = synthetic.generate(num_users=20, num_items=30, num_clusters=3,
                            min_len=30, max_len=30)
  assert all(sorted(s.tolist()) == list(range(1, 31)) for s in full.sequences)
  assert small.sample_negatives is None  # Fewer than 99 unseen items.
  assert np.concatenate(small.sequences).max() <= 40
  big = synthetic.generate(num_users=20, num_items=2000, num_clusters=60)
  assert np.concatenate(big.sequences).max() <= 2000
  assert big.sample_negatives.shape == (20, 99)


@pytest.mark.parametrize('kwargs', [
    dict(num_users=0),
    dict(num_items=5, num_clusters=10),
    dict(num_clusters=0),
    dict(min_len=0),
    dict(min_len=10, max_len=5),
    dict(num_items=20, num_clusters=2, max_len=21),
])
def test_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    synthetic.generate(**kwargs)
