"""Model families selected by `config.model.name`: the interface, the
packed-rows contract (a user's outputs do not depend on who shares the
row), the unpacked mode, and GRU4Rec end to end."""

import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from rec_jax import finetune
from rec_jax import models
from rec_jax import trainer
from rec_jax.data import pipeline


def family_config(name: str):
  """configs/<family>.py:smoke with its data-derived dropout fixed."""
  config = conftest.load_config(name, 'smoke')
  for key in ('dropout_rate', 'attention_dropout_rate'):
    if key in config.model:
      config.model[key] = 0.2
  return config


def test_every_family_has_its_recipe_and_the_interface():
  names = models.families()
  assert {'sasrec', 'gru4rec'} <= set(names)
  for name in names:
    fam = models.family(name)
    assert isinstance(fam.PACKED, bool)
    assert os.path.exists(os.path.join(conftest.REPO, 'configs',
                                       f'{name}.py')), name
    assert family_config(name).model.name == name
  with pytest.raises(ValueError, match=r"model.name='fmlp': no file "
                     r'rec_jax/models/fmlp.py; families: \['):
    models.family('fmlp')
  with pytest.raises(ValueError, match='not an encoder family'):
    models.family('layers')


def _packed_and_alone(encoder, key=None):
  """Encoder outputs of two users packed in one row, and of each alone in
  a left-padded row (positions right-aligned in both)."""
  packed = jnp.array([[3, 4, 5, 9, 10, 11, 12, 0, 0, 0]])
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0, 0, 0]])
  pos = jnp.array([[7, 8, 9, 6, 7, 8, 9, 0, 0, 0]])
  alone = jnp.array([[0] * 7 + [3, 4, 5], [0] * 6 + [9, 10, 11, 12]])
  h = encoder(packed, pos, seg, key=key)
  h_alone = encoder(alone, jnp.arange(10)[None].repeat(2, 0),
                    (alone > 0).astype(jnp.int32), key=key)
  return (h[0, :3], h[0, 3:7]), (h_alone[0, 7:], h_alone[1, 6:])


@pytest.mark.parametrize('name', models.families())
def test_a_users_outputs_do_not_depend_on_its_row_mates(name):
  config = family_config(name)
  model = models.build(config.model, 30, rngs=nnx.Rngs(0))
  got, want = _packed_and_alone(model.encoder)
  if not models.family(name).PACKED:
    pytest.skip(f'{name} asks for unpacked rows (PACKED = False)')
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize('causal,positions', [
    (True, 'absolute'), (False, 'absolute'), (True, 'relative')])
def test_outputs_at_a_few_positions_equal_the_full_encoding(causal,
                                                            positions):
  """`Encoder.at` (the last block run at the read positions only, as
  contrastive views use it) gives the full encoding at those positions;
  objectives.encode_last equals encode(...).last() through a packing plan
  and without one; a family without `at` falls back to the full pass."""
  from rec_jax import objectives  # pylint: disable=g-import-not-at-top
  config = family_config('sasrec')
  config.model.update(causal=causal, positions=positions, max_len=10)
  model = models.build(config.model, 30, rngs=nnx.Rngs(0))
  packed = jnp.array([[3, 4, 5, 9, 10, 11, 12, 0, 0, 0],
                      [7, 8, 9, 10, 11, 12, 13, 14, 15, 16]])
  seg = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0, 0, 0], [3] * 10])
  pos = jnp.array([[7, 8, 9, 6, 7, 8, 9, 0, 0, 0], list(range(10))])
  index = jnp.array([2, 6, 19, 4])  # row 0 at 2 and 6, row 1 at 9 and 4.
  full = model.encoder(packed, pos, seg)
  full = full.reshape(-1, full.shape[-1])[index]
  np.testing.assert_allclose(model.encoder.at(packed, pos, seg, index),
                             full, atol=1e-5)
  # Through objectives.encode_last: left-padded users, packed or not.
  rng = np.random.default_rng(0)
  users = np.zeros((6, 10), np.int32)
  for r, n in enumerate(rng.integers(1, 10, 6)):
    users[r, 10 - n:] = rng.integers(1, 30, n)
  lengths = (users > 0).sum(1)
  plan = pipeline.PackPlan.build(lengths, rows=4, width=10)
  assert not plan.dropped.any()
  plan = tuple(jnp.asarray(a) for a in (plan.src, plan.seg, plan.last))
  for p in (None, plan):
    want = objectives.encode(model, jnp.asarray(users), causal=causal,
                             key=None, plan=p).last()
    got = objectives.encode_last(model, jnp.asarray(users), causal=causal,
                                 key=None, plan=p)
    np.testing.assert_allclose(got, want, atol=1e-5)
  gru = models.build(family_config('gru4rec').model, 30, rngs=nnx.Rngs(0))
  assert not hasattr(gru.encoder, 'at')
  np.testing.assert_array_equal(
      objectives.encode_last(gru, jnp.asarray(users), causal=True, key=None),
      objectives.encode(gru, jnp.asarray(users), causal=True,
                        key=None).last())


