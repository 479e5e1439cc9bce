r"""Memory and compute plan of a recipe's fine-tune step, without training.

  python -m rec_jax.plan --config=configs/sasrec.py:dataset=synthetic,num_items=100000000 \
      --config.mesh.data=1 --config.mesh.model=8

Builds the model, optimizer and train state as shapes only (nothing is
allocated, so a 100M-item table plans on a laptop), compiles the step for
the configured mesh and batch, and prints a table and then, as its last
line, JSON with:

  per_device_param_bytes, total_param_bytes    from the param shardings
  per_device_optimizer_bytes, total_optimizer_bytes
  per_device_temp_bytes, per_device_argument_bytes, per_device_output_bytes,
  per_device_code_bytes                        the compiled executable's
                                               memory analysis
  flops_per_step                               XLA's cost analysis (per
                                               device; a loop body, such as a
                                               chunked CE, counts once)
  model_flops_per_step                         6 x tokens x (dense params +
                                               attention + scored items x D):
                                               for model FLOPs utilisation
  largest_params                               the biggest arrays, per device

Synthetic catalogs take their size from the config (no data is generated);
other datasets are read for their catalog size.
"""

import copy
import json
import math
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from rec_jax import config_lib
from rec_jax import finetune
from rec_jax import optimizers
from rec_jax import peft
from rec_jax import sharding
from rec_jax import trainer
from rec_jax.data import types


def _bytes(leaf, sh=None) -> int:
  shape = sh.shard_shape(leaf.shape) if sh is not None else leaf.shape
  return int(math.prod(shape)) * jnp.dtype(leaf.dtype).itemsize


def catalog(config) -> types.SequenceDataset:
  """The dataset, or for a synthetic one a stand-in with only its catalog
  size (nothing is generated)."""
  if config.data.name == 'synthetic':
    return types.SequenceDataset(name='synthetic', sequences=[],
                                 num_items=int(config.data.synthetic.num_items))
  ds, _ = trainer.load_data(config)
  return ds


def plan(config) -> dict:
  """The plan of `config`'s fine-tune step on `config.mesh` (see module)."""
  cfg = config.finetune
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(cfg.batch_size, mesh, 'finetune.batch_size')
  ds = catalog(config)
  num_items = ds.num_items
  if keys := config_lib.from_data_keys(config):
    # A synthetic catalogue is not generated to plan it; any rate gives the
    # same memory and FLOPs. Planned on a copy: the caller's rate stays unset.
    logging.info('Planning with %s = 0.5 (rates) or 1 (epochs) in place of '
                 'what the data would set.', ' and '.join(keys))
    config = copy.deepcopy(config)
    for k in keys:
      section, name = k.split('.')
      config[section][name] = 0.5 if section == 'model' else 1
  graphdef, abs_params, param_sh = finetune.abstract_model(
      config, num_items, mesh)
  tx, _ = optimizers.make(cfg.optimizer, 1000)
  tx = peft.wrap(tx, abs_params, cfg.method, config.model.num_layers,
                 cfg.partial_layers)
  abs_opt, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
  abstract = trainer.abstract_state(abs_params, abs_opt, state_sh)
  counts = None
  if cfg.sampler in ('popularity', 'in_batch'):
    logging.warning('Planning with uniform counts in place of the '
                    'popularity counts.')
    counts = np.ones(num_items + 1)
  step = finetune.make_train_step(
      config, graphdef, tx, state_sh, mesh, ds=ds, target_counts=counts)
  rows, width = cfg.batch_size, config.model.max_len
  batch_sh = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((rows, width), jnp.int32,
                                   sharding=batch_sh)
           for k in ('inputs', 'targets', 'positions', 'segment_ids')}
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype,
                             sharding=sharding.replicated(mesh))
  with jax.set_mesh(mesh):
    compiled = step.lower(abstract, batch, key).compile()
  return _report(config, mesh, compiled, abs_params, param_sh, abs_opt,
                 state_sh, num_items)


