"""Item text: the embedding cache, the text adaptor (transductive and
inductive), frozen text features, and text=true end to end."""

import json
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from rec_jax import config_lib
from rec_jax import item_text
from rec_jax import peft
from rec_jax.data import types
from rec_jax.models import sasrec


class FakeEncoder:
  model_id = 'fake-1'

  def __init__(self):
    self.calls = 0

  def embed(self, texts, **_):
    self.calls += 1
    return np.stack([np.full(4, len(t), np.float32) for t in texts])


def _ds(texts):
  return types.SequenceDataset(name='toy', sequences=[np.array([1, 2])],
                               num_items=len(texts), item_text=[''] + texts)


def test_embeddings_are_cached_by_encoder_and_text(tmp_path, monkeypatch):
  monkeypatch.setenv('REC_JAX_CACHE_DIR', str(tmp_path))
  enc = FakeEncoder()
  first, stats = item_text.item_embeddings(_ds(['ab', 'cde']), encoder=enc)
  assert not stats['cached'] and stats['items_per_s'] > 0
  np.testing.assert_array_equal(first, [[0] * 4, [2] * 4, [3] * 4])
  again, stats = item_text.item_embeddings(_ds(['ab', 'cde']), encoder=enc)
  assert stats['cached'] and enc.calls == 1
  np.testing.assert_array_equal(first, again)
  item_text.item_embeddings(_ds(['ab', 'cdef']), encoder=enc)  # new text
  enc.model_id = 'fake-2'                                      # new weights
  item_text.item_embeddings(_ds(['ab', 'cde']), encoder=enc)
  assert enc.calls == 3


def test_attribute_ids_become_words():
  ds = types.SequenceDataset(
      name='a', sequences=[np.array([1])], num_items=2,
      item_attributes=np.array([[0, 0], [3, 7], [5, 0]], np.int32),
      num_attributes=7)
  assert item_text.item_texts(ds) == ['', 'attribute 3 attribute 7',
                                      'attribute 5']
  with pytest.raises(ValueError, match='neither item text nor attributes'):
    item_text.item_texts(types.SequenceDataset(
        name='b', sequences=[np.array([1])], num_items=1))


def _encoder(mode):
  enc = sasrec.Encoder(
      num_items=6, max_len=4, embed_dim=8, num_layers=1, num_heads=2,
      mlp_dim=16, causal=True, vocab_multiple=8, text_dim=5,
      text_mode=mode, rngs=nnx.Rngs(0))
  feats = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
  feats[3] = feats[2]  # items 2 and 3 share their text
  enc.text.features[...] = jnp.asarray(feats)
  return enc


def test_inductive_items_are_their_text():
  enc = _encoder('inductive')
  table = np.asarray(enc.item_table())
  np.testing.assert_allclose(table[2], table[3])
  enc.item_embed[...] = enc.item_embed[...] + 1.0  # IDs matter only for MASK
  moved = np.asarray(enc.item_table())
  np.testing.assert_allclose(moved[1:7], table[1:7])
  assert not np.allclose(moved[enc.mask_id], table[enc.mask_id])
  trans = _encoder('transductive')
  np.testing.assert_allclose(
      np.asarray(trans.item_table()),
      np.asarray(trans.item_embed[...] + trans.text(jnp.float32)), rtol=1e-6)
  with pytest.raises(ValueError, match="text_mode='both'"):
    sasrec.Encoder(num_items=6, max_len=4, embed_dim=8, num_layers=1,
                   num_heads=2, mlp_dim=16, causal=True, text_dim=5,
                   text_mode='both', rngs=nnx.Rngs(0))


def test_text_features_never_train():
  params = nnx.to_pure_dict(nnx.state(_encoder('transductive'), nnx.Param))
  params = {'encoder': params}
  assert not peft.trainable('encoder/text/features', 'full', 1)
  assert peft.trainable('encoder/text/proj', 'full', 1)
  import optax  # pylint: disable=g-import-not-at-top
  tx = peft.wrap(optax.adam(0.1), params, 'full', 1)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert not np.any(np.asarray(updates['encoder']['text']['features']))
  assert np.all(np.asarray(updates['encoder']['text']['proj']) != 0)


