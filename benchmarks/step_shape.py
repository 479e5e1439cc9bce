r"""Rows per training step: seconds per epoch and targets/s by batch size.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/step_shape.py \
      --dataset=beauty --batches=8,16,32,64 --steps=40 --repeats=3

The SASRec recipe's real fine-tuning step (full-softmax CE, packed rows of
max_len) at each `finetune.batch_size`, built in one process and timed in
alternating rounds (this machine is shared; medians of the rounds). For
each: compile seconds, ms per step, training targets per second, steps per
epoch and the implied seconds of a training epoch; and, timed in the same
rounds, a plain matmul of the step's largest shapes (its [rows x max_len, D]
hidden states against the [V, D] item table, the product reduced inside the
jit): the step's achieved GFLOPS (XLA's FLOP count) as a share of that
matmul's is how close the step is to the machine's floor for this work.
The same matmul returning its product is timed too and reported beside it:
its output is a fresh allocation past glibc's mmap threshold, faulted in
page by page on every call, which halves its rate (a bound measured that
way flatters the step; it is not used as one). Accuracy at a batch size is a separate, full
run (benchmarks/results/step_shape.md says which). Writes
benchmarks/results/step_shape.{json,md} (--out).
"""

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import common


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='beauty')
  p.add_argument('--batches', default='8,16,32,64')
  p.add_argument('--steps', type=int, default=40,
                 help='timed steps per round (at most one epoch)')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'step_shape'))
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top

  base = [f'--config=configs/sasrec.py:dataset={args.dataset}']
  ds, split = trainer.load_data(common.config_of(base))
  sizes = [int(b) for b in args.batches.split(',')]
  runs = {}
  for rows in sizes:
    config = common.config_of(base + [f'--config.finetune.batch_size={rows}'])
    mesh = sharding.make_mesh(config.mesh)
    stream, segments = finetune.train_stream(config, ds, split)
    per_epoch = stream.steps_in_epoch(0)
    steps = min(args.steps, per_epoch)
    batches = [sharding.host_to_global(mesh, stream.batch(0, i))
               for i in range(steps)]
    targets = sum(int(np.sum(b['targets'] > 0)) for b in
                  (stream.batch(0, i) for i in range(per_epoch)))
    tx, _, _ = finetune.optimizer(config, finetune.abstract_model(
        config, ds.num_items, mesh)[1], per_epoch * 10)
    graphdef, _, state, state_sh = finetune.fresh_state(
        config, ds.num_items, mesh, tx)
    make_step = lambda: finetune.make_train_step(
        config, graphdef, tx, state_sh, mesh, ds=ds, split=split,
        target_counts=np.bincount(segments.targets,
                                  minlength=ds.num_items + 1))
    step_fn = make_step()
    key = sharding.put_replicated(mesh, jax.random.key(0))
    t = time.perf_counter()
    step_fn.lower(state, batches[0], key).compile()
    compile_s = time.perf_counter() - t
    flops = _one_block_flops(make_step, state, batches[0], key)
    state, _ = step_fn(state, batches[0], key)  # warm
    jax.block_until_ready(state)
    table_rows = state['params']['encoder']['item_embed'].shape
    hidden = jax.random.normal(jax.random.key(1), (
        rows * config.model.max_len, table_rows[1]))
    item_table = jax.random.normal(jax.random.key(2), table_rows)
    # The product reduced inside the jit: the matmul's own rate. Returned
    # as an array, its [tokens, V] output (39 MB on Beauty) is past glibc's
    # largest mmap threshold, so every call faults fresh pages for it
    # (~9,500 a call, measured) and runs at under half that rate: that
    # slower figure is reported beside it, never used as the bound.
    matmul = jax.jit(lambda a, b: jnp.max(a @ b.T, axis=-1))
    returned = jax.jit(lambda a, b: a @ b.T)
    jax.block_until_ready(matmul(hidden, item_table))
    jax.block_until_ready(returned(hidden, item_table))
    runs[rows] = dict(step_fn=step_fn, state=state, batches=batches, key=key,
                      per_epoch=per_epoch, targets=targets,
                      compile_s=compile_s, ms=[], matmul_ms=[],
                      returned_ms=[], flops=flops,
                      matmul=lambda m=matmul, h=hidden, t=item_table: m(h, t),
                      returned=lambda m=returned, h=hidden, t=item_table: m(
                          h, t),
                      matmul_flops=2.0 * hidden.shape[0] * hidden.shape[1] *
                      item_table.shape[0])

  for _ in range(args.repeats):
    for rows in sizes:
      r = runs[rows]
      s = r['state']
      t = time.perf_counter()
      for b in r['batches']:
        s, m = r['step_fn'](s, b, r['key'])
      jax.block_until_ready(m)
      r['ms'].append(1e3 * (time.perf_counter() - t) / len(r['batches']))
      r['state'] = s
      for name in ('matmul', 'returned'):
        t = time.perf_counter()
        for _ in range(10):
          out = r[name]()
          jax.block_until_ready(out)
        r[name + '_ms'].append(1e3 * (time.perf_counter() - t) / 10)

  table = {}
  for rows in sizes:
    r = runs[rows]
    ms = statistics.median(r['ms'])
    table[rows] = dict(
        rows=rows, steps_per_epoch=r['per_epoch'],
        targets_per_epoch=r['targets'], compile_s=r['compile_s'],
        ms_per_step=ms, ms_rounds=r['ms'],
        epoch_s=ms * r['per_epoch'] / 1e3,
        targets_per_s=r['targets'] / (ms * r['per_epoch'] / 1e3),
        gflop_per_step=r['flops'] / 1e9,
        gflops=r['flops'] / (ms / 1e3) / 1e9,
        matmul_gflops=r['matmul_flops'] / (
            statistics.median(r['matmul_ms']) / 1e3) / 1e9,
        matmul_returned_gflops=r['matmul_flops'] / (
            statistics.median(r['returned_ms']) / 1e3) / 1e9)
    table[rows]['share_of_matmul'] = (table[rows]['gflops'] /
                                      table[rows]['matmul_gflops'])
  ref = table[16] if 16 in table else table[sizes[0]]
  for row in table.values():
    row['vs_16'] = row['targets_per_s'] / ref['targets_per_s']
  out = dict(dataset=args.dataset, hardware=trainer.hardware(),
             date=datetime.date.today().isoformat(),
             command='python benchmarks/step_shape.py ' + ' '.join(
                 sys.argv[1:]),
             repeats=args.repeats, steps=args.steps,
             table=list(table.values()))
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  lines = [
      f'# Rows per step on {args.dataset}: epoch time by batch size', '',
      f"`REC_JAX_DATA_DIR=../shared/data {out['command']}` ({out['date']}, "
      f"{out['hardware']}); medians of {args.repeats} alternating rounds of "
      f'{args.steps} real steps; rows of max_len packed positions.', '',
      '| rows / step | steps / epoch | compile s | ms / step | step GFLOPS | '
      'matmul GFLOPS | step / matmul | matmul GFLOPS, product returned | '
      'epoch s (train) | targets / s | vs 16 rows |',
      '|---|---|---|---|---|---|---|---|---|---|---|']
  for r in table.values():
    lines.append(
        f"| {r['rows']} | {r['steps_per_epoch']} | {r['compile_s']:.1f} | "
        f"{r['ms_per_step']:.1f} | {r['gflops']:.1f} | "
        f"{r['matmul_gflops']:.1f} | {100 * r['share_of_matmul']:.0f}% | "
        f"{r['matmul_returned_gflops']:.1f} | {r['epoch_s']:.2f} | "
        f"{r['targets_per_s']:.0f} | {r['vs_16']:.2f}x |")
  common.write_markdown(args.out + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


def _one_block_flops(make_step, *args) -> float:
  """XLA's FLOP count of the step with the CE in one token block: it counts
  a while loop's body once, so the blocked step's own count leaves out all
  but one of its CE blocks; this is the same arithmetic, counted whole."""
  from rec_jax import losses  # pylint: disable=g-import-not-at-top
  with losses.block_budget(1 << 62):
    compiled = make_step().lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get('flops', 0.0))


if __name__ == '__main__':
  main()
