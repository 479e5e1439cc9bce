"""Fine-tuning methods: what trains, what stays, LoRA merging."""


from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from rec_jax import finetune
from rec_jax import optimizers
from rec_jax import peft
from rec_jax import sharding
from rec_jax import trainer
from rec_jax.data import pipeline
from rec_jax import models


def setup(method, **model):
  config = load_config('recommended', f'smoke,finetune={method}')
  with config.unlocked():
    config.model.update(**model)
    config.mesh.data = 2
    config.mesh.model = 2
  return config


def batch_for(config, split):
  seg = pipeline.make_segments(split.train, config.model.max_len, shift=True)
  stream = pipeline.TrainStream(seg, batch_size=8,
                                max_len=config.model.max_len, seed=0)
  return stream


@pytest.mark.parametrize('method,expect', [
    ('full', lambda k: True),
    ('frozen', lambda k: k.startswith('head/')),
    ('partial', lambda k: k.startswith('encoder/final_norm')),  # 1 layer.
    ('lora', lambda k: '/lora_' in k),
    ('prefix', lambda k: '/prefix_' in k),
    ('adapter', lambda k: '/adapter_' in k),
])
def test_only_the_method_parameters_change(method, expect):
  config = setup(method)
  data = trainer.load_data(config)
  config = trainer.resolved(config, data)
  ds, split = data
  mesh = sharding.make_mesh(config.mesh)
  graphdef, abs_params, param_sh = finetune.abstract_model(
      config, ds.num_items, mesh)
  tx, _ = optimizers.make(config.finetune.optimizer, 10)
  tx = peft.wrap(tx, abs_params, method, config.model.num_layers)
  _, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  params = finetune.init_params(config, ds.num_items, mesh, param_sh, 0)
  # Non-zero LoRA / adapter up-projections so that gradients reach both
  # factors (at zero only the B side moves).
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.01 if '_b' in str(p[-1]) or 'up' in str(p[-1])
      else x, params)
  before = jax.device_get(params)
  state = trainer.init_state(tx, params, state_sh, mesh)
  step = finetune.make_train_step(config, graphdef, tx, state_sh, mesh,
                                  ds=ds)
  stream = batch_for(config, split)
  key = jax.random.key(0)
  for i in range(3):
    state, m = step(state, sharding.host_to_global(mesh, stream.batch(0, i)),
                    key)
  assert np.isfinite(float(m['train/loss']))
  after = jax.device_get(state['params'])
  flat_b = jax.tree_util.tree_flatten_with_path(before)[0]
  flat_a = jax.tree.leaves(after)
  changed = {}
  for (path, b), a in zip(flat_b, flat_a):
    key_ = '/'.join(str(getattr(k, 'key', k)) for k in path)
    changed[key_] = not np.array_equal(a, b)
  trained = {k for k, c in changed.items() if c}
  expected = {k for k in changed if expect(k)}
  if method == 'partial':
    expected |= {k for k in changed if k.startswith('encoder/blocks/0/')}
  assert trained <= expected, sorted(trained - expected)
  assert trained, 'nothing trained'
  n_train, n_total = peft.count(before, method, config.model.num_layers)
  assert n_total == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(before))
  if method != 'full':
    assert n_train < n_total
  # Frozen entries carry no optimizer moments.
  moments = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      state['opt_state']) if getattr(x, 'ndim', 0) > 0)
  assert moments == 2 * n_train


def test_lora_merges_into_the_base_weights():
  config = setup('lora')
  model = models.build(config.model, 50, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + rng.normal(size=x.shape).astype(np.float32) * 0.05
      if 'lora_' in str(p[-1]) else x, params)
  items = jnp.asarray(rng.integers(1, 51, size=(3, 10)), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(10), (3, 10))
  seg = jnp.ones((3, 10), jnp.int32)
  graphdef = nnx.graphdef(model)
  with_lora = nnx.merge(graphdef, params)(items, pos, seg)
  merged = peft.merge_lora(params, scale=config.model.peft.lora_alpha /
                           config.model.peft.lora_rank)
  assert not any('lora_' in str(k) for k in
                 jax.tree_util.tree_flatten_with_path(merged)[0][0][0])
  with config.unlocked():
    config.model.peft.lora_rank = 0
    config.model.peft.lora_table_rank = 0
  plain = models.build(config.model, 50, rngs=nnx.Rngs(1))
  nnx.update(plain, jax.tree.map(jnp.asarray, merged))
  np.testing.assert_allclose(plain(items, pos, seg), with_lora, atol=1e-5)


@pytest.mark.parametrize('method', ['lora', 'adapter', 'frozen'])
def test_fresh_method_parameters_keep_the_pretrained_function(method):
  config = setup(method)
  base = setup('full')
  model = models.build(config.model, 50, rngs=nnx.Rngs(0))
  plain = models.build(base.model, 50, rngs=nnx.Rngs(0))
  params = nnx.to_pure_dict(nnx.state(plain, nnx.Param))
  state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  state['encoder'] = jax.tree.map(lambda x: x, state['encoder'])
  def copy(dst, src):
    for k, v in src.items():
      if isinstance(v, dict):
        copy(dst[k], v)
      else:
        dst[k] = v
  copy(state, params)
  nnx.update(model, state)
  items = jnp.arange(1, 21, dtype=jnp.int32).reshape(2, 10)
  pos = jnp.broadcast_to(jnp.arange(10), (2, 10))
  seg = jnp.ones((2, 10), jnp.int32)
  np.testing.assert_allclose(model(items, pos, seg), plain(items, pos, seg),
                             atol=1e-5)


def test_unknown_method_is_an_error():
  with pytest.raises(ValueError, match="finetune='bitfit'"):
    load_config('recommended', 'finetune=bitfit')
