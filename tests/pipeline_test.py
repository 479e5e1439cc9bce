"""Leave-one-out split, segments, packing and deterministic batches."""

import numpy as np
import pytest

from rec_jax.data import pipeline
from rec_jax.data import types


def _ds(lengths, seed=0, num_items=40):
  rng = np.random.default_rng(seed)
  seqs = [rng.integers(1, num_items + 1, n).astype(np.int32) for n in lengths]
  return types.SequenceDataset('toy', seqs, num_items)


def test_leave_one_out():
  ds = types.SequenceDataset('toy', [np.array([5, 6, 7, 8]),
                                     np.array([1, 2, 3])], 8)
  s = pipeline.leave_one_out(ds)
  np.testing.assert_array_equal(s.train[0], [5, 6])
  np.testing.assert_array_equal(s.valid_history[0], [5, 6])
  assert s.valid_target.tolist() == [7, 2]
  np.testing.assert_array_equal(s.test_history[0], [5, 6, 7])
  assert s.test_target.tolist() == [8, 3]
  np.testing.assert_array_equal(s.users, [1, 2])


def test_leave_one_out_rejects_short_users():
  ds = types.SequenceDataset('toy', [np.array([1, 2, 3]), np.array([1, 2])], 3)
  with pytest.raises(ValueError, match='user 2'):
    pipeline.leave_one_out(ds)


@pytest.mark.parametrize('shift', [True, False])
def test_segments_cover_every_target_once(shift):
  train = [np.arange(1, n + 1, dtype=np.int32) for n in (1, 2, 5, 23, 51)]
  seg = pipeline.make_segments(train, max_len=10, shift=shift)
  assert seg.lengths.max() <= 10
  for u, t in enumerate(train):
    got = np.concatenate([seg.targets[s:s + n] for s, n, uu in zip(
        seg.starts, seg.lengths, seg.user) if uu == u] or [np.zeros(0)])
    want = t[1:] if shift else t
    assert sorted(got.tolist()) == sorted(want.tolist())
  if shift:  # inputs precede their targets by one item.
    np.testing.assert_array_equal(seg.targets, seg.inputs + 1)
  # The newest window of a long sequence is full length and ends at its end.
  last = [i for i, u in enumerate(seg.user) if u == 4][0]
  assert seg.lengths[last] == 10
  assert seg.targets[seg.starts[last] + 9] == 51


def test_pack_is_a_valid_packing():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 51, 500)
  row, off, rows = pipeline.pack(lengths, 50, np.random.default_rng(1))
  used = np.zeros((rows, 50), int)
  for r, o, n in zip(row, off, lengths):
    used[r, o:o + n] += 1
  assert used.max() == 1  # no overlaps, nothing out of the row.
  assert used.sum() == lengths.sum()
  # Online best fit wastes little even on uniform lengths 1..50 ...
  assert rows <= np.ceil(lengths.sum() / 50) * 1.10
  # ... and almost nothing on recommendation-like, mostly short segments.
  short = np.minimum(rng.geometric(0.15, 5000), 50)
  _, _, rows = pipeline.pack(short, 50, np.random.default_rng(2))
  assert rows <= np.ceil(short.sum() / 50) * 1.02


def _stream(seed=0, rows=slice(0, 8)):
  split = pipeline.leave_one_out(_ds(np.random.default_rng(3).integers(
      3, 40, 60)))
  seg = pipeline.make_segments(split.train, 12, shift=True)
  return seg, pipeline.TrainStream(seg, batch_size=8, max_len=12, seed=seed,
                                   row_slice=rows)


def test_stream_batches_cover_epoch_and_are_deterministic():
  seg, stream = _stream()
  total = 0
  for e in range(2):
    seen = []
    for i in range(stream.steps_in_epoch(e)):
      b = stream.batch(e, i)
      assert b['inputs'].shape == (8, 12)
      valid = b['segment_ids'] > 0
      assert ((b['inputs'] > 0) == valid).all()
      seen.extend(b['targets'][valid].tolist())
      # Positions are right-aligned within each segment.
      for r in range(8):
        for sid in set(b['segment_ids'][r][valid[r]].tolist()):
          pos = b['positions'][r][b['segment_ids'][r] == sid]
          assert pos[-1] == 11 and (np.diff(pos) == 1).all()
    assert sorted(seen) == sorted(seg.targets[seg.targets > 0].tolist())
    total += len(seen)
  _, again = _stream()
  np.testing.assert_array_equal(again.batch(1, 2)['inputs'],
                                stream.batch(1, 2)['inputs'])
  # Different epochs are packed differently.
  assert not np.array_equal(stream.batch(0, 0)['inputs'],
                            stream.batch(1, 0)['inputs'])


def test_process_rows_are_slices_of_the_global_batch():
  _, full = _stream()
  _, lower = _stream(rows=slice(0, 4))
  _, upper = _stream(rows=slice(4, 8))
  for k in ('inputs', 'targets', 'positions', 'segment_ids'):
    np.testing.assert_array_equal(
        np.concatenate([lower.batch(0, 1)[k], upper.batch(0, 1)[k]]),
        full.batch(0, 1)[k])


