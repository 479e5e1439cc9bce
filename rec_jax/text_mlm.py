r"""Domain-adaptive pretraining of the text encoder: masked language
modelling on the items' own text.

  python -m rec_jax.text_mlm --config=configs/recommended.py:dataset=scientific \
      --out=/tmp/minilm_scientific --steps=500

Starts from all-MiniLM-L6-v2 (or --init=FOLDER; --random_init trains the
same architecture from scratch, the baseline pretraining is measured
against), masks 15% of the word pieces of each item text (80% [MASK],
10% random, 10% kept) and trains the encoder with a fresh MLM head
(dense, GELU, LayerNorm, decoder tied to the word embeddings). Writes a
model folder (model.safetensors in the original key layout, config and
tokenizer files) that `--config.model.text_model=` reads in place of the
original; the item-embedding cache is keyed by the weights' sha256, so it
refreshes by itself.
"""

import json
import os
import shutil
import time

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np
import optax
import tqdm

from rec_jax import item_text
from rec_jax import text_encoder
from rec_jax import trainer


class MlmHead(nnx.Module):
  """BERT's prediction head; the decoder is the (tied) word embedding."""

  def __init__(self, hidden: int, vocab: int, eps: float, *,
               rngs: nnx.Rngs):
    self.dense = text_encoder._Dense(hidden, hidden, rngs=rngs)  # pylint: disable=protected-access
    self.norm = text_encoder._LayerNorm(hidden, eps)  # pylint: disable=protected-access
    self.bias = nnx.Param(jnp.zeros((vocab,)))

  def __call__(self, states, word_embeddings):
    h = self.norm(jax.nn.gelu(self.dense(states), approximate=False))
    return h @ word_embeddings.T + self.bias[...]


def mask_tokens(rng: np.random.Generator, ids: np.ndarray, mask: np.ndarray,
                *, special: set, mask_id: int, vocab: int,
                rate: float = 0.15, max_predictions: int = 20):
  """BERT masking. Returns (inputs, positions [B, P], labels [B, P],
  weights [B, P]); at least one position per non-empty text."""
  inputs = ids.copy()
  b = ids.shape[0]
  positions = np.zeros((b, max_predictions), np.int32)
  labels = np.zeros((b, max_predictions), np.int32)
  weights = np.zeros((b, max_predictions), np.float32)
  for i in range(b):
    cand = [j for j in np.flatnonzero(mask[i]) if ids[i, j] not in special]
    if not cand:
      continue
    n = min(max_predictions, max(1, int(round(rate * len(cand)))))
    pick = np.sort(rng.choice(cand, size=n, replace=False))
    positions[i, :n], labels[i, :n], weights[i, :n] = pick, ids[i, pick], 1
    roll = rng.random(n)
    inputs[i, pick[roll < 0.8]] = mask_id
    rand = pick[(roll >= 0.8) & (roll < 0.9)]
    inputs[i, rand] = rng.integers(0, vocab, size=len(rand))
  return inputs, positions, labels, weights