def test_gru_resets_at_segment_starts():
  """Without its resets the recurrence would carry the first user's state
  into the second: the contract test above would then fail."""
  config = family_config('gru4rec')
  model = models.build(config.model, 30, rngs=nnx.Rngs(0))
  packed = jnp.array([[3, 4, 5, 9, 10, 11, 12, 0, 0, 0]])
  pos = jnp.arange(10)[None]
  one_segment = (packed > 0).astype(jnp.int32)
  two = jnp.array([[1, 1, 1, 2, 2, 2, 2, 0, 0, 0]])
  h_one = model.encoder(packed, pos, one_segment)
  h_two = model.encoder(packed, pos, two)
  np.testing.assert_allclose(h_one[0, :3], h_two[0, :3], atol=1e-6)
  assert not np.allclose(h_one[0, 3:7], h_two[0, 3:7])
  with pytest.raises(ValueError, match='gru4rec is causal'):
    model.encoder(packed, pos, two, causal=False)


def test_unpacked_mode_gives_one_user_per_left_padded_row():
  rng = np.random.default_rng(0)
  train = [rng.integers(1, 30, n).astype(np.int32)
           for n in rng.integers(2, 9, 40)]
  seg = pipeline.make_segments(train, 6, shift=True)
  stream = pipeline.TrainStream(seg, batch_size=8, max_len=6, seed=0,
                                packed=False)
  assert stream.steps_in_epoch(0) == -(-len(seg.lengths) // 8)
  seen = []
  for i in range(stream.steps_in_epoch(0)):
    b = stream.batch(0, i)
    for row in range(8):
      ids = b['segment_ids'][row]
      n = int((ids > 0).sum())
      if not n:
        continue
      assert set(ids[ids > 0].tolist()) == {1}   # one user per row,
      assert (ids[-n:] > 0).all()                # left-padded.
      np.testing.assert_array_equal(b['positions'][row, -n:],
                                    np.arange(6 - n, 6))
      seen.append(tuple(b['inputs'][row, -n:]))
  assert sorted(seen) == sorted(
      tuple(seg.inputs[s:s + n]) for s, n in zip(seg.starts, seg.lengths))
  hist = [h[:5] for h in train[:7]]
  unpacked, where = pipeline.pack_eval(hist, 6, packed=False)
  padded = pipeline.eval_inputs(hist, 6)
  np.testing.assert_array_equal(unpacked['inputs'], padded['inputs'])
  np.testing.assert_array_equal(where[:, 1], 5)


def test_a_family_that_does_not_pack_gets_unpacked_rows(monkeypatch):
  config = family_config('sasrec')
  data = trainer.load_data(config)
  ds, split = data
  stream, _ = finetune.train_stream(config, ds, split)
  assert stream.packed
  monkeypatch.setattr(models.family('sasrec'), 'PACKED', False)
  stream, segments = finetune.train_stream(config, ds, split)
  assert not stream.packed
  assert stream.steps_in_epoch(0) == -(-len(segments.lengths) //
                                       config.finetune.batch_size)


def _run(tmp_path, name, config):
  config.checkpoint.async_save = False
  return finetune.run(config, os.path.join(tmp_path, name))


def test_gru4rec_trains_and_a_4x2_mesh_takes_the_one_device_steps(tmp_path):
  def config(**mesh):
    c = conftest.load_config('gru4rec', 'smoke')
    c.mesh.update(mesh)
    c.finetune.num_epochs = 10
    c.finetune.optimizer.lr = 1e-2
    return c
  one = _run(tmp_path, 'one', config(data=1, fsdp=1, model=1))
  mesh = _run(tmp_path, 'mesh', config(data=4, fsdp=1, model=2))
  assert one['steps'] == mesh['steps'] > 0
  for k, v in one['best_valid'].items():
    assert mesh['best_valid'][k] == pytest.approx(v, abs=2e-3), k
  rows = [l for l in open(os.path.join(tmp_path, 'one', 'metrics.jsonl'))]
  losses = [float(r.split('"train/loss": ')[1].split(',')[0])
            for r in rows if '"train/loss"' in r]
  assert losses[-1] < losses[0]
  # Far better than chance on the synthetic clusters (a random ranking of
  # the ~52 items outside a history: NDCG@10 ~0.09).
  assert one['best_valid']['ndcg@10'] > 0.3


def test_gru4rec_refuses_what_it_cannot_do():
  config = family_config('gru4rec')
  config.model.causal = False
  with pytest.raises(ValueError, match='gru4rec is causal'):
    models.build(config.model, 30, rngs=nnx.Rngs(0))
  config = family_config('gru4rec')
  config.model.peft.prefix_len = 4
  with pytest.raises(ValueError, match='prefix tuning and adapters'):
    models.build(config.model, 30, rngs=nnx.Rngs(0))
  config = family_config('gru4rec')
  config.model.peft.lora_rank = 2
  model = models.build(config.model, 30, rngs=nnx.Rngs(0))
  items = jnp.array([[0, 0, 3, 4, 5, 6, 7, 8, 9, 1]])
  seg = (items > 0).astype(jnp.int32)
  pos = jnp.arange(10)[None]
  layer = model.encoder.blocks[0]
  before = model.encoder(items, pos, seg)
  # B at zero: whatever A holds, the pair leaves the layer as it is ...
  layer.lora_u_a[...] = jax.random.normal(jax.random.key(1),
                                          layer.lora_u_a.shape)
  np.testing.assert_allclose(model.encoder(items, pos, seg), before,
                             atol=1e-6)
  # ... and once B moves, the recurrent weight does.
  layer.lora_u_b[...] = 0.1 * jnp.ones(layer.lora_u_b.shape)
  assert not np.allclose(model.encoder(items, pos, seg), before, atol=1e-4)