def test_cold_start_split_holds_items_out_of_training():
  from rec_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from rec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  import conftest  # pylint: disable=g-import-not-at-top
  config = conftest.load_config('sasrec', 'smoke')
  ds = datasets.load('synthetic', **dict(config.data.synthetic))
  cold_ds = datasets.cold_start(ds, 0.2, seed=0)
  cold = set(cold_ds.cold_items.tolist())
  assert 0 < len(cold) <= round(0.2 * ds.num_items)
  split = pipeline.leave_one_out(cold_ds)
  seen = set()
  for h in split.test_history:
    seen |= set(h.tolist())
  assert not cold & seen and not cold & set(split.valid_target.tolist())
  assert cold <= set(split.test_target.tolist())
  with pytest.raises(ValueError, match='cold_fraction=1.5'):
    datasets.cold_start(ds, 1.5)


def test_text_recipe_end_to_end_with_cold_items(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'rec_jax.main',
       '--config=configs/recommended.py:smoke,pretrain=false,text=true',
       '--config.model.text_mode=inductive', '--config.data.cold_fraction=0.2',
       f'--workdir={tmp_path}', '--config.checkpoint.async_save=false'],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads((tmp_path / 'results.json').read_text())
  assert 'Item text features: 60 items' in proc.stderr
  assert r['test']['ndcg@10'] > 0.05
  assert set(r['test_cold']) == set(r['test'])
  assert r['test_cold_users'] > 0 and r['test_warm_users'] > 0
  assert r['test_cold_users'] + r['test_warm_users'] == r['num_users']


def _tuned_config(**model):
  import conftest  # pylint: disable=g-import-not-at-top
  config = conftest.load_config('recommended',
                                'smoke,pretrain=false,text=true')
  config.model.update(**{'text_tune_layers': 1, 'text_max_length': 8,
                         **model})
  return config


def _initialised(config):
  """(dataset, mesh, graphdef, abstract params, params with the item text
  filled in) of the fine-tune model of `config` at initialisation."""
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top
  ds, _ = trainer.load_data(config)
  mesh = sharding.make_mesh(config.mesh)
  graphdef, abs_params, param_sh = finetune.abstract_model(
      config, ds.num_items, mesh)
  params = finetune.init_params(config, ds.num_items, mesh, param_sh, 0)
  params = item_text.fill_params(config.model, ds, params, param_sh)
  return ds, mesh, graphdef, abs_params, params


def test_tuned_text_layers_start_at_the_frozen_features():
  """model.text_tune_layers=1: the top MiniLM block runs inside the
  recommender on cached token states; at initialisation it reproduces the
  frozen text features exactly, its gradient is finite (table padding
  rows included) and it trains while the token states never do."""
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  config = _tuned_config()
  ds, mesh, graphdef, abs_params, params = _initialised(config)
  frozen, _ = item_text.item_embeddings(ds, max_length=8)
  model = nnx.merge(graphdef, params)
  tuned = np.asarray(model.encoder.text.embeddings(jnp.float32))
  np.testing.assert_allclose(tuned[:len(frozen)], frozen, atol=2e-5)
  assert not np.any(tuned[len(frozen):])  # table rows that are no item

  def loss(p):
    return jnp.sum(nnx.merge(graphdef, p).encoder.item_table()[1:7] ** 2)

  grads = jax.grad(loss)(params)
  layer = grads['encoder']['text']['layers'][0]
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.abs(np.asarray(layer['up']['kernel'])).max() > 0
  for key in ('hidden', 'token_mask'):
    assert not peft.trainable(f'encoder/text/{key}', 'full', 1)
  assert peft.trainable('encoder/text/layers/0/up/kernel', 'full', 1)
  trainable, total = peft.count(abs_params, 'full', 1)
  assert trainable == total  # the token states are data, not parameters
  with pytest.raises(ValueError, match='text_tune_layers=7'):
    finetune.abstract_model(_tuned_config(text_tune_layers=7), ds.num_items,
                            mesh)


