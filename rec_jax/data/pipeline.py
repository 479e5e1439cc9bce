"""Leave-one-out splits and deterministic, fixed-shape input pipelines.

Training sequences are cut into segments of at most `max_len` positions and
packed several to a row (a row holds segments of different users, kept
apart by `segment_ids` in the attention mask). Beauty's median training
sequence has 4 items against a maximum length of 50, so padding each user to
50 would spend over 90% of the compute on padding; packed rows are ~98% full.

Every batch is a pure function of (seed, epoch, index): the packing plan of
an epoch comes from a generator seeded with (seed, epoch), so a resumed run
sees exactly the batches an uninterrupted run sees. Each process builds only
its own rows of the global batch.

Why numpy and not grain. Random access by (epoch, index) is what makes
resumes exact with no iterator state to checkpoint, and the best-fit packing
plan of an epoch is one pass over the segment lengths, which grain's
packing transforms (first-fit over a stream) would not reproduce. What a
loader could add is prefetching, and there is nothing to hide: a batch
costs 0.38 ms on the host against an 83.6 ms Beauty SASRec step on the
2-core CPU, and the dispatch is asynchronous, so the next batch is built
while the device computes; over batches built beforehand (perfect
prefetch) the loop runs 1.01x as fast (benchmarks/pipeline_share.py,
2026-12-07). grain stays out of the dependencies; the prepared datasets
are random-access ArrayRecord sources that it can read directly.
"""

import dataclasses

import numpy as np

from rec_jax.data import types

MIN_INTERACTIONS = 3  # one to train on, one to validate, one to test.


@dataclasses.dataclass
class Split:
  """Leave-one-out split (S3-Rec protocol).

  For user u (row u - 1): train = items[:-2]; validation predicts items[-2]
  from items[:-2]; test predicts items[-1] from items[:-1].
  """
  train: list[np.ndarray]
  valid_history: list[np.ndarray]
  valid_target: np.ndarray
  test_history: list[np.ndarray]
  test_target: np.ndarray
  users: np.ndarray  # 1-based ids of the users in the evaluation lists.


def leave_one_out(ds: types.SequenceDataset) -> Split:
  """Splits every user's sequence: last item test, second-to-last valid."""
  short = [u + 1 for u, s in enumerate(ds.sequences)
           if len(s) < MIN_INTERACTIONS]
  if short:
    raise ValueError(
        f'{ds.name}: {len(short)} users have fewer than {MIN_INTERACTIONS} '
        f'interactions (first: user {short[0]}); leave-one-out needs '
        f'{MIN_INTERACTIONS}.')
  seqs = [np.asarray(s, np.int32) for s in ds.sequences]
  return Split(
      train=[s[:-2] for s in seqs],
      valid_history=[s[:-2] for s in seqs],
      valid_target=np.array([s[-2] for s in seqs], np.int32),
      test_history=[s[:-1] for s in seqs],
      test_target=np.array([s[-1] for s in seqs], np.int32),
      users=np.arange(1, len(seqs) + 1, dtype=np.int64))


@dataclasses.dataclass
class Segments:
  """Flat storage of training segments (each at most max_len long)."""
  inputs: np.ndarray   # int32 [T] concatenated segment inputs.
  targets: np.ndarray  # int32 [T] what each input position predicts (0 none).
  starts: np.ndarray   # int64 [S] offset of each segment in the flat arrays.
  lengths: np.ndarray  # int64 [S].
  user: np.ndarray     # int64 [S] 0-based user row of each segment.
  values: np.ndarray | None = None  # float32 [T] a value per target
                                    # (e.g. its rating), if given.
  input_values: np.ndarray | None = None  # float32 [T] the value of each
                                          # input item, if given.

  @property
  def num_targets(self) -> int:
    return int((self.targets > 0).sum())


