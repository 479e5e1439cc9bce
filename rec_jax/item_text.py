"""Item text and its embeddings, computed in batches and cached on disk.

The cache key is the text encoder's identity (weights, layers, length) and
the sha256 of every item's text, so a changed text, a tuned or truncated
encoder, or a new catalog computes afresh; the same ones load in
milliseconds. Files: <cache>/text_embeddings/<dataset>-<key>.npy.
"""

import functools
import hashlib
import json
import os
import time

from absl import logging
import numpy as np

from rec_jax import text_encoder


def item_texts(ds) -> list[str]:
  """One string per item id 0..num_items (0 is ''): the dataset's text, or
  for datasets with only attribute ids (the S3-Rec sets) those ids as
  words ('attribute 12 attribute 57')."""
  if ds.item_text is not None:
    return [str(t) for t in ds.item_text]
  if ds.item_attributes is not None:
    return [''] + [' '.join(f'attribute {a}' for a in row if a)
                   for row in ds.item_attributes[1:]]
  raise ValueError(f'dataset {ds.name!r} has neither item text nor '
                   'attributes: text=true needs one of them')


def cache_dir() -> str:
  root = os.environ.get('REC_JAX_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'rec_jax')
  return os.path.join(root, 'text_embeddings')


def cache_key(encoder_id: str, texts: list[str]) -> str:
  h = hashlib.sha256(encoder_id.encode())
  for t in texts:
    h.update(t.encode('utf-8'))
    h.update(b'\0')
  return h.hexdigest()[:20]


def item_embeddings(ds, *, model_path: str = '', max_length: int = 128,
                    num_layers: int = 0, random_init: bool = False,
                    encoder=None,
                    batch_size: int = 64) -> tuple[np.ndarray, dict]:
  """float32 [num_items + 1, dim] text embeddings (row 0 zeros) and stats
  ({'cached', 'seconds', 'items_per_s', 'path'}). `model_path`: a text
  model folder (e.g. from rec_jax.text_mlm); '' = all-MiniLM-L6-v2."""
  texts = item_texts(ds)
  enc = encoder
  if enc is None:
    folder = text_encoder.model_dir(model_path or None)
    with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
      layers = num_layers or json.load(f)['num_hidden_layers']
    enc_id = text_encoder.encoder_id(folder, random_init=random_init,
                                     num_layers=layers,
                                     max_length=max_length)
  else:
    enc_id = enc.model_id
  path = os.path.join(cache_dir(), f'{ds.name}-{cache_key(enc_id, texts)}.npy')
  t = time.perf_counter()
  if os.path.exists(path):
    out = np.load(path)
    return out, dict(cached=True, seconds=time.perf_counter() - t,
                     path=path, items=len(texts) - 1)
  if enc is None:
    enc = text_encoder.TextEncoder(
        folder, max_length=max_length, num_layers=num_layers or None,
        random_init=random_init)
  t = time.perf_counter()
  vecs = enc.embed(texts[1:], batch_size=batch_size, progress=True)
  seconds = time.perf_counter() - t
  out = np.concatenate([np.zeros((1, vecs.shape[1]), np.float32), vecs])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.save(path + '.tmp.npy', out)
  os.replace(path + '.tmp.npy', path)
  stats = dict(cached=False, seconds=seconds, path=path,
               items=len(texts) - 1, items_per_s=(len(texts) - 1) / seconds)
  logging.info('Embedded %d item texts in %.1f s (%.0f items/s) -> %s',
               len(texts) - 1, seconds, stats['items_per_s'], path)
  return out, stats


def item_token_states(ds, *, model_path: str = '', max_length: int = 128,
                      below: int, random_init: bool = False,
                      batch_size: int = 64):
  """Token states of every item text after the text encoder's first
  `below` blocks (the input of the blocks tuned with the recommender);
  cached like item_embeddings.

  Returns:
    (float32 [num_items + 1, T, dim] states (row 0 zeros), int32
    [num_items + 1, T] masks, a function giving the encoder (built on first
    use: for the tuned blocks' pretrained weights), stats).
  """
  texts = item_texts(ds)
  folder = text_encoder.model_dir(model_path or None)
  encoder = functools.cache(lambda: text_encoder.TextEncoder(
      folder, max_length=max_length, random_init=random_init))
  enc_id = text_encoder.encoder_id(folder, random_init=random_init,
                                   num_layers=below, max_length=max_length)
  path = os.path.join(cache_dir(), f'{ds.name}-states-'
                      f'{cache_key(enc_id, texts)}.npz')
  t = time.perf_counter()
  if os.path.exists(path):
    with np.load(path) as f:
      states, masks = f['states'], f['masks']
    return states, masks, encoder, dict(cached=True, path=path,
                                        seconds=time.perf_counter() - t)
  states, masks = encoder().token_states(texts[1:], num_layers=below,
                                         batch_size=batch_size,
                                         progress=True)
  seconds = time.perf_counter() - t
  states = np.concatenate([np.zeros_like(states[:1]), states])
  masks = np.concatenate([np.zeros_like(masks[:1]), masks])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'wb') as f:
    np.savez(f, states=states, masks=masks)
  os.replace(path + '.tmp', path)
  logging.info('Token states of %d item texts below layer %d: %s in %.1f s '
               '-> %s', len(texts) - 1, below, states.shape, seconds, path)
  return states, masks, encoder, dict(cached=False, path=path,
                                      seconds=seconds)
