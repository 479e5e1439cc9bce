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
import jax
import numpy as np

from rec_jax import text_encoder
from rec_jax.models import text as text_lib


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


# ------------------------------------------- into the model's params ----


def _load_weights(new, old, sh, where: str):
  """`old` (a params subtree) with the leaves of `new` put in their place,
  on old's shardings and dtypes; leaves only `old` has (LoRA adapters the
  fine-tune adds) stay."""
  if not isinstance(new, dict):
    if new.shape != old.shape:
      raise ValueError(f'{where}: weight {new.shape} does not fit the '
                       f'model\'s {old.shape}')
    return jax.device_put(np.asarray(new, old.dtype), sh)
  missing = sorted(set(new) - set(old))
  if missing:
    raise ValueError(f'{where}: the model has no {missing}')
  return {k: _load_weights(new[k], v, sh[k], f'{where}/{k}') if k in new
          else v for k, v in old.items()}


def fill_params(model_cfg, ds, params, shardings, *,
                load_layers: bool = True):
  """Writes the items' text inputs into the model's constant parameters
  when it reads item text: the text embeddings (encoder/text/features), or
  with model.text_tune_layers=k the token states entering the top k text
  blocks (encoder/text/hidden, token_mask) and, when `load_layers`, those
  blocks' pretrained weights (False: they came from a checkpoint).
  Returns params."""
  m = model_cfg
  if not m.text_dim:
    return params
  text = dict(params['encoder']['text'])
  sh = shardings['encoder']['text']
  k = m.text_tune_layers
  if k:
    depth = text_lib.text_layers_in_use(m)
    states, masks, enc, stats = item_token_states(
        ds, model_path=m.text_model, max_length=m.text_max_length,
        below=depth - k, random_init=m.text_random_init)
    target = text['hidden']
    if states.shape[1] > target.shape[1] or states.shape[2] != target.shape[2]:
      raise ValueError(f'token states {states.shape} do not fit '
                       f'encoder/text/hidden {target.shape}')
    full = np.zeros(target.shape, np.float32)
    full[:len(states), :states.shape[1]] = states
    mask = np.zeros(text['token_mask'].shape, np.float32)
    mask[:len(masks), :masks.shape[1]] = masks
    text['hidden'] = jax.device_put(full.astype(target.dtype), sh['hidden'])
    text['token_mask'] = jax.device_put(mask, sh['token_mask'])
    if load_layers:
      layers = dict(text['layers'])
      for i in range(k):
        layers[i] = _load_weights(enc().layer_params(depth - k + i),
                                  layers[i], sh['layers'][i],
                                  f'text layer {depth - k + i}')
      text['layers'] = layers
    logging.info('Item text: token states of %d items below text layer %d '
                 '(%s, %s, %.1f s); top %d layers tune%s.', ds.num_items,
                 depth - k, 'x'.join(map(str, states.shape)),
                 'from cache' if stats['cached'] else 'computed',
                 stats['seconds'], k,
                 ' from the pretrained weights' if load_layers else '')
  else:
    feats, stats = item_embeddings(
        ds, model_path=m.text_model, max_length=m.text_max_length,
        num_layers=m.text_layers, random_init=m.text_random_init)
    target = text['features']
    if feats.shape[1] != target.shape[1]:
      raise ValueError(f'model.text_dim={target.shape[1]} but the text '
                       f'encoder gives {feats.shape[1]}-d embeddings')
    full = np.zeros(target.shape, np.float32)
    full[:len(feats)] = feats
    logging.info('Item text features: %d items, %s (%.1f s).',
                 ds.num_items, 'from cache' if stats['cached'] else
                 'computed', stats['seconds'])
    text['features'] = jax.device_put(full.astype(target.dtype),
                                      sh['features'])
  params = dict(params)
  params['encoder'] = dict(params['encoder'])
  params['encoder']['text'] = text
  return params
