"""Public entry point: load a benchmark as a `types.SequenceDataset`.

    from rec_jax.data import datasets
    ds = datasets.load('beauty')            # raw files: $REC_JAX_DATA_DIR
    ds = datasets.load('synthetic', num_users=200)
    print(datasets.describe(ds))

The first call for a dataset prepares it with its TFDS builder
(`rec_jax.data.builders`) into the cache ($REC_JAX_CACHE_DIR, default
~/.cache/rec_jax/tfds); later calls only read the prepared ArrayRecord files.
"""

import dataclasses

import numpy as np

from rec_jax.data import types
from rec_jax.data.builders import base
from rec_jax.data.builders import catalog
from rec_jax.data.sources import files

NAMES = tuple(catalog.BUILDERS)
DataError = files.DataError


def load(name: str, *, data_dir: str | None = None,
         cache_dir: str | None = None,
         **synthetic_kwargs) -> types.SequenceDataset:
  """Loads a dataset, preparing it first if the cache has no copy.

  Args:
    name: one of NAMES, e.g. 'beauty', 'ml-1m', 'synthetic'.
    data_dir: directory of raw files laid out like shared/data; overrides
      $REC_JAX_DATA_DIR. With neither set, the files are downloaded.
    cache_dir: where prepared datasets are kept; overrides
      $REC_JAX_CACHE_DIR (default ~/.cache/rec_jax/tfds).
    **synthetic_kwargs: arguments of `synthetic.generate` (synthetic only);
      each combination is cached separately.

  Returns:
    The dataset, users sorted by id (user u is `sequences[u - 1]`).

  Raises:
    DataError: unknown name, a missing or malformed raw file, a failed
      download, or a prepared copy that breaks the dataset's invariants.
  """
  builder = catalog.make_builder(
      name, data_dir=data_dir, cache_dir=cache_dir, **synthetic_kwargs)
  base.prepare(builder)
  meta = builder.info.metadata
  where = f'{name} ({builder.data_path})'
  records = base.read_users(builder)
  # Records come back in key-hash order; put user u at index u - 1.
  users = np.array([r['user_id'] for r in records], np.int64)
  order = np.argsort(users, kind='stable')
  if not np.array_equal(users[order], np.arange(1, len(users) + 1)):
    raise DataError(f'{where}: user ids are not 1..{len(users)}')
  records = [records[i] for i in order]

  def field(key, present):
    return [r[key] for r in records] if meta[f'has_{key}'] else present

  sequences = [r['items'] for r in records]
  num_items = int(meta['num_items'])
  attributes = None
  if meta['item_attributes'] is not None:
    rows = meta['item_attributes']
    attributes = np.zeros((num_items + 1, max(map(len, rows), default=0)),
                          np.int32)
    for item, row in enumerate(rows, start=1):
      attributes[item, :len(row)] = row
  text = None
  if meta['item_text'] is not None:
    text = [''] + list(meta['item_text'])
  negatives = None
  if meta['has_sample_negatives']:
    negatives = np.stack([r['sample_negatives'] for r in records])
  ds = types.SequenceDataset(
      name=name,
      sequences=sequences,
      num_items=num_items,
      item_attributes=attributes,
      num_attributes=int(meta['num_attributes']),
      item_text=text,
      ratings=field('ratings', None),
      timestamps=field('timestamps', None),
      sample_negatives=negatives)
  _check_loaded(ds, where)
  return ds


def append_interactions(ds: types.SequenceDataset,
                        path: str) -> types.SequenceDataset:
  """`ds` with the interactions of `path` appended to its users' sequences
  (new users added after the last one); see `files.read_new_interactions`.

  The leave-one-out split of the result holds out each user's newest items,
  so a model retrained on it is validated on what happened most recently.
  Ratings and timestamps are dropped (the file has none); so are the
  sampled-evaluation negatives when users are added.
  """
  new = files.read_new_interactions(path, ds.num_users, ds.num_items)
  sequences = list(ds.sequences)
  for user in sorted(new):
    if user > len(sequences):
      sequences.append(np.zeros(0, np.int32))
    sequences[user - 1] = np.concatenate(
        [np.asarray(sequences[user - 1], np.int32), new[user]])
  return dataclasses.replace(
      ds, sequences=sequences, ratings=None, timestamps=None,
      sample_negatives=ds.sample_negatives if len(sequences) == ds.num_users
      else None)