def make_segments(train: list[np.ndarray], max_len: int, *,
                  shift: bool, values: list[np.ndarray] | None = None
                  ) -> Segments:
  """Cuts training sequences into segments, newest window first.

  Args:
    train: per-user training items.
    max_len: longest segment.
    shift: next-item objectives (True) pair input t[i] with target t[i + 1];
      reconstruction objectives (False, e.g. Cloze) keep inputs == targets
      and choose what to hide inside the step.
    values: optional per-user float arrays aligned with `train` (ratings);
      each target carries its own value.

  Returns:
    Segments covering every training target exactly once. A long sequence
    becomes several segments; windows are aligned to its end so the most
    recent window, like the evaluation input, has full context.
  """
  inputs, targets, starts, lengths, users, vals, in_vals = ([], [], [], [],
                                                           [], [], [])
  offset = 0
  for u, t in enumerate(train):
    t = np.asarray(t, np.int32)
    x, y = (t[:-1], t[1:]) if shift else (t, t)
    if values is not None:
      v = np.asarray(values[u], np.float32)
      if len(v) != len(t):
        raise ValueError(f'user row {u}: {len(v)} values for {len(t)} items')
      v, vin = (v[1:], v[:-1]) if shift else (v, v)
    n = len(x)
    end = n
    while end > 0:
      begin = max(0, end - max_len)
      inputs.append(x[begin:end])
      targets.append(y[begin:end])
      if values is not None:
        vals.append(v[begin:end])
        in_vals.append(vin[begin:end])
      starts.append(offset)
      lengths.append(end - begin)
      users.append(u)
      offset += end - begin
      end = begin
  cat = lambda a: np.concatenate(a) if a else np.zeros((0,), np.int32)
  return Segments(cat(inputs).astype(np.int32), cat(targets).astype(np.int32),
                  np.asarray(starts, np.int64), np.asarray(lengths, np.int64),
                  np.asarray(users, np.int64),
                  None if values is None else cat(vals).astype(np.float32),
                  None if values is None else cat(in_vals).astype(np.float32))


def pack(lengths: np.ndarray, max_len: int,
         rng: np.random.Generator | None = None, *, packed: bool = True):
  """Best-fit packing of segments into rows of max_len.

  Args:
    lengths: [S] segment lengths, each <= max_len.
    max_len: row length.
    rng: visit segments and order rows at random; None keeps input order.
    packed: False gives every segment a row of its own, right-aligned
      (left-padded): the unpacked mode of a model family that cannot keep
      the users of a row apart (rec_jax.models, PACKED).

  Returns:
    (row [S], offset [S], num_rows): where each segment lands.
  """
  n = len(lengths)
  if not packed:
    row = np.arange(n) if rng is None else rng.permutation(n)
    return row, max_len - np.asarray(lengths, np.int64), n
  row = np.empty(n, np.int64)
  off = np.empty(n, np.int64)
  fill = []
  open_rows = [[] for _ in range(max_len + 1)]  # by remaining capacity
  for s in (range(n) if rng is None else rng.permutation(n)):
    need = int(lengths[s])
    r = -1
    for cap in range(need, max_len + 1):
      if open_rows[cap]:
        r = open_rows[cap].pop()
        break
    if r < 0:
      r = len(fill)
      fill.append(0)
    row[s], off[s] = r, fill[r]
    fill[r] += need
    if fill[r] < max_len:
      open_rows[max_len - fill[r]].append(r)
  if rng is None:
    return row, off, len(fill)
  # Rows created late are the emptiest; shuffle so batches mix fill levels.
  perm = rng.permutation(len(fill))
  return perm[row], off, len(fill)


class _Stream:
  """What every batch stream holds: a global batch of `batch_size` rows of
  at most max_len, a seed that with (epoch, index) fixes each batch, and
  the rows of it this process builds (`row_slice`)."""

  def __init__(self, *, batch_size: int, max_len: int, seed: int,
               row_slice: slice | None):
    self.batch_size = batch_size
    self.max_len = max_len
    self.seed = seed
    self.row_slice = row_slice or slice(0, batch_size)


