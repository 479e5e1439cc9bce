"""Deterministic synthetic interaction sequences with learnable structure.

The default dataset for smoke runs and tests: no files, no network, and a
fixed seed gives the same dataset on every machine. The latent structure is
simple enough that a sequence model beats popularity within seconds:

* Items are split into `num_clusters` clusters. Each cluster has an internal
  order (a random permutation of item ids, so ids carry no signal), a few
  attribute ids shared by its items, and a small text vocabulary ("crimson
  wool scarf": colour from a global list, material and noun from the
  cluster's own lists).
* Each user has one or two intents (clusters). A session starts at a random
  item of the main intent and mostly walks forward through the cluster's
  order (next item = successor 1 to 4 steps ahead), sometimes switches to
  the other intent (resuming where it left off), and sometimes clicks a
  uniformly random item. No user meets an item twice, as in every real
  dataset in shared/data: a step onto a seen item moves on to the next
  unseen one.
* Ratings (1-5) are high inside the user's intents and low for random
  clicks; timestamps increase with exponential gaps.
"""

import numpy as np

from rec_jax.data import types

# Walk probabilities per step. Successor offsets favour +1, so a first-order
# model already predicts well; the second intent rewards longer context.
_RANDOM_CLICK_PROB = 0.1
_SWITCH_PROB = 0.15
_STEP_OFFSETS = np.array([1, 2, 3, 4])
_STEP_PROBS = np.array([0.5, 0.25, 0.15, 0.1])
_TWO_INTENTS_PROB = 0.5

_ATTRIBUTES_PER_CLUSTER = 3  # Each item carries 2 of its cluster's 3.
_NUM_SHARED_ATTRIBUTES = 8  # Cluster-independent, e.g. a price band.
_NUM_NEGATIVES = 99

_COLORS = (
    'crimson', 'navy', 'ivory', 'olive', 'amber', 'teal', 'charcoal',
    'scarlet', 'lavender', 'mustard', 'coral', 'slate', 'emerald', 'beige',
    'plum', 'turquoise')
_MATERIALS = (
    'wool', 'cotton', 'leather', 'silk', 'linen', 'denim', 'velvet', 'canvas',
    'bamboo', 'steel', 'ceramic', 'oak', 'glass', 'copper', 'marble', 'felt',
    'rubber', 'walnut', 'suede', 'porcelain', 'cashmere', 'tweed', 'brass',
    'cork')
_NOUNS = (
    'scarf', 'mittens', 'mug', 'teapot', 'wallet', 'belt', 'lamp', 'vase',
    'notebook', 'pen', 'backpack', 'tote', 'candle', 'coaster', 'blanket',
    'pillow', 'sneakers', 'boots', 'hat', 'gloves', 'bowl', 'plate', 'clock',
    'frame', 'kettle', 'skillet', 'apron', 'towel', 'jacket', 'vest',
    'umbrella', 'bracelet', 'necklace', 'ring', 'earrings', 'watch', 'desk',
    'stool', 'shelf', 'basket', 'planter', 'trowel', 'journal', 'sketchbook',
    'easel', 'guitar', 'drum', 'whistle')


def _cluster_words(cluster: int, words: tuple[str, ...], per_cluster: int):
  """The cluster's own slice of a word list (wraps once clusters run out)."""
  return [words[(cluster * per_cluster + k) % len(words)]
          for k in range(per_cluster)]


def _item_features(rng, clusters, num_items, num_clusters):
  """Attribute table [M + 1, 3] and item text (index 0 is padding)."""
  attributes = np.zeros((num_items + 1, 3), np.int32)
  text = [''] * (num_items + 1)
  shared_base = num_clusters * _ATTRIBUTES_PER_CLUSTER
  for c, items in enumerate(clusters):
    own = 1 + c * _ATTRIBUTES_PER_CLUSTER + np.arange(_ATTRIBUTES_PER_CLUSTER)
    materials = _cluster_words(c, _MATERIALS, 2)
    nouns = _cluster_words(c, _NOUNS, 2)
    n = len(items)
    picks = np.argsort(rng.random((n, _ATTRIBUTES_PER_CLUSTER)), axis=1)[:, :2]
    attributes[items, :2] = own[picks]
    attributes[items, 2] = shared_base + 1 + rng.integers(
        _NUM_SHARED_ATTRIBUTES, size=n)
    colors = rng.integers(len(_COLORS), size=n)
    material = rng.integers(2, size=n)
    noun = rng.integers(2, size=n)
    for k, item in enumerate(items.tolist()):
      text[item] = (f'{_COLORS[colors[k]]} {materials[material[k]]} '
                    f'{nouns[noun[k]]}')
  return attributes, text


