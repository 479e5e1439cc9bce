r"""The full-softmax cross-entropy against its earlier forms, side by side in
one process, alone and inside the real fine-tuning step.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/ce_speed.py \
      --dataset=beauty --steps=60 --repeats=5

`reference` is the loss as it was written before its custom backward pass
(logits over the whole padded table, non-items masked to -inf, the target
picked out of the [tokens, V] block, autodiff backward); `one block` is
`losses.softmax_ce` (real item rows only, target by row gather, its own
gradients) scoring every token in one [tokens, items] block, as it did
until 2026-12-07; `custom` is `losses.softmax_ce` as it is, tokens in
blocks of at most `losses._BLOCK_BYTES`. For each it times the loss's
forward + backward on the recipe's shapes and the whole SASRec train step
on real packed batches (configs/sasrec.py: 16 rows of 50), alternating them
so that a noisy machine affects all alike; it also times a plain
[tokens, D] x [D, V] matmul (its product reduced in the jit: see
step_shape.py on why a returned product is no bound) and reads the step's
FLOPs from XLA, so the report states the achieved GFLOPS against the
matmul's. Writes
benchmarks/results/ce_speed.{md,json}.
"""

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import time

import common


def reference_ce(hidden, targets, table, num_items):
  """The earlier full-softmax CE (see the module docstring)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  logits = jnp.einsum('bld,vd->blv', hidden, table.astype(hidden.dtype))
  ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
  logits = jnp.where((ids >= 1) & (ids <= num_items),
                     logits.astype(jnp.float32), -jnp.inf)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  loss = jnp.where(targets > 0, lse - picked, 0.0)
  return jnp.sum(loss), jnp.sum((targets > 0).astype(jnp.float32))


def _time(fn, repeats):
  import jax  # pylint: disable=g-import-not-at-top
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t)
  return statistics.median(out)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='beauty')
  p.add_argument('--steps', type=int, default=60)
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'ce_speed'))
  args = p.parse_args()

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  from rec_jax import losses  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top

  config = common.config_of([f'--config=configs/sasrec.py:dataset='
                             f'{args.dataset}'])
  ds, split = trainer.load_data(config)
  mesh = sharding.make_mesh(config.mesh)
  stream, segments = finetune.train_stream(config, ds, split)
  steps = min(args.steps, stream.steps_in_epoch(0))
  batches = [sharding.host_to_global(mesh, stream.batch(0, i))
             for i in range(steps)]
  tx = optax.adam(1e-3)
  counts = np.bincount(segments.targets, minlength=ds.num_items + 1)
  key = sharding.put_replicated(mesh, jax.random.key(0))
  impls = {'reference': reference_ce, 'one block': losses.softmax_ce,
           'custom': losses.softmax_ce}
  # 'one block': the dense CE traced as a single block of logits.
  budgets = {'one block': 1 << 62}

  # The loss alone, forward + backward, on the first batch's shapes.
  graphdef, abs_params, state, state_sh = finetune.fresh_state(
      config, ds.num_items, mesh, tx)
  table = jax.numpy.array(state['params']['encoder']['item_embed'])  # a copy
  rows, width = batches[0]['targets'].shape
  dim = table.shape[1]
  hidden = jax.random.normal(jax.random.key(1), (rows, width, dim))
  targets = batches[0]['targets']
  loss_fns = {name: jax.jit(jax.value_and_grad(
      lambda h, t, f=f: f(h, targets, t, ds.num_items)[0], argnums=(0, 1)))
              for name, f in impls.items()}
  steps_fns, flops = {}, {}
  states = {}
  for name, f in impls.items():
    real = losses.full_softmax_ce
    losses.full_softmax_ce = f  # next_item_loss binds it when built.
    try:
      steps_fns[name] = finetune.make_train_step(
          config, graphdef, tx, state_sh, mesh, ds=ds, target_counts=counts)
    finally:
      losses.full_softmax_ce = real
    with (losses.block_budget(budgets[name]) if name in budgets
          else contextlib.nullcontext()):
      lowered = steps_fns[name].lower(state, batches[0], key).compile()
      jax.block_until_ready(loss_fns[name](hidden, table))
      # Each its own state: steps donate it.
      fresh = finetune.fresh_state(config, ds.num_items, mesh, tx)[2]
      states[name], _ = steps_fns[name](fresh, batches[0], key)
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops[name] = float(cost.get('flops', 0.0))
  matmul = jax.jit(lambda a, b: jax.numpy.max(a @ b.T, axis=-1))
  flat = hidden.reshape(-1, dim)
  jax.block_until_ready(matmul(flat, table))

  def run_steps(name):
    s = states[name]
    for b in batches:
      s, m = steps_fns[name](s, b, key)
    states[name] = s
    return m

  loss_ms = {n: [] for n in impls}
  step_ms = {n: [] for n in impls}
  matmul_ms = []
  for _ in range(args.repeats):
    matmul_ms.append(1e3 * _time(lambda: matmul(flat, table), 5))
    for name in impls:
      loss_ms[name].append(1e3 * _time(
          lambda n=name: loss_fns[n](hidden, table), 5))
      step_ms[name].append(1e3 * _time(lambda n=name: run_steps(n), 1)
                           / steps)
  med = lambda xs: statistics.median(xs)
  one = 'one block'
  mm_gflops = 2 * flat.shape[0] * dim * table.shape[0] / (med(matmul_ms) /
                                                          1e3) / 1e9
  out = dict(
      dataset=args.dataset, tokens=int(flat.shape[0]), dim=int(dim),
      table_rows=int(table.shape[0]), steps=steps, repeats=args.repeats,
      hardware=trainer.hardware(), date=datetime.date.today().isoformat(),
      command='python benchmarks/ce_speed.py ' + ' '.join(sys.argv[1:]),
      loss_ms={n: med(v) for n, v in loss_ms.items()},
      step_ms={n: med(v) for n, v in step_ms.items()},
      step_gflop=flops, matmul_ms=med(matmul_ms), matmul_gflops=mm_gflops,
      # XLA counts a while loop's body once: the custom step's blocks hide
      # their FLOPs from its count, so its work is the one-block count of
      # the same arithmetic.
      step_gflops={n: flops[one if n == 'custom' else n] /
                   (med(step_ms[n]) / 1e3) / 1e9 for n in impls},
      runs=dict(loss_ms=loss_ms, step_ms=step_ms, matmul_ms=matmul_ms))
  out['loss_speedup'] = out['loss_ms']['reference'] / out['loss_ms']['custom']
  out['step_speedup'] = out['step_ms']['reference'] / out['step_ms']['custom']
  out['step_speedup_over_one_block'] = (out['step_ms']['one block'] /
                                        out['step_ms']['custom'])
  out['blocks'] = losses._token_blocks(  # pylint: disable=protected-access
      int(flat.shape[0]), ds.num_items)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  lm, sm, sg = out['loss_ms'], out['step_ms'], out['step_gflops']
  ref = 'reference'
  text = f"""# Full-softmax CE: custom backward pass against the earlier forms