def test_lora_on_tuned_text_layers():
  """finetune=lora with model.text_tune_layers=1: the tuned text block gets
  rank-8 adapters on its six projections, which train while its weights
  stay frozen; fresh adapters keep the block as loaded, and merged into the
  weights they give the same item text embeddings."""
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  config = _tuned_config()
  config_lib.override(config, peft.overrides('lora'))
  ds, mesh, graphdef, abs_params, params = _initialised(config)
  layer = params['encoder']['text']['layers'][0]
  projections = ('query', 'key', 'value', 'out', 'up', 'down')
  for name in projections:
    assert layer[name]['lora_kernel_a'].shape == (
        layer[name]['kernel'].shape[0], 8)
    assert not np.any(np.asarray(layer[name]['lora_kernel_b']))
    assert peft.trainable(f'encoder/text/layers/0/{name}/lora_kernel_a',
                          'lora', 1)
    assert not peft.trainable(f'encoder/text/layers/0/{name}/kernel', 'lora',
                              1)
  frozen, _ = item_text.item_embeddings(ds, max_length=8)
  tuned = np.asarray(nnx.merge(graphdef, params).encoder.text.embeddings(
      jnp.float32))
  np.testing.assert_allclose(tuned[:len(frozen)], frozen, atol=2e-5)
  trainable, total = peft.count(abs_params, 'lora', config.model.num_layers)
  text_lora = sum(8 * (a + b) for a, b in [(384, 384)] * 4 +
                  [(384, 1536), (1536, 384)])
  assert text_lora < trainable < 0.05 * total

  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + rng.normal(size=x.shape).astype(np.float32) * 0.05
      if 'lora_kernel' in str(p[-1]) else x, jax.device_get(params))
  adapted = np.asarray(nnx.merge(graphdef, params).encoder.text.embeddings(
      jnp.float32))
  assert np.abs(adapted - tuned).max() > 1e-3  # the adapters act
  merged = peft.merge_lora(params, scale=config.model.peft.lora_alpha /
                           config.model.peft.lora_rank)
  plain = _tuned_config()
  plain_graph, _, plain_sh = finetune.abstract_model(plain, ds.num_items,
                                                     mesh)
  text = jax.tree.map(jnp.asarray, merged['encoder']['text'])
  model = nnx.merge(plain_graph, finetune.init_params(
      plain, ds.num_items, mesh, plain_sh, 0))
  nnx.update(model.encoder.text, text)
  np.testing.assert_allclose(
      np.asarray(model.encoder.text.embeddings(jnp.float32)), adapted,
      atol=1e-5)


def test_tuned_text_layers_carry_from_pretraining_to_fine_tuning(tmp_path):
  """Pretraining tunes the top text block with the recommender; the
  fine-tune restores the tuned block (not the LM's weights) and trains on."""
  proc = subprocess.run(
      [sys.executable, '-m', 'rec_jax.main',
       '--config=configs/recommended.py:smoke,text=true',
       '--config.model.text_tune_layers=1',
       '--config.model.text_max_length=8', '--config.model.vocab_multiple=8',
       '--config.pretrain.num_epochs=1', '--config.pretrain.batch_size=32',
       '--config.pretrain.objectives.contrastive=0',
       '--config.finetune.num_epochs=1',
       f'--workdir={tmp_path}', '--config.checkpoint.async_save=false'],
      cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  logs = [l for l in proc.stderr.splitlines() if 'top 1 layers tune' in l]
  assert len(logs) == 2, logs
  assert 'from the pretrained weights' in logs[0]  # pretraining: from MiniLM
  assert 'from the pretrained weights' not in logs[1]  # fine-tune: restored
  r = json.loads((tmp_path / 'results.json').read_text())
  assert r['test']['ndcg@10'] > 0.0 and r['trainable_params'] > 1_700_000
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from rec_jax import checkpoints  # pylint: disable=g-import-not-at-top
  from rec_jax import text_encoder  # pylint: disable=g-import-not-at-top
  lm = text_encoder.TextEncoder.pretrained(max_length=8).layer_params(5)
  for stage in ('pretrain', 'finetune'):
    saved = ocp.PyTreeCheckpointer().restore(
        checkpoints.resolve_params_dir(str(tmp_path / stage)))
    layer = saved['encoder']['text']['layers']
    layer = layer.get('0', layer.get(0))
    delta = np.abs(np.asarray(layer['up']['kernel']) -
                   np.asarray(lm['up']['kernel'])).max()
    assert delta > 1e-4, stage  # the block moved away from MiniLM's
  # The served artifact holds the tuned block's output as frozen features
  # and recommends what the in-process model ranks.
  import serve_test  # pylint: disable=g-import-not-at-top
  model, _ = serve_test._same_top_k_as_evaluation(str(tmp_path))  # pylint: disable=protected-access
  cfg = json.loads((tmp_path / 'export' / 'config.json').read_text())
  assert cfg['model']['text_tune_layers'] == 0
  assert model.manifest['num_params'] < 1_000_000  # no text block, no states
