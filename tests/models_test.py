"""Sequence encoder: shapes, logical shardings, causality, packing."""

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
import numpy as np
import pytest

from rec_jax import config_lib
from rec_jax import finetune
from rec_jax import sharding
from rec_jax import models


def _config(causal=True, positions='absolute'):
  cfg = config_lib.ml_collections.ConfigDict()
  cfg.model = config_lib.model_config(
      name='sasrec', causal=causal, max_len=8, embed_dim=16, num_layers=2,
      num_heads=2, mlp_dim=32, positions=positions, dropout_rate=0.2,
      attention_dropout_rate=0.2)
  cfg.axis_rules = config_lib.axis_rules()
  return cfg


def _model(causal=True, num_items=30, positions='absolute'):
  return models.build(_config(causal, positions).model, num_items,
                        rngs=nnx.Rngs(0))


def _randomise(model, name, seed=1):
  """Gives a zero-initialised parameter random values (a trained one)."""
  p = getattr(model.encoder, name)
  p[...] = jax.random.normal(jax.random.key(seed), p.shape)


@pytest.mark.parametrize('positions', ['none', 'relative'])
def test_relative_and_no_positions_ignore_where_a_sequence_sits(positions):
  """With relative (or no) positions, a sequence's outputs are the same
  wherever it sits in the window, as every prediction sees at evaluation;
  with absolute positions they are not. The relative bias takes part."""
  model = _model(positions=positions)
  if positions == 'relative':
    _randomise(model, 'rel_bias')
  items = jnp.array([[3, 4, 5, 9, 0, 0, 0, 0]])
  seg = (items > 0).astype(jnp.int32)
  h_start = model.encoder(items, jnp.arange(8)[None], seg)
  h_end = model.encoder(items, jnp.arange(8)[None] + 4, seg)
  np.testing.assert_allclose(h_start[0, :4], h_end[0, :4], atol=1e-5)
  absolute = _model()
  assert not np.allclose(
      absolute.encoder(items, jnp.arange(8)[None], seg)[0, :4],
      absolute.encoder(items, jnp.arange(8)[None] + 4, seg)[0, :4])
  if positions == 'relative':  # the bias changes the outputs.
    plain = _model(positions='none')
    assert not np.allclose(h_start[0, :4], plain.encoder(
        items, jnp.arange(8)[None], seg)[0, :4])
  else:
    assert not hasattr(model.encoder, 'pos_embed')
  with pytest.raises(ValueError, match='model.positions'):
    _model(positions='rotary')


def test_shapes_and_vocab_padding():
  model = _model()
  items = jnp.array([[0, 0, 3, 4, 5, 6, 7, 8]])
  h = model.encoder(items, jnp.arange(8)[None], (items > 0).astype(jnp.int32))
  assert h.shape == (1, 8, 16)
  logits = model.encoder.item_logits(h[:, -1])
  assert logits.shape == (1, 128)  # 30 items + pad + mask -> 128 rows.
  assert np.isneginf(logits[0, 0]) and np.isneginf(logits[0, 31])
  assert np.isfinite(logits[0, 1:31]).all()


def test_partition_specs_on_4x2_mesh():
  mesh = sharding.make_mesh(config_lib.mesh_config(data=4, model=2))
  cfg = _config()
  _, abs_params, shardings = finetune.abstract_model(cfg, 30, mesh)
  enc = shardings['encoder']
  assert enc['item_embed'].spec == P('model', 'fsdp')
  assert enc['blocks'][0]['attn']['query'].spec == P('fsdp', 'model', None)
  assert enc['blocks'][0]['mlp']['wi'].spec == P('fsdp', 'model')
  assert enc['blocks'][0]['mlp']['wo'].spec == P('model', 'fsdp')
  params = finetune.init_params(cfg, 30, mesh, shardings, seed=0)
  table = params['encoder']['item_embed']
  assert table.shape == abs_params['encoder']['item_embed'].shape
  # The item table is split in two along the vocab axis, never whole.
  assert {s.data.shape for s in table.addressable_shards} == {(64, 16)}