`{out['command']}` ({out['date']}, {out['hardware']}); {out['tokens']}
tokens x {out['table_rows']} table rows x {dim}; medians of
{args.repeats} alternating rounds ({steps} real packed steps each);
custom: {out['blocks']} token blocks.

| | reference | one block | custom | custom vs reference | custom vs one block |
|---|---|---|---|---|---|
| CE forward + backward (ms) | {lm[ref]:.1f} | {lm[one]:.1f} | {lm['custom']:.1f} | {out['loss_speedup']:.2f}x | {lm[one] / lm['custom']:.2f}x |
| whole train step (ms) | {sm[ref]:.1f} | {sm[one]:.1f} | {sm['custom']:.1f} | {out['step_speedup']:.2f}x | {out['step_speedup_over_one_block']:.2f}x |
| step GFLOP (XLA) | {flops[ref] / 1e9:.2f} | {flops[one] / 1e9:.2f} | {flops[one] / 1e9:.2f} (its loop's count: {flops['custom'] / 1e9:.2f}) | | |
| step GFLOPS | {sg[ref]:.1f} | {sg[one]:.1f} | {sg['custom']:.1f} | | |

A plain [{out['tokens']}, {dim}] x [{dim}, {out['table_rows']}] matmul in the
same run (product reduced in the jit): {out['matmul_ms']:.2f} ms,
{mm_gflops:.1f} GFLOPS; the custom step reaches
{100 * sg['custom'] / mm_gflops:.0f}% of it.
"""
  common.write_markdown(args.out + '.md', text)
  print(json.dumps({k: v for k, v in out.items() if k != 'runs'}, indent=1))


if __name__ == '__main__':
  main()