class TrainStream(_Stream):
  """Packed training batches as a function of (epoch, index).

  Each batch is a dict of int32 [rows, max_len] arrays: `inputs`,
  `targets`, `positions` (right-aligned: a segment's last position is
  max_len - 1, as in left-padded evaluation inputs) and `segment_ids`
  (0 = padding). Only the rows of this process (`row_slice`) are built.
  With `packed=False` every segment has a row of its own, left-padded.
  """

  def __init__(self, segments: Segments, *, batch_size: int, max_len: int,
               seed: int, row_slice: slice | None = None,
               packed: bool = True):
    if int(segments.lengths.max(initial=0)) > max_len:
      raise ValueError('a segment is longer than max_len')
    if not len(segments.lengths):
      raise ValueError('no training segments: every sequence is too short')
    super().__init__(batch_size=batch_size, max_len=max_len, seed=seed,
                     row_slice=row_slice)
    self.segments = segments
    self.packed = packed
    self._plan_epoch = None
    self._plan = None

  def _epoch_plan(self, epoch: int):
    if self._plan_epoch != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      self._plan = pack(self.segments.lengths, self.max_len, rng,
                        packed=self.packed)
      order = np.argsort(self._plan[0], kind='stable')
      self._by_row = (order, np.searchsorted(
          self._plan[0][order], np.arange(self._plan[2] + 1)))
      self._plan_epoch = epoch
    return self._plan

  def steps_in_epoch(self, epoch: int) -> int:
    return -(-self._epoch_plan(epoch)[2] // self.batch_size)

  def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    """This process's rows of batch `index` of `epoch`."""
    row, off, num_rows = self._epoch_plan(epoch)
    order, bounds = self._by_row
    first = index * self.batch_size
    rows = range(first + self.row_slice.start, first + self.row_slice.stop)
    shape = (len(rows), self.max_len)
    out = {k: np.zeros(shape, np.int32)
           for k in ('inputs', 'targets', 'positions', 'segment_ids')}
    seg = self.segments
    if seg.values is not None:
      out['values'] = np.zeros(shape, np.float32)
    if seg.input_values is not None:
      # Running sum and count of the segment's input values up to and
      # including each position (a user's rating history, causally).
      out['history_sum'] = np.zeros(shape, np.float32)
      out['history_count'] = np.zeros(shape, np.float32)
    for i, r in enumerate(rows):
      if r >= num_rows:
        continue  # padding row at the end of an epoch.
      for j, s in enumerate(order[bounds[r]:bounds[r + 1]]):
        n, o, st = int(seg.lengths[s]), int(off[s]), int(seg.starts[s])
        out['inputs'][i, o:o + n] = seg.inputs[st:st + n]
        out['targets'][i, o:o + n] = seg.targets[st:st + n]
        if seg.values is not None:
          out['values'][i, o:o + n] = seg.values[st:st + n]
        if seg.input_values is not None:
          out['history_sum'][i, o:o + n] = np.cumsum(
              seg.input_values[st:st + n])
          out['history_count'][i, o:o + n] = np.arange(1, n + 1)
        out['positions'][i, o:o + n] = np.arange(self.max_len - n,
                                                 self.max_len)
        out['segment_ids'][i, o:o + n] = j + 1
    return out


def pack_eval(histories: list[np.ndarray], max_len: int, *,
              mask_id: int | None = None, row_multiple: int = 1,
              packed: bool = True):
  """Packs evaluation inputs: several users' histories share a row.

  Each history is cut to its newest max_len items (max_len - 1 plus a
  [MASK] with `mask_id`), right-aligned in position as in `eval_inputs`, so
  the encoder output at each user's last position equals that of a
  left-padded row of its own, at a fraction of the cost (most histories are
  far shorter than max_len). `packed=False`: one history per row,
  left-padded (see `pack`).

  Returns:
    (batch of int32 [R, max_len] arrays: inputs, positions, segment_ids;
     int64 [N, 2] (row, column) of each user's last position). R is a
    multiple of row_multiple.
  """
  keep = max_len - (mask_id is not None)
  cut = [np.asarray(h[len(h) - min(len(h), keep):], np.int32)
         for h in histories]
  if mask_id is not None:
    cut = [np.append(h, np.int32(mask_id)) for h in cut]
  lengths = np.array([max(len(h), 1) for h in cut], np.int64)
  row, off, rows = pack(lengths, max_len, packed=packed)
  rows = -(-rows // row_multiple) * row_multiple
  out = {k: np.zeros((rows, max_len), np.int32)
         for k in ('inputs', 'positions', 'segment_ids')}
  for u, h in enumerate(cut):
    r, o, n = row[u], off[u], lengths[u]
    out['inputs'][r, o:o + len(h)] = h
    out['positions'][r, o:o + n] = np.arange(max_len - n, max_len)
    out['segment_ids'][r, o:o + n] = u + 1  # unique within any row.
  return out, np.stack([row, off + lengths - 1], axis=1)


def eval_inputs(histories: list[np.ndarray], max_len: int, *,
                mask_id: int | None = None) -> dict[str, np.ndarray]:
  """Left-padded model inputs for scoring the item after each history.

  With `mask_id` (bidirectional encoders) a [MASK] token is appended and the
  last max_len - 1 history items are kept.
  """
  n = len(histories)
  keep = max_len - (mask_id is not None)
  inputs = np.zeros((n, max_len), np.int32)
  for i, h in enumerate(histories):
    h = np.asarray(h[-keep:], np.int32) if keep else np.zeros(0, np.int32)
    if mask_id is not None:
      h = np.append(h, np.int32(mask_id))
    if len(h):
      inputs[i, max_len - len(h):] = h
  return dict(inputs=inputs,
              positions=np.broadcast_to(np.arange(max_len, dtype=np.int32),
                                        (n, max_len)).copy(),
              segment_ids=(inputs != 0).astype(np.int32))


def history_width(histories: list[np.ndarray]) -> int:
  """The longest history rounded up to a power of two (at least 8), so that
  evaluation compiles for few shapes."""
  longest = max((len(h) for h in histories), default=1)
  return max(8, 1 << (max(longest, 1) - 1).bit_length())


def pad_histories(histories: list[np.ndarray], width: int | None = None):
  """int32 [N, W] of history items padded with 0 (W: see history_width)."""
  width = width or history_width(histories)
  out = np.zeros((len(histories), width), np.int32)
  for i, h in enumerate(histories):
    out[i, :len(h)] = h
  return out


def bucket_widths(max_len: int, smallest: int = 8) -> list[int]:
  """Row widths of length buckets: powers of two below max_len, then it."""
  widths, w = [], smallest
  while w < max_len:
    widths.append(w)
    w *= 2
  return widths + [max_len]


class UserStream(_Stream):
  """One user per row, for sequence-level (pretraining) objectives.

  Each epoch every user contributes one window of at most max_len of their
  training items: the newest window, or (with `random_prefix`) the window
  ending at a random point, so that successive epochs see every prefix.
  Rows are left-padded (newest item last); batches are drawn from length
  buckets (`bucket_widths`) so that short sequences do not pay for max_len
  columns, which keeps a handful of compiled shapes.

  Batch fields: `items` int32 [B, W], `lengths` int32 [B]; with `partners`
  also `partner` [B, W] / `partner_lengths` [B]: the window of another user
  whose window ends with the same item (0 length when there is none), the
  supervised positive of DuoRec. Like TrainStream, every batch is a pure
  function of (seed, epoch, index) and only `row_slice` rows are built.

  Packed (`packed`): one compiled shape and no padding for the
  encoder. Rows are max_len wide (W = max_len, no buckets) and each batch
  also carries the plan that packs its users' views several to a row of a
  [R, max_len] block, as fine-tuning batches are packed (models package
  docstring): every user gets a slot of `slot(n)` positions (its window
  length n, plus what an augmentation may add), slots are packed best-fit,
  and a batch takes users until it has `batch_size` of them or its slots
  fill the R rows (`pack_rows`: enough for batch_size users of the first
  epoch's mean slot, a multiple of `row_multiple`). Plan fields (see `PackPlan`): `pack_src` int32 [R, L],
  the flat index u * W + column of the entry of `items` each packed
  position holds (-1: none), `pack_seg` [R, L] the slot's segment id
  (u + 1), `pack_last` [B] the flat packed index of each user's newest
  position; `partner_pack_*` likewise for the partners (a partner that does
  not fit is dropped: length 0).
  """

  def __init__(self, train: list[np.ndarray], *, batch_size: int,
               max_len: int, seed: int, row_slice: slice | None = None,
               random_prefix: bool = True, partners: bool = False,
               packed: bool = False, slot=None, row_multiple: int = 1):
    self.train = [np.asarray(t, np.int32) for t in train]
    self.lengths = np.array([len(t) for t in self.train], np.int64)
    if not len(self.train) or self.lengths.max() == 0:
      raise ValueError('UserStream: no training items')
    super().__init__(batch_size=batch_size, max_len=max_len, seed=seed,
                     row_slice=row_slice)
    self.random_prefix = random_prefix
    self.partners = partners
    self.slot = slot or (lambda n: n)
    self.widths = [max_len] if packed else bucket_widths(max_len)
    self.pack_rows = 0
    if packed:
      # Rows for batch_size users of the first epoch's mean slot, packed
      # best-fit (nearly full), divisible over the data-parallel devices.
      begins, ends = self._windows(np.random.default_rng([seed, 0, 7]))
      slots = self._slot_sizes(ends - begins)
      rows = -(-int(np.ceil(1.02 * batch_size * slots[slots > 0].mean()))
               // max_len)
      self.pack_rows = -(-max(rows, 1) // row_multiple) * row_multiple
    self._epoch = None

  def _windows(self, rng):
    """(begins, ends) of every user's window this epoch."""
    n = self.lengths
    if self.random_prefix:
      low = np.minimum(n, 2)
      ends = low + (rng.random(len(n)) * (n - low + 1)).astype(np.int64)
    else:
      ends = n.copy()
    ends = np.minimum(ends, n)
    return np.maximum(ends - self.max_len, 0), ends

  def _slot_sizes(self, sizes):
    return np.minimum(np.array([self.slot(int(k)) for k in sizes], np.int64),
                      self.max_len)

  def _plan(self, epoch: int):
    if self._epoch == epoch:
      return
    rng = np.random.default_rng([self.seed, epoch, 7])
    begins, ends = self._windows(rng)
    sizes = ends - begins
    if self.pack_rows:
      self._slots = self._slot_sizes(sizes)
      self._batches = [(0, users) for users in self._fill(
          rng.permutation(np.flatnonzero(sizes > 0)))]
    else:
      bucket = np.searchsorted(self.widths, sizes)
      batches = []
      for b in range(len(self.widths)):
        users = rng.permutation(np.flatnonzero((bucket == b) & (sizes > 0)))
        for i in range(0, len(users), self.batch_size):
          batches.append((b, users[i:i + self.batch_size]))
      order = rng.permutation(len(batches))
      self._batches = [batches[i] for i in order]
    self._begins, self._ends = begins, ends
    if self.partners:
      last = np.array([t[e - 1] if e > 0 else 0
                       for t, e in zip(self.train, ends)], np.int64)
      self._partner = self._pick_partners(last, rng)
    self._epoch = epoch

  @staticmethod
  def _pick_partners(last: np.ndarray, rng) -> np.ndarray:
    """For each user, another user whose window ends with the same item."""
    partner = np.full(len(last), -1, np.int64)
    order = np.argsort(last, kind='stable')
    bounds = np.flatnonzero(np.diff(last[order])) + 1
    for group in np.split(order, bounds):
      if len(group) < 2:
        continue
      # A random derangement-free pairing: shift a shuffled group by one.
      g = rng.permutation(group)
      partner[g] = np.roll(g, 1)
    return partner

  def steps_in_epoch(self, epoch: int) -> int:
    self._plan(epoch)
    return len(self._batches)

  def _window(self, u: int):
    return self.train[u][self._begins[u]:self._ends[u]]

  def _parts(self):
    """(processes, this process's part) of every global batch."""
    local = self.row_slice.stop - self.row_slice.start
    return self.batch_size // local, self.row_slice.start // local

  def _fill(self, order):
    """The epoch's batches of users (in `order`): at most batch_size each,
    and each process's share of a batch packs into its pack_rows / parts
    rows (checked by packing it)."""
    parts, _ = self._parts()
    local_users, local_rows = self.batch_size // parts, self.pack_rows // parts
    capacity = local_rows * self.max_len
    batches, start = [], 0
    while start < len(order):
      take = min(self.batch_size, len(order) - start)
      while take > 1 and not all(
          self._fits(order[start + p * local_users:
                           min(start + (p + 1) * local_users, start + take)],
                     local_rows, capacity) for p in range(parts)):
        take -= max(1, take // 16)
      batches.append(order[start:start + take])
      start += take
    return batches

  def _fits(self, users, rows: int, capacity: int) -> bool:
    slots = self._slots[users]
    if slots.sum() > capacity:
      return False
    return pack(np.sort(slots)[::-1], self.max_len)[2] <= rows

  def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    self._plan(epoch)
    b, users = self._batches[index]
    width = self.widths[b]
    rows = range(self.row_slice.start, self.row_slice.stop)
    out = dict(items=np.zeros((len(rows), width), np.int32),
               lengths=np.zeros((len(rows),), np.int32))
    if self.partners:
      out.update(partner=np.zeros((len(rows), width), np.int32),
                 partner_lengths=np.zeros((len(rows),), np.int32))
    for i, r in enumerate(rows):
      if r >= len(users):
        continue  # padding row (length 0) in the bucket's last batch.
      u = users[r]
      w = self._window(u)
      out['items'][i, width - len(w):] = w
      out['lengths'][i] = len(w)
      if self.partners and self._partner[u] >= 0:
        p = self._window(self._partner[u])[-width:]
        out['partner'][i, width - len(p):] = p
        out['partner_lengths'][i] = len(p)
    if self.pack_rows:
      self._add_plans(out, [users[r] if r < len(users) else -1
                            for r in rows])
    return out

  def _add_plans(self, out, users):
    """The packing plans of this process's rows (class docstring)."""
    parts, part = self._parts()
    rows = self.pack_rows // parts
    first_user, first_row = self.row_slice.start, part * rows
    slots = np.array([self._slots[u] if u >= 0 else 0 for u in users])
    out.update(PackPlan.build(slots, rows, self.max_len, first_user,
                              first_row).fields('pack_'))
    if self.partners:
      p_slots = out['partner_lengths'].astype(np.int64)
      plan = PackPlan.build(p_slots, rows, self.max_len, first_user,
                            first_row)
      out['partner'][plan.dropped] = 0
      out['partner_lengths'][plan.dropped] = 0
      out.update(plan.fields('partner_pack_'))


@dataclasses.dataclass
class PackPlan:
  """Where the users' views of a UserStream batch go in a packed block.

  src [R, L]: flat index (user * L + column) into the batch's [B, L] rows
    of the entry each packed position takes, -1 where none;
  seg [R, L]: the segment id (user + 1) of each slot position, 0 outside;
  last [B]: flat index (row * L + column) of each user's newest position
    in the packed block (0 for users without a slot);
  dropped [B] bool: users whose slot did not fit (their views are empty).
  Indices are global: this process's users start at `first_user`, its
  packed rows at `first_row`.
  """
  src: np.ndarray
  seg: np.ndarray
  last: np.ndarray
  dropped: np.ndarray

  @classmethod
  def build(cls, slots, rows: int, width: int, first_user: int = 0,
            first_row: int = 0) -> 'PackPlan':
    """Best-fit packing of `slots` (one per user, 0: none) into `rows`."""
    src = np.full((rows, width), -1, np.int32)
    seg = np.zeros((rows, width), np.int32)
    last = np.zeros(len(slots), np.int32)
    dropped = np.zeros(len(slots), bool)
    real = np.flatnonzero(slots > 0)
    real = real[np.argsort(-slots[real], kind='stable')]  # best-fit
    row, off, _ = pack(slots[real], width)                # decreasing.
    for u, r, o in zip(real, row, off):
      if r >= rows:
        dropped[u] = True
        continue
      n = int(slots[u])
      src[r, o:o + n] = (first_user + u) * width + np.arange(width - n, width)
      seg[r, o:o + n] = first_user + u + 1
      last[u] = (first_row + r) * width + o + n - 1
    return cls(src, seg, last, dropped)

  def fields(self, prefix: str) -> dict[str, np.ndarray]:
    return {f'{prefix}src': self.src, f'{prefix}seg': self.seg,
            f'{prefix}last': self.last}


def window_passes(lengths, max_len: int) -> int:
  """How many epochs of one window per user (at most max_len items, as a
  UserStream gives) show as many items as the training sequences hold,
  rounded to a whole number and at least 1: the newest-window epochs one
  pass over the training items takes. About 1 where nearly every user fits
  in max_len (Beauty, Toys: 1.02), 2 on LastFM (1.96), 4 on ML-1M (3.69:
  most users there have hundreds of ratings).

  Raises:
    ValueError: when max_len < 1 or no user has a training item.
  """
  n = np.asarray(lengths, np.int64)
  if max_len < 1:
    raise ValueError(f'window_passes: max_len must be >= 1, got {max_len}')
  shown = int(np.minimum(n, max_len).sum())
  if shown <= 0:
    raise ValueError('window_passes: no training items')
  return max(1, int(round(int(n.sum()) / shown)))


class JointStream:
  """Packed next-item batches (a TrainStream) with a batch of one user per
  row (a UserStream) under `aux_` keys, for objectives trained jointly
  with the next-item loss. Epoch e of the packed stream draws from epoch e
  of the user stream, cycled when it has fewer batches; a pure function of
  (epoch, index), so a resumed run sees the batches it would have seen."""

  def __init__(self, train: TrainStream, users: UserStream):
    self.train = train
    self.users = users

  def steps_in_epoch(self, epoch: int) -> int:
    return self.train.steps_in_epoch(epoch)

  def batch(self, epoch: int, index: int) -> dict[str, np.ndarray]:
    out = dict(self.train.batch(epoch, index))
    aux = self.users.batch(epoch, index % self.users.steps_in_epoch(epoch))
    out.update({f'{AUX}{k}': v for k, v in aux.items()})
    return out


AUX = 'aux_'  # key prefix of a JointStream's user rows.


def split_joint(batch: dict) -> tuple[dict, dict]:
  """(the packed next-item batch, the user rows of the joint objectives,
  without their prefix) of a JointStream batch ({} without them)."""
  main = {k: v for k, v in batch.items() if not k.startswith(AUX)}
  joint = {k[len(AUX):]: v for k, v in batch.items() if k.startswith(AUX)}
  return main, joint
