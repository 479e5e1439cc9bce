"""InfoNCE against hand-computed values; every objective trains."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from rec_jax import objectives
from rec_jax import optimizers
from rec_jax import pretrain
from rec_jax import sharding
from rec_jax import trainer
from rec_jax.data import pipeline


def nt_xent_reference(z1, z2, t, valid, same=None, groups=None):
  """Loop-by-loop NT-Xent, the definition written out."""
  z = np.concatenate([z1, z2])
  b = len(z1)
  ok = np.concatenate([valid, valid])
  losses, hits = [], []
  for i in range(2 * b):
    if not ok[i]:
      continue
    p = (i + b) % (2 * b)
    cand = []
    for j in range(2 * b):
      if j == i or not ok[j]:
        continue
      if j != p and same is not None and same[i % b, j % b]:
        continue
      if groups is not None and groups[i % b] != groups[j % b]:
        continue
      cand.append(j)
    logits = np.array([z[i] @ z[j] / t for j in cand])
    pos = z[i] @ z[p] / t
    losses.append(np.log(np.exp(logits).sum()) - pos)
    hits.append(cand[int(np.argmax(logits))] == p)
  return np.mean(losses), np.mean(hits)


@pytest.mark.parametrize('variant', ['plain', 'invalid', 'same', 'groups'])
def test_info_nce_matches_definition(variant):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(2, 6, 4)).astype(np.float32)
  valid = np.ones(6, bool)
  same = groups = None
  if variant == 'invalid':
    valid[[1, 4]] = False
  if variant == 'same':
    target = np.array([3, 5, 3, 7, 5, 1])
    same = target[:, None] == target[None, :]
  if variant == 'groups':
    groups = np.array([0, 0, 0, 1, 1, 1])
  loss, acc = objectives.info_nce(
      jnp.asarray(z1), jnp.asarray(z2), temperature=0.5,
      valid=jnp.asarray(valid),
      same=None if same is None else jnp.asarray(same),
      groups=None if groups is None else jnp.asarray(groups))
  ref_loss, ref_acc = nt_xent_reference(z1, z2, 0.5, valid, same, groups)
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
  np.testing.assert_allclose(float(acc), ref_acc)


def test_info_nce_cosine_is_scale_invariant():
  rng = np.random.default_rng(1)
  z1, z2 = rng.normal(size=(2, 5, 3)).astype(np.float32)
  f = lambda a, b: objectives.info_nce(
      jnp.asarray(a), jnp.asarray(b), temperature=0.2,
      valid=jnp.ones(5, bool), similarity='cosine')[0]
  np.testing.assert_allclose(f(z1, z2), f(3 * z1, 0.5 * z2), rtol=1e-5)


def test_unknown_objectives_are_errors():
  with pytest.raises(ValueError, match='unknown'):
    objectives.active({'cloze': 1.0, 'bogus': 1.0})
  with pytest.raises(ValueError, match='every weight is 0'):
    objectives.active({'cloze': 0.0})


def _pretraining(config):
  """What a pretraining step needs of `config` (resolved on its data):
  (config, (ds, split), weights, mesh, builder, (graphdef, abstract
  params, param shardings), objectives context)."""
  weights = objectives.active(config.pretrain.objectives)
  data = trainer.load_data(config)
  config = trainer.resolved(config, data)
  ds, split = data
  mesh = sharding.make_mesh(config.mesh)
  build = pretrain.builder(config, ds)
  model = trainer.abstract_model(build, config, mesh)
  ctx = pretrain.context(config, ds, split, weights, mesh)
  return config, data, weights, mesh, build, model, ctx


def test_every_objective_learns():
  """All eight objectives together on the synthetic set: after 30 steps,
  each one's loss on a fixed batch (fixed key) is lower than at init."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  config = load_config('cl4srec', 'smoke')
  with config.unlocked():
    for k in config.pretrain.objectives:
      config.pretrain.objectives[k] = 1.0
    config.pretrain.update(batch_size=64)
    config.pretrain.optimizer.lr = 3e-3
    config.model.max_len = 8  # one length bucket: one compile.
    config.mesh.data = 1
  config, (ds, split), weights, mesh, build, (
      graphdef, abs_params, param_sh), ctx = _pretraining(config)
  stream = pipeline.UserStream(split.train, batch_size=64, max_len=8, seed=0,
                               random_prefix=False, partners=True)
  fixed = sharding.host_to_global(mesh, stream.batch(0, 0))
  key = jax.random.key(7)
  losses = jax.jit(lambda p: objectives.total_loss(
      nnx.merge(graphdef, p), fixed, key, ctx, weights)[1])
  tx, _ = optimizers.make(config.pretrain.optimizer, 100)
  _, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  params = trainer.init_params(build, config, mesh, param_sh, 0)
  before = jax.device_get(losses(params))
  state = trainer.init_state(tx, params, state_sh, mesh)
  step = trainer.jit_step(functools.partial(
      pretrain.pretrain_step, graphdef=graphdef, tx=tx, ctx=ctx,
      weights=weights), state_sh, mesh)
  for i in range(30):
    batch = sharding.host_to_global(mesh, stream.batch(i // 2, i % 2))
    state, _ = step(state, batch, key)
  after = jax.device_get(losses(state['params']))
  for name in objectives.NAMES:
    assert np.isfinite(after[f'train/{name}'])
    assert after[f'train/{name}'] < before[f'train/{name}'], (
        name, before[f'train/{name}'], after[f'train/{name}'])


def test_s3rec_needs_attributes():
  from rec_jax.data import types  # pylint: disable=g-import-not-at-top
  config = load_config('s3rec', 'smoke')
  ds = types.SequenceDataset(name='bare', sequences=[np.arange(1, 5)],
                             num_items=4)
  with pytest.raises(ValueError, match="need item attributes, and dataset "
                     "'bare' has none"):
    pretrain.builder(config, ds)


def test_jit_augment_views_differ():
  """The two contrastive views come from independent keys."""
  config = load_config('cl4srec', 'smoke')
  from rec_jax.data import augment  # pylint: disable=g-import-not-at-top
  items = jnp.tile(jnp.arange(1, 11), (8, 1))
  lengths = jnp.full((8,), 10)
  k1, k2 = jax.random.split(jax.random.key(0))
  a, _ = augment.augment(k1, items, lengths, ops=('mask', 'reorder'),
                         cfg=config.pretrain.augment, mask_id=99)
  b, _ = augment.augment(k2, items, lengths, ops=('mask', 'reorder'),
                         cfg=config.pretrain.augment, mask_id=99)
  assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('layout', [(1, 1, 1), (4, 1, 2)])
def test_packed_views_give_every_objective_its_unpacked_loss(layout):
  """A packed UserStream batch carries the plan that packs its users'
  views several to a row: every objective computed through the plan (one
  [R, max_len] block) equals the same objective on the same left-padded
  rows encoded one user per row (dropout off: the same function), also on
  a 4x2 mesh; the slots hold the views the augmentations lengthen."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  config = load_config('cl4srec', 'smoke')
  with config.unlocked():
    for k in config.pretrain.objectives:
      config.pretrain.objectives[k] = 1.0
    config.pretrain.batch_size = 32
    config.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)
    config.mesh.update(dict(zip(('data', 'fsdp', 'model'), layout)))
  config, (_, split), weights, mesh, build, (
      graphdef, _, param_sh), ctx = _pretraining(config)
  params = trainer.init_params(build, config, mesh, param_sh, 0)
  stream = pretrain.user_stream(
      config, split.train, row_multiple=sharding.data_parallel_size(mesh))
  assert stream.pack_rows and stream.widths == [config.model.max_len]
  width = config.model.max_len
  for index in range(2):
    host = stream.batch(0, index)
    assert host['pack_src'].shape == (stream.pack_rows, width)
    # Packed: far fewer positions than users x max_len.
    assert stream.pack_rows * width < 0.8 * host["items"].size
    packed = sharding.host_to_global(mesh, host)
    plain = {k: v for k, v in packed.items() if 'pack_' not in k}
    key = jax.random.key(index)

    def losses(batch):
      return jax.jit(lambda p: objectives.total_loss(
          nnx.merge(graphdef, p), batch, key, ctx, weights)[1])(params)
    with jax.set_mesh(mesh):
      got, want = jax.device_get(losses(packed)), jax.device_get(
          losses(plain))
    for name in weights:
      assert got[f'train/{name}'] == pytest.approx(
          want[f'train/{name}'], rel=2e-5, abs=1e-6), name