def test_causal_attention_ignores_the_future():
  model = _model(causal=True)
  a = jnp.array([[1, 2, 3, 4, 5, 6, 7, 8]])
  b = a.at[0, 5:].set(jnp.array([9, 10, 11]))
  pos, seg = jnp.arange(8)[None], jnp.ones_like(a)
  ha, hb = model.encoder(a, pos, seg), model.encoder(b, pos, seg)
  np.testing.assert_allclose(ha[0, :5], hb[0, :5], atol=1e-6)
  assert not np.allclose(ha[0, 5:], hb[0, 5:])
  bidir = _model(causal=False)
  assert not np.allclose(bidir.encoder(a, pos, seg)[0, :5],
                         bidir.encoder(b, pos, seg)[0, :5])


@pytest.mark.parametrize('positions', ['absolute', 'relative'])
@pytest.mark.parametrize('causal', [True, False])
def test_packed_rows_equal_separate_sequences(causal, positions):
  model = _model(causal=causal, positions=positions)
  if positions == 'relative':
    _randomise(model, 'rel_bias')
  # Two sequences packed in one row, right-aligned positions each.
  packed = jnp.array([[3, 4, 5, 9, 10, 11, 12, 0]])
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0]])
  pos = jnp.array([[5, 6, 7, 4, 5, 6, 7, 0]])
  h = model.encoder(packed, pos, seg)
  alone = jnp.array([[0, 0, 0, 0, 0, 3, 4, 5], [0, 0, 0, 0, 9, 10, 11, 12]])
  h_alone = model.encoder(alone, jnp.arange(8)[None].repeat(2, 0),
                          (alone > 0).astype(jnp.int32))
  np.testing.assert_allclose(h[0, :3], h_alone[0, 5:], atol=1e-5)
  np.testing.assert_allclose(h[0, 3:7], h_alone[1, 4:], atol=1e-5)


def test_dropout_only_with_a_key():
  model = _model()
  items = jnp.array([[1, 2, 3, 4, 5, 6, 7, 8]])
  pos, seg = jnp.arange(8)[None], jnp.ones_like(items)
  det = model.encoder(items, pos, seg)
  np.testing.assert_array_equal(det, model.encoder(items, pos, seg))
  drop = model.encoder(items, pos, seg, key=jax.random.key(1))
  assert not np.allclose(det, drop)


def test_dropout_from_data_follows_interactions_per_item():
  rule = config_lib.dropout_from_data
  # Sparse catalogues (Amazon, LastFM: 10-15 training interactions per
  # item; the smoke synthetic set: 14) keep 0.5; ML-1M (289) gets 0.2.
  for per_item in (1, 12.7, 30):
    assert rule(per_item) == 0.5
  for per_item in (289.1, 300, 10_000):
    assert rule(per_item) == 0.2
  # Log-linear between, in steps of 0.05: 0.5 - 0.3 * log10(x / 30).
  assert rule(30 * 10 ** 0.5) == 0.35
  assert rule(58.0) == 0.4  # ml-100k: 0.414
  with pytest.raises(ValueError, match='must be > 0'):
    rule(0.0)


def test_dropout_from_data_is_set_when_the_data_load():
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top
  import conftest  # pylint: disable=g-import-not-at-top
  config = conftest.load_config('sasrec', 'smoke')
  assert config.model.dropout_rate == config_lib.FROM_DATA
  assert config_lib.from_data_keys(config) == ['model.dropout_rate',
                                               'model.attention_dropout_rate']
  # Built before the data are loaded, the model evaluates, but no training
  # step runs with an unset rate.
  model = models.build(config.model, 30, rngs=nnx.Rngs(0))
  items = jnp.array([[1, 2, 3, 4]])
  pos, seg = jnp.arange(4)[None], jnp.ones_like(items)
  model.encoder(items, pos, seg)
  with pytest.raises(ValueError, match='from the data'):
    model.encoder(items, pos, seg, key=jax.random.key(0))
  unresolved = config
  # 128 users, 60 items: ~14 per item.
  config = trainer.resolved(config, trainer.load_data(config))
  assert unresolved.model.dropout_rate == config_lib.FROM_DATA  # a copy.
  assert config.model.dropout_rate == config.model.attention_dropout_rate
  assert config.model.dropout_rate == 0.5
  assert not config_lib.from_data_keys(config)
  # A dense catalogue: 600 users with 20-30 of 40 items, ~345 per item.
  dense = conftest.load_config('sasrec', 'smoke')
  dense.data.synthetic.update(num_users=600, num_items=40, min_len=20,
                              max_len=30)
  dense.model.attention_dropout_rate = 0.3  # given: kept.
  dense = trainer.resolved(dense, trainer.load_data(dense))
  assert dense.model.dropout_rate == 0.2
  assert dense.model.attention_dropout_rate == 0.3
  with pytest.raises(ValueError, match=r'model.dropout_rate=1.5'):
    bad = _config().model
    bad.dropout_rate = 1.5
    models.build(bad, 30, rngs=nnx.Rngs(0))


