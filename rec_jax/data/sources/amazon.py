"""Readers for Amazon Industrial & Scientific (sequences plus item text).

The LC-Rec style files of Nishikata97/CollisionGenRec, as in
shared/data/amazon-scientific/: `Scientific.item.json` (title, brand,
categories and description per item) with either the derived S3-Rec style
`Scientific.txt` (offline) or the upstream 0-based `Scientific.inter.json`
(online). `read_scientific` reads them; `rec_jax.data.builders.amazon`
prepares them for TFDS.
"""

import numpy as np

from rec_jax.data import types
from rec_jax.data.sources import files


def read_inter_json(path) -> list[np.ndarray]:
  """Reads an LC-Rec style `NAME.inter.json` (0-based) as 1-based sequences.

  Args:
    path: `{"user_idx": [item_idx, ...]}` with users 0..N-1.

  Returns:
    One int32 array per user with every item id + 1 (user u -> index u),
    i.e. the S3-Rec numbering of `Scientific.txt`.

  Raises:
    DataError: missing file, invalid JSON, users not 0..N-1 or empty or
      non-integer item lists.
  """
  mapping = files.load_json(path)
  if not isinstance(mapping, dict):
    raise files.error(path,
                      'expected a JSON object {"user_idx": [item_idx, ...]}')
  sequences = []
  for user in range(len(mapping)):
    key = str(user)
    if key not in mapping:
      raise files.error(path, f'users must be "0".."{len(mapping) - 1}"',
                        key=key)
    items = mapping[key]
    if not isinstance(items, list) or not items or not all(
        files.is_json_int(i) and 0 <= i < files.INT32_MAX for i in items):
      raise files.error(path, 'expected a non-empty list of item indices >= 0',
                        key=key)
    sequences.append(np.array(items, np.int32) + 1)
  if not sequences:
    raise files.error(path, 'file is empty')
  return sequences


def _sentence(text: str) -> str:
  text = text.strip()
  return text if not text or text[-1] in '.!?' else text + '.'


def amazon_item_text(meta: dict) -> str:
  """Item text from an Amazon item record: title, brand, categories, text."""
  parts = [_sentence(meta['title'])]
  if meta['brand'].strip():
    parts.append(_sentence(f'Brand: {meta["brand"]}'))
  if meta['categories'].strip():
    parts.append(_sentence(f'Categories: {meta["categories"]}'))
  parts.append(_sentence(meta['description']))
  return ' '.join(p for p in parts if p)


def read_amazon_item_json(path, num_items: int) -> list[str]:
  """Reads an LC-Rec style `NAME.item.json` as 1-based item text.

  Args:
    path: `{"item_idx": {"title", "description", "brand", "categories"}}`,
      0-based: item k of the S3-Rec numbering is key str(k - 1).
    num_items: keys must be exactly "0".."num_items - 1".

  Returns:
    num_items + 1 strings, '' first.

  Raises:
    DataError: missing file, invalid JSON, missing or extra keys, missing
      fields, an empty title.
  """
  mapping = files.load_json(path)
  if not isinstance(mapping, dict):
    raise files.error(path, 'expected a JSON object {"item_idx": {...}}')
  if len(mapping) != num_items:
    extra = sorted(set(mapping) - {str(k) for k in range(num_items)})
    raise files.error(path, f'{len(mapping)} items but the sequences have '
                      f'{num_items}; unexpected keys {extra[:5]}')
  texts = ['']
  for item in range(num_items):
    key = str(item)
    meta = mapping.get(key)
    if not isinstance(meta, dict):
      raise files.error(path, 'missing item record', key=key)
    for field in ('title', 'description', 'brand', 'categories'):
      if not isinstance(meta.get(field), str):
        raise files.error(path, f'field {field!r} missing or not a string',
                          key=key)
    if not meta['title'].strip():
      raise files.error(path, 'empty title', key=key)
    texts.append(amazon_item_text(meta))
  return texts


def read_scientific(item_json_path, *, sequences_path=None,
                    inter_json_path=None) -> types.SequenceDataset:
  """Reads Amazon Scientific: sequences plus `Scientific.item.json` text.

  Exactly one sequence source is given: the derived S3-Rec style
  `Scientific.txt` (offline) or the upstream 0-based `Scientific.inter.json`
  (online), which is shifted by +1 to give the same numbering.

  Args:
    item_json_path: `Scientific.item.json`.
    sequences_path: `Scientific.txt`.
    inter_json_path: `Scientific.inter.json`.

  Returns:
    The dataset with item text and no attributes.

  Raises:
    DataError: see the individual readers; also when the item ids are not
      exactly 1..M.
  """
  if (sequences_path is None) == (inter_json_path is None):
    raise ValueError('give exactly one of sequences_path, inter_json_path')
  if sequences_path is not None:
    source, sequences = (sequences_path,
                         files.read_s3rec_sequences(sequences_path))
  else:
    source, sequences = inter_json_path, read_inter_json(inter_json_path)
  num_items = int(max(s.max() for s in sequences))
  used = np.unique(np.concatenate(sequences))
  if used.size != num_items:
    raise files.error(source, 'item ids are not contiguous: '
                      f'{used.size} distinct ids, largest {num_items}')
  texts = read_amazon_item_json(item_json_path, num_items)
  return types.SequenceDataset(
      name='scientific', sequences=sequences, num_items=num_items,
      item_text=texts)
