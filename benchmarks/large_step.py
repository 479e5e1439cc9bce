r"""Step time and model FLOPs utilisation of a large SASRec configuration.

  python benchmarks/large_step.py                       # the issue's config
  python benchmarks/large_step.py --items=20000 --hidden=64 --layers=2 \
      --max_len=50 --batch=64 --steps=5                 # a CPU-sized check

Default: 1M items, hidden 256, 4 layers, length 200, batch 1024 sequences,
bfloat16 compute, full-softmax CE over the catalog (chunked when --chunk),
on every local device (item table split over them along `model` when
--model > 1). Random full-length rows; nothing is read from disk. Prints
and writes benchmarks/results/large_step_<device>.json: compile seconds,
median step seconds, tokens/s, model FLOPs per step (rec_jax.plan's count)
and MFU against the device's peak dense bf16 FLOP/s where known.
"""

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np

import common

REPO = common.REPO
sys.path.insert(0, REPO)

# Peak dense bfloat16 FLOP/s per device (vendor figures).
PEAK = {'H100': 989e12, 'H200': 989e12, 'A100': 312e12, 'L4': 121e12,
        'TPU v4': 275e12, 'TPU v5 lite': 197e12, 'TPU v5e': 197e12,
        'TPU v5p': 459e12, 'TPU v6 lite': 918e12}


def peak_flops(kind: str):
  for name, flops in PEAK.items():
    if name.lower() in kind.lower():
      return flops
  return None


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--items', type=int, default=1_000_000)
  p.add_argument('--hidden', type=int, default=256)
  p.add_argument('--layers', type=int, default=4)
  p.add_argument('--heads', type=int, default=4)
  p.add_argument('--max_len', type=int, default=200)
  p.add_argument('--batch', type=int, default=1024)
  p.add_argument('--dtype', default='bfloat16')
  p.add_argument('--chunk', type=int, default=0)
  p.add_argument('--model', type=int, default=1, help='model-axis size')
  p.add_argument('--remat', action='store_true')
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--out', default='')
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  import importlib.util  # pylint: disable=g-import-not-at-top
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  from rec_jax import plan  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax.data import types  # pylint: disable=g-import-not-at-top

  spec = importlib.util.spec_from_file_location(
      'sasrec_config', os.path.join(REPO, 'configs', 'sasrec.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(f'dataset=synthetic,num_items={args.items}')
  config.model.update(embed_dim=args.hidden, num_layers=args.layers,
                      num_heads=args.heads, mlp_dim=4 * args.hidden,
                      max_len=args.max_len, dtype=args.dtype,
                      remat=args.remat,
                      # No data to set it from: the rate the sparse
                      # catalogues get (the cost is the same for any).
                      dropout_rate=0.5, attention_dropout_rate=0.5)
  config.finetune.update(batch_size=args.batch, ce_chunk_size=args.chunk)
  config.mesh.update(data=-1, fsdp=1, model=args.model)

  planned = plan.plan(config)  # compiles once; also gives the FLOP count.
  mesh = sharding.make_mesh(config.mesh)
  tx = optax.adam(1e-3)
  graphdef, _, state, state_sh = finetune.fresh_state(config, args.items,
                                                      mesh, tx)
  step = finetune.make_train_step(
      config, graphdef, tx, state_sh, mesh,
      ds=types.SequenceDataset(name='synthetic', sequences=[],
                               num_items=args.items))
  rng = np.random.default_rng(0)
  rows, width = args.batch, args.max_len
  items = rng.integers(1, args.items + 1, size=(rows, width + 1))
  batch = sharding.host_to_global(mesh, dict(
      inputs=items[:, :-1].astype(np.int32),
      targets=items[:, 1:].astype(np.int32),
      positions=np.broadcast_to(np.arange(width, dtype=np.int32),
                                (rows, width)).copy(),
      segment_ids=np.ones((rows, width), np.int32)))
  key = sharding.put_replicated(mesh, jax.random.key(0))
  t = time.perf_counter()
  state, m = step(state, batch, key)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, m = step(state, batch, key)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
  step_s = float(np.median(times))
  kind = jax.devices()[0].device_kind
  peak = peak_flops(kind)
  flops = planned['model_flops_per_step']
  record = dict(
      date=datetime.date.today().isoformat(),
      command='python benchmarks/large_step.py ' + ' '.join(sys.argv[1:]),
      device=kind, devices=jax.device_count(), config=vars(args),
      compile_and_first_step_s=compile_s, step_s=step_s,
      tokens_per_s=rows * width / step_s, model_flops_per_step=flops,
      achieved_flops=flops / step_s,
      mfu=(flops / step_s / (peak * jax.device_count())) if peak else None,
      loss=float(m['train/loss']),
      per_device_param_bytes=planned['per_device_param_bytes'],
      per_device_temp_bytes=planned['per_device_temp_bytes'])
  print(json.dumps(record, indent=2))
  out = args.out or os.path.join(
      REPO, 'benchmarks', 'results',
      f'large_step_{kind.replace(" ", "_").lower()}.json')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=2)


if __name__ == '__main__':
  main()