@pytest.mark.parametrize('causal', [True, False])
def test_packed_evaluation_equals_left_padded(causal):
  from rec_jax import evaluate  # pylint: disable=g-import-not-at-top
  from rec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  cfg = _config(causal)
  mesh = sharding.make_mesh(config_lib.mesh_config(data=4, model=2))
  graphdef, _, shardings = finetune.abstract_model(cfg, 30, mesh)
  params = finetune.init_params(cfg, 30, mesh, shardings, seed=0)
  rng = np.random.default_rng(0)
  hist = [rng.integers(1, 31, n) for n in rng.integers(1, 15, 21)]
  mask_id = None if causal else 31
  ev = evaluate.Evaluator(graphdef=graphdef, mesh=mesh, max_len=8,
                          mask_id=mask_id, batch_size=8)
  users = ev.user_vectors(params, hist)
  padded = pipeline.eval_inputs(hist, 8, mask_id=mask_id)
  model = nnx.merge(graphdef, params)
  ref = model.encoder(padded['inputs'], padded['positions'],
                      padded['segment_ids'])[:, -1]
  np.testing.assert_allclose(users, ref, atol=2e-5)


@pytest.mark.parametrize('keep', [0.5, 0.8, 0.65])
def test_dropout_masks_keep_their_probability(keep):
  """layers.keep_mask draws two entries per random word: its keep
  probability is `keep` to 2^-16, entries are independent of their
  neighbours (the two halves of a word), and dropout stays unbiased."""
  from rec_jax.models import layers  # pylint: disable=g-import-not-at-top
  mask, prob = layers.keep_mask(jax.random.key(0), keep, (400, 501))
  assert abs(prob - keep) <= 2 ** -17
  m = np.asarray(mask)
  assert m.shape == (400, 501)
  assert m.mean() == pytest.approx(prob, abs=0.004)   # 200k draws.
  flat = m.reshape(-1)[: m.size // 2 * 2].reshape(-1, 2)
  both = (flat[:, 0] & flat[:, 1]).mean()
  assert both == pytest.approx(prob ** 2, abs=0.006)
  x = jnp.ones((400, 501))
  y = np.asarray(layers.dropout(x, 1.0 - keep, jax.random.key(1)))
  assert y.mean() == pytest.approx(1.0, abs=0.02)
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / prob], rtol=1e-6)


def test_validation_passes_compile_once():
  """Two validation passes over the same users (as every epoch runs one)
  compile the encoder and the ranking step once each."""
  from rec_jax import evaluate  # pylint: disable=g-import-not-at-top
  cfg = _config()
  mesh = sharding.make_mesh(config_lib.mesh_config(data=4, model=2))
  graphdef, _, shardings = finetune.abstract_model(cfg, 30, mesh)
  params = finetune.init_params(cfg, 30, mesh, shardings, seed=0)
  rng = np.random.default_rng(0)
  hist = [rng.integers(1, 31, n) for n in rng.integers(1, 15, 50)]
  targets = rng.integers(1, 31, 50)
  ev = evaluate.Evaluator(graphdef=graphdef, mesh=mesh, max_len=8,
                          mask_id=None, batch_size=8)
  first, _ = ev.full_ranking(params, hist, targets)
  sizes = (ev._encode._cache_size(), ev._full[False]._cache_size())  # pylint: disable=protected-access
  second, _ = ev.full_ranking(params, hist, targets)
  assert first == second
  assert sizes == (1, 1)
  assert (ev._encode._cache_size(), ev._full[False]._cache_size()) == sizes  # pylint: disable=protected-access