def cold_start(ds: types.SequenceDataset, fraction: float,
               seed: int = 0) -> types.SequenceDataset:
  """A cold-start version of `ds`: a `fraction` of the catalog (drawn among
  items that are some user's last item) occurs only as test targets.

  Every other occurrence of those items is removed, so that no training
  sequence, validation target or history contains them; users left with
  fewer than 3 interactions are dropped. The leave-one-out split of the
  result then has cold test targets (never seen in training) beside warm
  ones; `cold_items` lists them for the evaluation (`test_cold`).
  """
  if not 0 < fraction < 1:
    raise ValueError(f'data.cold_fraction={fraction}: expected 0 < f < 1')
  last = np.unique([int(s[-1]) for s in ds.sequences])
  rng = np.random.default_rng([seed, 17])
  size = min(len(last), max(1, round(fraction * ds.num_items)))
  cold = np.sort(rng.choice(last, size=size, replace=False)).astype(np.int32)
  is_cold = np.zeros(ds.num_items + 1, bool)
  is_cold[cold] = True
  sequences = []
  for s in ds.sequences:
    s = np.asarray(s, np.int32)
    kept = np.append(s[:-1][~is_cold[s[:-1]]], s[-1])
    if len(kept) >= 3:
      sequences.append(kept)
  # Cold targets whose users were all dropped are cold no more.
  cold = np.intersect1d(cold, [s[-1] for s in sequences]).astype(np.int32)
  return dataclasses.replace(ds, sequences=sequences, ratings=None,
                             timestamps=None, sample_negatives=None,
                             cold_items=cold)


def _check_loaded(ds: types.SequenceDataset, where: str) -> None:
  """Cheap whole-dataset checks: a damaged cache must not load quietly."""
  lengths = np.array([len(s) for s in ds.sequences])
  flat = np.concatenate(ds.sequences)
  if lengths.min() < 1 or flat.min() < 1 or flat.max() > ds.num_items:
    raise DataError(f'{where}: empty sequence or item ids outside '
                    f'1..{ds.num_items}')
  for key in ('ratings', 'timestamps'):
    values = getattr(ds, key)
    if values is not None and not np.array_equal(
        [len(v) for v in values], lengths):
      raise DataError(f'{where}: {key} are not aligned with the items')
  if ds.item_attributes is not None and (
      ds.item_attributes.shape[0] != ds.num_items + 1):
    raise DataError(f'{where}: attribute table has '
                    f'{ds.item_attributes.shape[0]} rows')
  if ds.item_text is not None and len(ds.item_text) != ds.num_items + 1:
    raise DataError(f'{where}: {len(ds.item_text)} item texts')


def describe(ds: types.SequenceDataset) -> dict:
  """Summary counts for logging and tests.

  Args:
    ds: any dataset.

  Returns:
    A flat dict: name, users, items, interactions, avg_len, min_len,
    median_len, max_len, density (interactions / (users * items)),
    attributes (number of attribute ids), avg_attributes_per_item,
    repeat_targets (users whose last item, the leave-one-out test target,
    also occurs earlier in their own sequence), has_text, has_ratings,
    has_timestamps, has_sample_negatives.
  """
  lengths = np.array([len(s) for s in ds.sequences])
  repeat_targets = sum(int(np.any(s[:-1] == s[-1])) for s in ds.sequences)
  avg_attributes = 0.0
  if ds.item_attributes is not None:
    avg_attributes = float(
        np.count_nonzero(ds.item_attributes[1:]) / ds.num_items)
  return {
      'name': ds.name,
      'users': ds.num_users,
      'items': ds.num_items,
      'interactions': ds.num_interactions,
      'avg_len': float(lengths.mean()),
      'min_len': int(lengths.min()),
      'median_len': float(np.median(lengths)),
      'max_len': int(lengths.max()),
      'density': ds.num_interactions / (ds.num_users * ds.num_items),
      'attributes': ds.num_attributes,
      'avg_attributes_per_item': avg_attributes,
      'repeat_targets': repeat_targets,
      'has_text': ds.item_text is not None,
      'has_ratings': ds.ratings is not None,
      'has_timestamps': ds.timestamps is not None,
      'has_sample_negatives': ds.sample_negatives is not None,
  }
