r"""What the input pipeline costs a fine-tuning step, and so what a
prefetching loader (grain's, or any) could win at most.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/pipeline_share.py \
      --dataset=beauty --steps=150 --repeats=3

In one process, on the recipe's real batches (configs/sasrec.py: 16
packed rows of 50), it times
  * building a batch on the host (`TrainStream.batch`), alone;
  * the train loop as `trainer.fit` runs it: build the batch, place it,
    call the jitted step (dispatch is asynchronous: the next batch is built
    while the device computes), `repeats` times;
  * the same loop over batches built and placed beforehand: a loader with
    perfect prefetching, the ceiling of what one could add;
alternating the two loops so that a noisy machine affects both alike, and
writes the ratio to benchmarks/results/pipeline_share.{md,json}.
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
  p.add_argument('--steps', type=int, default=150)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'pipeline_share'))
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top

  config = common.config_of([f'--config=configs/sasrec.py:dataset='
                             f'{args.dataset}'])
  data = trainer.load_data(config)
  ds, split = data
  mesh = sharding.make_mesh(config.mesh)
  stream, segments = finetune.train_stream(config, ds, split)
  steps = min(args.steps, stream.steps_in_epoch(0))
  tx = optax.adam(1e-3)
  graphdef, _, state, state_sh = finetune.fresh_state(config, ds.num_items,
                                                      mesh, tx)
  step = finetune.make_train_step(
      config, graphdef, tx, state_sh, mesh, ds=ds,
      target_counts=np.bincount(segments.targets, minlength=ds.num_items + 1))
  key = sharding.put_replicated(mesh, jax.random.key(0))

  t = time.perf_counter()
  host = [stream.batch(0, i) for i in range(steps)]
  build_ms = 1e3 * (time.perf_counter() - t) / steps
  placed = [sharding.host_to_global(mesh, b) for b in host]
  state, m = step(state, placed[0], key)  # compile.
  jax.block_until_ready(m)

  def inline(state):
    for i in range(steps):
      state, m = step(state, sharding.host_to_global(mesh, stream.batch(
          1, i)), key)
    jax.block_until_ready(m)
    return state

  def prefetched(state):
    for b in placed:
      state, m = step(state, b, key)
    jax.block_until_ready(m)
    return state

  times = {'inline': [], 'prefetched': []}
  for _ in range(args.repeats):
    for name, loop in (('inline', inline), ('prefetched', prefetched)):
      t = time.perf_counter()
      state = loop(state)
      times[name].append(time.perf_counter() - t)
  inline_s = statistics.median(times['inline']) / steps
  pre_s = statistics.median(times['prefetched']) / steps
  out = dict(
      dataset=args.dataset, steps=steps, repeats=args.repeats,
      hardware=trainer.hardware(), date=datetime.date.today().isoformat(),
      command='python benchmarks/pipeline_share.py ' + ' '.join(sys.argv[1:]),
      host_batch_ms=build_ms, inline_step_ms=1e3 * inline_s,
      prefetched_step_ms=1e3 * pre_s,
      inline_steps_per_s=1 / inline_s, prefetched_steps_per_s=1 / pre_s,
      prefetch_speedup=inline_s / pre_s, runs_s=times)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  with open(args.out + '.md', 'w', encoding='utf-8') as f:
    f.write(f"""# Input pipeline share of a fine-tuning step

`{out['command']}` ({out['date']}, {out['hardware']}; SASRec, 16 packed
rows of 50; median of {args.repeats} alternating runs of {steps} steps).

| | ms per step | steps/s |
|---|---|---|
| host batch alone (`TrainStream.batch`) | {build_ms:.2f} | |
| loop as `trainer.fit` runs it (batch built inline) | {1e3 * inline_s:.1f} | {1 / inline_s:.1f} |
| loop over batches built beforehand (perfect prefetch) | {1e3 * pre_s:.1f} | {1 / pre_s:.1f} |

A prefetching loader could make the loop at most
**{inline_s / pre_s:.3f}x** as fast.
""")
  print(json.dumps({k: v for k, v in out.items() if k != 'runs_s'}))


if __name__ == '__main__':
  main()
