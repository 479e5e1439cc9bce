"""Masked language modelling on item text adapts the text encoder; the
adapted folder loads back and re-keys the embedding cache."""

import json
import os

import numpy as np

from rec_jax import text_encoder
from rec_jax import text_mlm

TEXTS = ['Digital caliper, stainless steel, 150 mm, LCD display.',
         'Nitrile gloves, powder free, large, box of 100.',
         'Borosilicate glass beaker set, 50 to 1000 ml.',
         'Lab thermometer, -10 to 110 C, red spirit.'] * 4


def test_masking_follows_bert():
  rng = np.random.default_rng(0)
  ids = np.tile(np.arange(200, 240), (200, 1)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 101, 102
  mask = np.ones_like(ids)
  inputs, pos, labels, w = text_mlm.mask_tokens(
      rng, ids, mask, special={101, 102}, mask_id=103, vocab=30522,
      rate=0.15, max_predictions=20)
  assert (w.sum(1) == 6).all()  # 15% of 38 maskable tokens
  picked = np.take_along_axis(inputs, pos, 1)[w > 0]
  assert 0.75 < np.mean(picked == 103) < 0.85  # 80% [MASK]
  kept = np.take_along_axis(ids, pos, 1)[w > 0] == picked
  assert 0.05 < np.mean(kept) < 0.15          # 10% unchanged
  assert (np.take_along_axis(ids, pos, 1)[w > 0] == labels[w > 0]).all()
  assert not np.isin(pos[w > 0], [0, 39]).any()  # never [CLS] / [SEP]


def test_mlm_lowers_loss_and_the_adapted_model_loads(tmp_path):
  enc = text_encoder.TextEncoder.pretrained(max_length=32)
  params, losses = text_mlm.adapt(enc, TEXTS, steps=40, batch_size=8,
                                  lr=2e-4, seed=0, log_every=1)
  first = np.mean([l for _, l in losses[:5]])
  last = np.mean([l for _, l in losses[-5:]])
  assert last < 0.7 * first, (first, last)
  out = text_mlm.save_folder(enc, params, str(tmp_path / 'adapted'),
                             dict(steps=40))
  adapted = text_encoder.TextEncoder(out, max_length=32)
  assert json.load(open(os.path.join(out, 'adaptation.json')))['steps'] == 40
  before, after = enc.embed(TEXTS[:4]), adapted.embed(TEXTS[:4])
  assert after.shape == before.shape and not np.allclose(after, before)
  assert adapted.model_id != enc.model_id  # the embedding cache re-keys