def adapt(encoder: text_encoder.TextEncoder, texts, *, steps: int,
          batch_size: int = 32, lr: float = 5e-5, seed: int = 0,
          log_every: int = 50):
  """MLM-tunes `encoder`'s params on `texts`; returns (params, losses)."""
  cfg = encoder.config
  head = MlmHead(cfg['hidden_size'], cfg['vocab_size'],
                 cfg['layer_norm_eps'], rngs=nnx.Rngs(seed))
  head_def, head_params = nnx.split(head, nnx.Param)
  params = dict(bert=encoder.params, head=head_params)
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(steps // 10, 1),
                                                steps)
  tx = optax.adamw(schedule, weight_decay=0.01)
  opt_state = tx.init(params)
  tok = encoder.tokenizer
  special = set(tok.all_special_ids)

  @jax.jit
  def step(params, opt_state, ids, mask, positions, labels, weights):
    def loss_fn(p):
      bert = nnx.merge(encoder.graphdef, p['bert'])
      states = bert(ids, mask)
      picked = jnp.take_along_axis(states, positions[..., None], axis=1)
      logits = nnx.merge(head_def, p['head'])(picked, bert.word[...])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  texts = [t for t in texts if t]
  losses = []
  bar = tqdm.trange(steps, desc='mlm', unit='step')
  for i in bar:
    batch = [texts[j] for j in rng.integers(0, len(texts), batch_size)]
    ids, mask = encoder.tokenize(batch)
    width = min(encoder.max_length, -(-ids.shape[1] // 16) * 16)
    ids = np.pad(ids, ((0, 0), (0, width - ids.shape[1])))
    mask = np.pad(mask, ((0, 0), (0, width - mask.shape[1])))
    inputs, positions, labels, weights = mask_tokens(
        rng, ids, mask, special=special, mask_id=tok.mask_token_id,
        vocab=cfg['vocab_size'])
    params, opt_state, loss = step(params, opt_state, inputs, mask,
                                   positions, labels, weights)
    if i % log_every == 0 or i == steps - 1:
      losses.append((i, float(loss)))
      bar.set_postfix(loss=f'{float(loss):.3f}')
  return params['bert'], losses


def save_folder(encoder: text_encoder.TextEncoder, params, out: str,
                meta: dict) -> str:
  """Writes a model folder that `TextEncoder(out)` loads."""
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  flat = dict(nnx.to_flat_state(params))
  tensors = {}
  for ours, (key, transpose) in text_encoder._torch_names(  # pylint: disable=protected-access
      encoder.config['num_hidden_layers']).items():
    value = np.asarray(flat[ours][...], np.float32)
    tensors[key] = np.ascontiguousarray(value.T if transpose else value)
  tmp = out + '.partial'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  st.save_file(tensors, os.path.join(tmp, 'model.safetensors'))
  for f in text_encoder.FILES:
    if f != 'model.safetensors':
      shutil.copy(os.path.join(encoder.folder, f), os.path.join(tmp, f))
  with open(os.path.join(tmp, 'adaptation.json'), 'w', encoding='utf-8') as f:
    json.dump(meta, f, indent=2)
  shutil.rmtree(out, ignore_errors=True)
  os.replace(tmp, out)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _FLAGS['config'].value
  ds, _ = trainer.load_data(config)
  texts = item_text.item_texts(ds)[1:]
  enc = text_encoder.TextEncoder.pretrained(
      _FLAGS['init'].value or None,
      max_length=config.model.text_max_length,
      random_init=_FLAGS['random_init'].value, seed=config.seed)
  t = time.perf_counter()
  params, losses = adapt(enc, texts, steps=_FLAGS['steps'].value,
                         batch_size=_FLAGS['batch_size'].value,
                         lr=_FLAGS['lr'].value, seed=config.seed)
  meta = dict(dataset=ds.name, steps=_FLAGS['steps'].value,
              batch_size=_FLAGS['batch_size'].value, lr=_FLAGS['lr'].value,
              seconds=time.perf_counter() - t, losses=losses,
              init='random' if enc.random_init else enc.folder)
  out = save_folder(enc, params, os.path.abspath(_FLAGS['out'].value), meta)
  logging.info('MLM loss %.3f -> %.3f; wrote %s', losses[0][1],
               losses[-1][1], out)
  print(out)


_FLAGS = {}

if __name__ == '__main__':
  _FLAGS['config'] = config_flags.DEFINE_config_file(
      'config', None, 'Recipe config (for the dataset).', lock_config=False)
  _FLAGS['out'] = flags.DEFINE_string('out', None, 'Model folder to write.')
  _FLAGS['init'] = flags.DEFINE_string(
      'init', '', 'Start from this model folder (default all-MiniLM-L6-v2).')
  _FLAGS['random_init'] = flags.DEFINE_bool(
      'random_init', False, 'Train the same architecture from random '
      'initialisation instead (the from-scratch baseline).')
  _FLAGS['steps'] = flags.DEFINE_integer('steps', 500, 'MLM steps.')
  _FLAGS['batch_size'] = flags.DEFINE_integer('batch_size', 32, 'Texts.')
  _FLAGS['lr'] = flags.DEFINE_float('lr', 5e-5, 'Peak learning rate.')
  flags.mark_flags_as_required(['config', 'out'])
  app.run(main)