def _sample_negatives(rng, sequences, num_items):
  """99 distinct items per user outside the user's history, uniformly."""
  negatives = np.zeros((len(sequences), _NUM_NEGATIVES), np.int32)
  # Random scores with the history pushed to +inf: the 99 smallest are a
  # uniform 99-subset of the complement. Chunked to bound memory.
  chunk = max(1, 4_000_000 // (num_items + 1))
  for start in range(0, len(sequences), chunk):
    block = sequences[start:start + chunk]
    scores = rng.random((len(block), num_items + 1))
    scores[:, 0] = np.inf
    for row, seq in enumerate(block):
      scores[row, seq] = np.inf
    picked = np.argpartition(scores, _NUM_NEGATIVES, axis=1)
    negatives[start:start + len(block)] = picked[:, :_NUM_NEGATIVES]
  return negatives


def _clusters(rng, num_items, num_clusters):
  """Items as a random permutation cut into clusters.

  The order inside a cluster is the path users walk along.

  Returns:
    (clusters, sizes, table): the item ids of each cluster, their counts
    [C] and the clusters as rows of a zero-padded int64 table [C, max size].
  """
  clusters = np.array_split(rng.permutation(num_items) + 1, num_clusters)
  sizes = np.array([len(c) for c in clusters])
  table = np.zeros((num_clusters, sizes.max()), np.int64)  # [C, max size]
  for c, items in enumerate(clusters):
    table[c, :len(items)] = items
  return clusters, sizes, table


def _intents(rng, num_users, num_clusters, sizes):
  """Users: a main intent and, for about half of them, a second one.

  Returns:
    (intents, has_two, positions): the two intents' clusters [U, 2] (equal
    for users with one intent), whether the user has two [U], and where in
    each cluster the user starts [U, 2].
  """
  intents = np.zeros((num_users, 2), np.int64)
  intents[:, 0] = rng.integers(num_clusters, size=num_users)
  other = (intents[:, 0] + 1 + rng.integers(max(num_clusters - 1, 1),
                                            size=num_users)) % num_clusters
  has_two = (rng.random(num_users) < _TWO_INTENTS_PROB) & (num_clusters > 1)
  intents[:, 1] = np.where(has_two, other, intents[:, 0])
  positions = (rng.random((num_users, 2)) * sizes[intents]).astype(np.int64)
  return intents, has_two, positions


def _walk(rng, table, sizes, intents, has_two, positions, num_items,
          max_len):
  """The sessions, vectorized over users: one column per step.

  Args:
    rng: the generator, advanced in place.
    table: clusters as rows [C, max size], from `_clusters`.
    sizes: cluster sizes [C].
    intents: the users' two clusters [U, 2], from `_intents`.
    has_two: whether each user has a second intent [U].
    positions: each user's place in both clusters [U, 2]; updated in place.
    num_items: items are 1..num_items.
    max_len: number of steps.

  Returns:
    (items, base_rating): int64 [U, max_len] items, no user's twice, and the
    rating before noise [U, max_len] (high inside the intents, low for
    random clicks).
  """
  num_users = len(intents)
  rows = np.arange(num_users)
  active = np.zeros(num_users, np.int64)  # Which intent is current.
  items = np.zeros((num_users, max_len), np.int64)
  base_rating = np.zeros((num_users, max_len))
  seen = np.zeros((num_users, num_items + 1), bool)
  for t in range(max_len):
    u = rng.random(num_users)
    random_click = u < _RANDOM_CLICK_PROB
    switch = has_two & (u >= _RANDOM_CLICK_PROB) & (
        u < _RANDOM_CLICK_PROB + _SWITCH_PROB)
    if t > 0:
      active = np.where(switch, 1 - active, active)
    cluster = intents[rows, active]
    position = positions[rows, active]
    if t > 0:
      offset = rng.choice(_STEP_OFFSETS, p=_STEP_PROBS, size=num_users)
      position = np.where(random_click, position,
                          (position + offset) % sizes[cluster])
    # Nobody meets an item twice (as in every real dataset here): a walk
    # that lands on a seen item moves on to the next unseen one in order.
    for _ in range(sizes.max()):
      clash = ~random_click & seen[rows, table[cluster, position]]
      if not clash.any():
        break
      position = np.where(clash, (position + 1) % sizes[cluster], position)
    positions[rows, active] = np.where(random_click, positions[rows, active],
                                       position)
    # Users who have seen their whole cluster click at random instead.
    random_click |= seen[rows, table[cluster, position]]
    item = np.where(random_click, 1 + rng.integers(num_items, size=num_users),
                    table[cluster, position])
    _redraw_seen(rng, seen, rows, item, num_items)
    seen[rows, item] = True
    items[:, t] = item
    base_rating[:, t] = np.where(random_click, 2.4,
                                 np.where(active == 0, 4.1, 3.6))
  return items, base_rating


def _redraw_seen(rng, seen, rows, item, num_items):
  """Replaces, in place, the random items `item` a user has already seen."""
  for _ in range(10):  # Redraw seen random items; rarely needed twice.
    clash = seen[rows, item]
    if not clash.any():
      break
    item[clash] = 1 + rng.integers(num_items, size=int(clash.sum()))
  clash = seen[rows, item]  # Still seen: take the first unseen item.
  item[clash] = np.argmin(seen[clash, 1:], axis=1) + 1


def _ratings_and_times(rng, base_rating):
  """Ratings 1-5 (`base_rating` plus noise) and increasing timestamps."""
  num_users, max_len = base_rating.shape
  noise = rng.normal(0, 0.8, base_rating.shape)
  ratings = np.clip(np.rint(base_rating + noise), 1, 5).astype(np.float32)
  # Seconds since epoch: a start in 2014-2019, then gaps of ~1 day (>= 60 s).
  start = 1_388_534_400 + rng.integers(5 * 365 * 86_400, size=num_users)
  gaps = 60 + rng.exponential(86_400, size=(num_users, max_len)).astype(
      np.int64)
  gaps[:, 0] = 0
  times = start[:, None] + np.cumsum(gaps, axis=1)
  return ratings, times


def generate(num_users: int = 1000, num_items: int = 500,
             num_clusters: int = 10, min_len: int = 5, max_len: int = 30,
             seed: int = 0) -> types.SequenceDataset:
  """Generates a synthetic dataset; the same arguments give the same data.

  Args:
    num_users: number of users (sequences).
    num_items: item vocabulary size; items are 1..num_items.
    num_clusters: number of item clusters (latent intents).
    min_len: shortest sequence.
    max_len: longest sequence.
    seed: seed of the numpy Generator that draws everything.

  Returns:
    A `SequenceDataset` named 'synthetic' with attributes (3 per item),
    item text, ratings, timestamps and, when every user has at least 99
    unseen items, 99 sample negatives per user.

  Raises:
    ValueError: inconsistent sizes.
  """
  if num_users < 1 or num_clusters < 1 or num_items < num_clusters:
    raise ValueError(
        f'need num_users >= 1 and num_items >= num_clusters >= 1, got '
        f'num_users={num_users}, num_items={num_items}, '
        f'num_clusters={num_clusters}')
  if not 1 <= min_len <= max_len <= num_items:
    raise ValueError('need 1 <= min_len <= max_len <= num_items (no user '
                     f'meets an item twice), got {min_len}, {max_len}, '
                     f'{num_items}')
  # One generator draws everything, in this order.
  rng = np.random.default_rng(seed)
  clusters, sizes, table = _clusters(rng, num_items, num_clusters)
  attributes, text = _item_features(rng, clusters, num_items, num_clusters)
  intents, has_two, positions = _intents(rng, num_users, num_clusters, sizes)
  lengths = rng.integers(min_len, max_len + 1, size=num_users)
  items, base_rating = _walk(rng, table, sizes, intents, has_two, positions,
                             num_items, max_len)
  ratings, times = _ratings_and_times(rng, base_rating)

  sequences = [items[i, :n].astype(np.int32) for i, n in enumerate(lengths)]
  negatives = None
  if num_items - max_len >= _NUM_NEGATIVES:
    negatives = _sample_negatives(rng, sequences, num_items)
  return types.SequenceDataset(
      name='synthetic',
      sequences=sequences,
      num_items=num_items,
      item_attributes=attributes,
      num_attributes=(num_clusters * _ATTRIBUTES_PER_CLUSTER +
                      _NUM_SHARED_ATTRIBUTES),
      item_text=text,
      ratings=[ratings[i, :n] for i, n in enumerate(lengths)],
      timestamps=[times[i, :n].astype(np.int64) for i, n in enumerate(lengths)],
      sample_negatives=negatives)