def _report(config, mesh, compiled, abs_params, param_sh, abs_opt, state_sh,
            num_items: int) -> dict:
  """The plan's figures from the compiled step and the state's layout."""
  cfg = config.finetune
  rows, width = cfg.batch_size, config.model.max_len
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  params = jax.tree_util.tree_leaves_with_path(abs_params)
  shs = jax.tree.leaves(param_sh)
  opt = list(zip(jax.tree.leaves(abs_opt),
                 jax.tree.leaves(state_sh['opt_state'])))
  tokens = rows * width
  dim, layers = config.model.embed_dim, config.model.num_layers
  dense = sum(math.prod(l.shape) for p, l in params
              if 'item_embed' not in jax.tree_util.keystr(p)
              and 'pos_embed' not in jax.tree_util.keystr(p))
  scored = {'ce': abs_params['encoder']['item_embed'].shape[0],
            'sampled_softmax': cfg.num_negatives + 1,
            'bce': cfg.num_negatives + 1}.get(cfg.loss, 0)
  model_flops = 6 * tokens * (dense + 2 * layers * width * dim
                              + scored * dim)
  largest = sorted(((jax.tree_util.keystr(p), tuple(l.shape),
                     _bytes(l, s)) for (p, l), s in zip(params, shs)),
                   key=lambda r: -r[2])[:5]
  return dict(
      mesh=dict(mesh.shape), devices=jax.device_count(),
      platform=jax.devices()[0].platform, num_items=num_items,
      batch=[rows, width], dtype=config.model.dtype,
      per_device_param_bytes=sum(_bytes(l, s)
                                 for (_, l), s in zip(params, shs)),
      total_param_bytes=sum(_bytes(l) for _, l in params),
      per_device_optimizer_bytes=sum(_bytes(l, s) for l, s in opt
                                     if hasattr(l, 'shape')),
      total_optimizer_bytes=sum(_bytes(l) for l, _ in opt
                                if hasattr(l, 'shape')),
      per_device_temp_bytes=int(getattr(mem, 'temp_size_in_bytes', -1)),
      per_device_argument_bytes=int(getattr(mem, 'argument_size_in_bytes',
                                            -1)),
      per_device_output_bytes=int(getattr(mem, 'output_size_in_bytes', -1)),
      per_device_code_bytes=int(getattr(mem, 'generated_code_size_in_bytes',
                                        -1)),
      # XLA's count, which takes a while loop's body once: scans (the CE's
      # token blocks, micro-batches) are undercounted; model_flops_per_step
      # is the analytical figure.
      flops_per_step=float(cost.get('flops', -1.0)),
      model_flops_per_step=float(model_flops),
      largest_params=[dict(name=n, shape=list(s), per_device_bytes=b)
                      for n, s, b in largest])


def _gib(n: int) -> str:
  return f'{n / 2**30:10.3f} GiB'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  out = plan(_CONFIG.value)
  print(f'mesh {out["mesh"]} on {out["devices"]} {out["platform"]} devices, '
        f'{out["num_items"]:,} items, batch {out["batch"]}, '
        f'{out["dtype"]}')
  for key in ('per_device_param_bytes', 'total_param_bytes',
              'per_device_optimizer_bytes', 'total_optimizer_bytes',
              'per_device_temp_bytes', 'per_device_argument_bytes'):
    print(f'  {key:<30} {_gib(out[key])}')
  for key in ('flops_per_step', 'model_flops_per_step'):
    print(f'  {key:<30} {out[key]:.3e}')
  print(json.dumps(out))
  sys.stdout.flush()


_CONFIG = None

if __name__ == '__main__':
  from rec_jax import distributed  # pylint: disable=g-import-not-at-top
  distributed.initialize()
  _CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe config.',
                                            lock_config=True)
  flags.mark_flags_as_required(['config'])
  app.run(main)
