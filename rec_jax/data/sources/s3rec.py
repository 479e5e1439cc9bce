"""Readers for the S3-Rec benchmark files (Beauty, Toys, Sports, Yelp, LastFM).

The files of RUCAIBox/CIKM2020-S3Rec's data/ directory (shared/data/s3rec/):
`NAME.txt` (the sequences, read by `files.read_s3rec_sequences`),
`NAME_item2attributes.json` and, for the sampled evaluation protocol,
`NAME_sample.txt` with 99 negatives per user. `read_s3rec` reads one
benchmark; `rec_jax.data.builders.s3rec` prepares it for TFDS.
"""

import numpy as np

from rec_jax.data import types
from rec_jax.data.sources import files


def _is_canonical_int(text: str) -> bool:
  """True for '7', False for '07', '+7', ' 7', '7.0' or '٧'."""
  return text.isascii() and text.isdigit() and str(int(text)) == text


def read_item2attributes(path, num_items: int) -> tuple[np.ndarray, int]:
  """Reads an S3-Rec `NAME_item2attributes.json`.

  Duplicate attribute ids of one item (LastFM lists a tag once per user who
  gave it) are dropped, keeping first occurrences: the attributes are a set.

  Args:
    path: the file, `{"item_id": [attr_id, ...], ...}`.
    num_items: item ids must lie in 1..num_items.

  Returns:
    (attributes, num_attributes): int32 [num_items + 1, A] attribute ids
    padded with 0 (row 0 and items absent from the file are all zeros), and
    the largest attribute id.

  Raises:
    DataError: missing file, invalid JSON, a key that is not an item id in
      range, or attribute ids that are not positive integers.
  """
  mapping = files.load_json(path)
  if not isinstance(mapping, dict):
    raise files.error(path,
                      'expected a JSON object {"item_id": [attr_id, ...]}')
  rows = {}
  for key, attrs in mapping.items():
    if not _is_canonical_int(key) or not 1 <= int(key) <= num_items:
      raise files.error(path, f'key is not an item id in 1..{num_items}',
                        key=key)
    if not isinstance(attrs, list) or not all(
        files.is_json_int(a) and 1 <= a <= files.INT32_MAX for a in attrs):
      raise files.error(path, 'expected a list of attribute ids in 1..'
                        f'{files.INT32_MAX} (0 is padding), got '
                        f'{str(attrs)[:200]}', key=key)
    rows[int(key)] = list(dict.fromkeys(attrs))
  width = max((len(a) for a in rows.values()), default=0)
  table = np.zeros((num_items + 1, width), np.int32)
  for item, attrs in rows.items():
    table[item, :len(attrs)] = attrs
  return table, int(table.max(initial=0))


def read_sample_negatives(path, sequences: list[np.ndarray],
                          num_items: int) -> np.ndarray:
  """Reads an S3-Rec `NAME_sample.txt`: `user_id neg_1 ... neg_99` per line.

  Upstream `generate_test.py` may repeat a negative within a row, so repeats
  are allowed; negatives inside the user's own history are not.

  Args:
    path: the file.
    sequences: the users' sequences, to check user ids and histories.
    num_items: negatives must lie in 1..num_items.

  Returns:
    int32 [num_users, 99].

  Raises:
    DataError: any malformed line, a row count or width that does not match,
      or a negative that is out of range or in the user's history.
  """
  rows = files.read_id_lines(path, what='negative item')
  if len(rows) != len(sequences):
    raise files.error(path, f'{len(rows)} rows but the sequences file has '
                      f'{len(sequences)} users')
  for lineno, (row, seq) in enumerate(zip(rows, sequences), start=1):
    if len(row) != 99:
      raise files.error(path, f'expected 99 negatives, got {len(row)}',
                        lineno=lineno)
    if row.max() > num_items:
      raise files.error(path, f'negative item {row.max()} > num_items '
                        f'{num_items}', lineno=lineno)
    seen = np.isin(row, seq)
    if seen.any():
      raise files.error(path, f'negative item {row[seen][0]} is in the '
                        'user\'s own history', lineno=lineno)
  return np.stack(rows)


def read_s3rec(name: str, sequences_path, attributes_path,
               sample_path=None) -> types.SequenceDataset:
  """Reads one S3-Rec benchmark (Beauty, Toys_and_Games, LastFM, ...).

  Args:
    name: dataset name stored in the result, e.g. 'beauty'.
    sequences_path: `NAME.txt`.
    attributes_path: `NAME_item2attributes.json`.
    sample_path: optional `NAME_sample.txt` with 99 negatives per user.

  Returns:
    The dataset; num_items is the largest item id.

  Raises:
    DataError: see the individual readers.
  """
  sequences = files.read_s3rec_sequences(sequences_path)
  num_items = int(max(s.max() for s in sequences))
  attributes, num_attributes = read_item2attributes(attributes_path, num_items)
  negatives = None
  if sample_path is not None:
    negatives = read_sample_negatives(sample_path, sequences, num_items)
  return types.SequenceDataset(
      name=name, sequences=sequences, num_items=num_items,
      item_attributes=attributes, num_attributes=num_attributes,
      sample_negatives=negatives)