def test_eval_inputs_left_pad_and_mask_token():
  b = pipeline.eval_inputs([np.array([3, 4, 5]), np.arange(1, 9)], 4)
  np.testing.assert_array_equal(b['inputs'], [[0, 3, 4, 5], [5, 6, 7, 8]])
  np.testing.assert_array_equal(b['segment_ids'], [[0, 1, 1, 1], [1] * 4])
  m = pipeline.eval_inputs([np.array([3, 4, 5])], 3, mask_id=99)
  np.testing.assert_array_equal(m['inputs'], [[4, 5, 99]])
  h = pipeline.pad_histories([np.array([1, 2]), np.arange(1, 11)])
  assert h.shape == (2, 16) and h[0].tolist()[:3] == [1, 2, 0]


def test_pack_eval_places_each_user_once_right_aligned():
  hist = [np.array([3, 4, 5]), np.arange(1, 20), np.array([7])]
  packed, where = pipeline.pack_eval(hist, 8, mask_id=99, row_multiple=4)
  assert packed['inputs'].shape[0] % 4 == 0
  for u, (r, c) in enumerate(where):
    assert packed['inputs'][r, c] == 99  # every user ends with its [MASK].
    assert packed['positions'][r, c] == 7
    seg = packed['segment_ids'][r] == packed['segment_ids'][r, c]
    got = packed['inputs'][r][seg].tolist()
    assert got == hist[u][-7:].tolist() + [99]


@pytest.mark.parametrize('random_prefix', [True, False])
def test_user_stream_windows(random_prefix):
  """Each epoch every user gives one left-padded window of at most max_len
  consecutive training items: the newest ones, or (random_prefix) ones
  ending at a point that varies across epochs."""
  lengths = [3, 9, 20, 2]
  # User u's items are 100 u + 1, ..., 100 u + n: a window names its user
  # and where it ends.
  train = [np.arange(1, n + 1, dtype=np.int32) + 100 * u
           for u, n in enumerate(lengths)]
  stream = pipeline.UserStream(train, batch_size=8, max_len=6, seed=0,
                               random_prefix=random_prefix)
  ends = {u: set() for u in range(len(train))}
  for epoch in range(20):
    users = []
    for i in range(stream.steps_in_epoch(epoch)):
      b = stream.batch(epoch, i)
      for items, n in zip(b['items'], b['lengths']):
        if not n:
          continue
        assert np.all(items[:-n] == 0)
        u, end = divmod(int(items[-1]), 100)
        np.testing.assert_array_equal(items[-n:], train[u][end - n:end])
        assert n == min(end, 6)
        users.append(u)
        ends[u].add(end)
    assert sorted(users) == list(range(len(train)))
  if random_prefix:
    assert len(ends[2]) > 5 and min(ends[2]) < 10
  else:
    assert all(ends[u] == {n} for u, n in enumerate(lengths))


def test_joint_stream_pairs_packed_batches_with_user_rows():
  rng = np.random.default_rng(0)
  train = [rng.integers(1, 50, size=n).astype(np.int32)
           for n in rng.integers(2, 30, size=40)]
  seg = pipeline.make_segments(train, 16, shift=True)
  packed = pipeline.TrainStream(seg, batch_size=4, max_len=16, seed=0)
  users = pipeline.UserStream(train, batch_size=8, max_len=16, seed=2,
                              random_prefix=False, partners=True)
  joint = pipeline.JointStream(packed, users)
  assert joint.steps_in_epoch(1) == packed.steps_in_epoch(1)
  assert users.steps_in_epoch(1) < joint.steps_in_epoch(1)  # it cycles.
  for index in (0, users.steps_in_epoch(1)):
    b = joint.batch(1, index)
    for k, v in packed.batch(1, index).items():
      np.testing.assert_array_equal(b[k], v)
    u = users.batch(1, index % users.steps_in_epoch(1))
    np.testing.assert_array_equal(b['aux_items'], u['items'])
    # The user rows keep their own shapes (every field is sharded over its
    # first axis, whatever its rank): split_joint gives them back as is.
    main, joint_rows = pipeline.split_joint(b)
    assert set(joint_rows) == set(u) and set(main) == set(packed.batch(1, 0))
    for k, v in u.items():
      assert joint_rows[k].shape == v.shape
      np.testing.assert_array_equal(joint_rows[k], v)
  # A pure function of (epoch, index): a resumed run sees the same batch.
  again = pipeline.JointStream(
      pipeline.TrainStream(seg, batch_size=4, max_len=16, seed=0),
      pipeline.UserStream(train, batch_size=8, max_len=16, seed=2,
                          random_prefix=False, partners=True)).batch(1, 3)
  for k, v in joint.batch(1, 3).items():
    np.testing.assert_array_equal(again[k], v)


def test_window_passes_counts_epochs_per_pass_over_the_items():
  # Items 3 + 9 + 20 + 2 = 34; windows of 6 show 3 + 6 + 6 + 2 = 17: 2.
  assert pipeline.window_passes([3, 9, 20, 2], 6) == 2
  # Everyone fits in max_len: one epoch is one pass.
  assert pipeline.window_passes([3, 9, 20, 2], 20) == 1
  # 100 + 1 items, 10 + 1 shown: 9.18, rounded to 9.
  assert pipeline.window_passes([100, 1], 10) == 9
  # 1.4 rounds down to 1, 1.6 up to 2.
  assert pipeline.window_passes([14], 10) == 1
  assert pipeline.window_passes([16], 10) == 2
  with pytest.raises(ValueError, match='no training items'):
    pipeline.window_passes([0, 0], 6)
  with pytest.raises(ValueError, match='max_len must be >= 1'):
    pipeline.window_passes([3], 0)
