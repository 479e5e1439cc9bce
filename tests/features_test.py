"""Feature extraction: packed user encoding equals one-user-at-a-time;
label fractions."""

from flax import nnx
import numpy as np
import pytest

from conftest import load_config
from rec_jax import features
from rec_jax import finetune
from rec_jax.data import pipeline
from rec_jax import models


@pytest.mark.parametrize('layer', [0, 1, -1])
def test_user_embeddings_match_left_padded_encoding(layer):
  config = load_config('recommended', 'smoke')
  model = models.build(config.model, 40, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = nnx.to_pure_dict(params)
  rng = np.random.default_rng(0)
  hist = [rng.integers(1, 41, size=n).astype(np.int32)
          for n in (1, 3, 9, 10, 25, 4, 7)]
  got = features.user_embeddings(graphdef, params, hist,
                                 max_len=config.model.max_len, layer=layer,
                                 batch_size=4)
  inp = pipeline.eval_inputs(hist, config.model.max_len)
  _, outs = model.encoder(inp['inputs'], inp['positions'],
                          inp['segment_ids'], return_layers=True)
  np.testing.assert_allclose(got, np.asarray(outs[layer][:, -1]), atol=1e-5)
  with pytest.raises(ValueError, match='layers 0..1'):
    features.user_embeddings(graphdef, params, hist, max_len=10, layer=3)


def test_write_npy_and_parquet(tmp_path):
  emb = np.arange(12, dtype=np.float32).reshape(3, 4)
  ids = np.array([1, 2, 3])
  np.testing.assert_array_equal(
      np.load(features.write(str(tmp_path / 'u'), ids, emb, 'npy', 'user')),
      emb)
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  t = pq.read_table(features.write(str(tmp_path / 'u'), ids, emb, 'parquet',
                                   'user'))
  assert t.column('user').to_pylist() == [1, 2, 3]
  np.testing.assert_array_equal(np.array(t.column('embedding').to_pylist()),
                                emb)


def test_label_fraction_picks_a_fixed_subset():
  train = [np.array([i + 1]) for i in range(100)]
  a = finetune.labelled_users(train, 0.1, seed=0)
  assert len(a) == 10
  assert [x.tolist() for x in a] == [
      x.tolist() for x in finetune.labelled_users(train, 0.1, seed=0)]
  assert finetune.labelled_users(train, 1.0, seed=0) is train
  assert len(finetune.labelled_users(train, 0.001, seed=0)) == 1
  with pytest.raises(ValueError, match='label_fraction=0'):
    finetune.labelled_users(train, 0.0, seed=0)


def test_validation_waits_for_enough_steps():
  """With few labelled users an epoch is a couple of steps; validation
  (and so early stopping's patience) is spaced by eval.min_steps."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  cfg = ml_collections.ConfigDict(dict(every_epochs=1, min_steps=16))
  assert finetune.eval_every(cfg, 166) == 1  # Beauty, all users
  assert finetune.eval_every(cfg, 14) == 2   # 10% of Toys: 28 steps
  assert finetune.eval_every(cfg, 2) == 8    # 1% of Beauty
  cfg.every_epochs = 2
  assert finetune.eval_every(cfg, 30) == 2
  cfg.min_steps = 0
  assert finetune.eval_every(cfg, 1) == 2

