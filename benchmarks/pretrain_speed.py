r"""Pretraining throughput, packed rows against length buckets, side by side
in one process.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/pretrain_speed.py \
      --datasets=synthetic,beauty --steps=40 --repeats=3

For each dataset it builds the recipe's pretraining step
(configs/recommended.py: next item + InfoNCE over augmented views, 256
users a step) twice: on a packed UserStream (`pretrain.packed=true`, the
default: every user's view slot packed best-fit into one [R, max_len]
block, one compiled shape), the same with the views' last Transformer
block run over every position (`packed_full_last`: as before
objectives.encode_last read only each view's newest position), and on the
earlier bucketed stream (one user per row in rows of 8 / 16 / 32 / 50
items, a compile per width). It times the
compiles of each (every shape the epoch needs), then `steps` training
steps of each, alternating `repeats` times, and reports steps/s and
users/s (users that contribute a view per second). Writes
benchmarks/results/pretrain_speed.{md,json}.
"""

import argparse
import datetime
import functools
import json
import os
import statistics
import sys
import time

import common


ENCODE_LAST = None


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--datasets', default='synthetic,beauty')
  p.add_argument('--steps', type=int, default=40)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'pretrain_speed'))
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  from rec_jax import objectives  # pylint: disable=g-import-not-at-top
  global ENCODE_LAST
  ENCODE_LAST = objectives.encode_last

  def _full_last(model, items, *, causal, key, plan=None):
    return objectives.encode(model, items, causal=causal, key=key,
                             plan=plan).last()
  from rec_jax import optimizers  # pylint: disable=g-import-not-at-top
  from rec_jax import pretrain  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top

  rows = []
  for dataset in args.datasets.split(','):
    base = common.config_of([
        f'--config=configs/recommended.py:dataset={dataset}'])
    data = trainer.load_data(base)
    ds, split = data
    mesh = sharding.make_mesh(base.mesh)
    runs = {}
    for mode in ('packed', 'packed_full_last', 'buckets'):
      config = common.config_of([
          f'--config=configs/recommended.py:dataset={dataset}',
          f'--config.pretrain.packed={mode != "buckets"}'])
      # packed_full_last: the views' last block over every position, as
      # before objectives.encode_last (traced with it, then restored).
      objectives.encode_last = (_full_last if mode == 'packed_full_last'
                                else ENCODE_LAST)
      weights = objectives.active(config.pretrain.objectives)
      stream = pretrain.user_stream(
          config, split.train, row_multiple=sharding.data_parallel_size(mesh))
      build = pretrain.builder(config, ds)
      graphdef, abs_params, param_sh = trainer.abstract_model(build, config,
                                                              mesh)
      tx, _ = optimizers.make(config.pretrain.optimizer, 1000)
      _, state_sh = trainer.state_shardings(tx, abs_params, param_sh, mesh)
      state = trainer.init_state(tx, trainer.init_params(
          build, config, mesh, param_sh, 0), state_sh, mesh)
      step = trainer.jit_step(functools.partial(
          pretrain.pretrain_step, graphdef=graphdef, tx=tx,
          ctx=pretrain.context(config, ds, split, weights, mesh),
          weights=weights), state_sh, mesh)
      key = sharding.put_replicated(mesh, jax.random.key(0))
      n = stream.steps_in_epoch(0)
      batches = [stream.batch(0, i % n) for i in range(args.steps)]
      placed = [sharding.host_to_global(mesh, b) for b in batches]
      t = time.perf_counter()
      for shape in {b['items'].shape: b for b in placed}.values():
        state, m = step(state, shape, key)   # one compile per shape.
      jax.block_until_ready(m)
      compile_s = time.perf_counter() - t
      objectives.encode_last = ENCODE_LAST
      users = sum(int((b['lengths'] > 0).sum()) for b in batches)
      runs[mode] = dict(step=step, state=state, placed=placed, users=users,
                        compile_s=compile_s, steps_per_epoch=n,
                        shapes=len({b['items'].shape for b in batches}),
                        rows=stream.pack_rows, seconds=[])
    for _ in range(args.repeats):
      for mode, r in runs.items():
        t = time.perf_counter()
        state = r['state']
        for b in r['placed']:
          state, m = r['step'](state, b, key)
        jax.block_until_ready(m)
        r['state'] = state
        r['seconds'].append(time.perf_counter() - t)
    for mode, r in runs.items():
      sec = statistics.median(r['seconds'])
      rows.append(dict(
          dataset=dataset, mode=mode, steps=args.steps,
          steps_per_epoch=r['steps_per_epoch'], compiled_shapes=r['shapes'],
          pack_rows=r['rows'], compile_s=r['compile_s'],
          steps_per_s=args.steps / sec, users_per_s=r['users'] / sec,
          seconds=r['seconds']))
  out = dict(date=datetime.date.today().isoformat(),
             hardware=trainer.hardware(),
             command='python benchmarks/pretrain_speed.py ' +
             ' '.join(sys.argv[1:]), rows=rows)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  lines = ["# Pretraining throughput: packed rows against length buckets\n",
           f"`{out['command']}` ({out['date']}, {out['hardware']}; "
           'configs/recommended.py, 256 users a step; median of '
           f'{args.repeats} alternating runs of {args.steps} steps).\n',
           '| dataset | batches | compiled shapes | packed rows | compile s '
           '| steps/s | users/s | steps / epoch |',
           '|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f"| {r['dataset']} | {r['mode']} | {r['compiled_shapes']} | "
        f"{r['pack_rows'] or '-'} | {r['compile_s']:.1f} | "
        f"{r['steps_per_s']:.2f} | {r['users_per_s']:.0f} | "
        f"{r['steps_per_epoch']} |")
  by = {(r['dataset'], r['mode']): r for r in rows}
  lines.append('')
  for dataset in args.datasets.split(','):
    a, b = by[(dataset, 'packed')], by[(dataset, 'buckets')]
    c = by[(dataset, 'packed_full_last')]
    ratio = a['users_per_s'] / b['users_per_s']
    lines.append(f'- {dataset}: packed {ratio:.2f}x the users/s of buckets; '
                 'the views\' last block at their read positions only '
                 f"{a['users_per_s'] / c['users_per_s']:.2f}x the same "
                 'packing with the last block over every position.')
  with open(args.out + '.md', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
