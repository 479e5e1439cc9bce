r"""Freed memory kept in the heaps (rec_jax.hostmem) against glibc's
defaults, side by side: the Beauty fine-tuning step and the README
quickstart.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/hostmem.py --repeats=2

The setting has to be made before JAX starts, so each measurement is its own
process, started with REC_JAX_MALLOC_KEEP_MB=0 (glibc as it is) or
unset (the default), the two alternating round by round so that a
noisy machine affects both alike:

* step: `benchmarks/step_shape.py --batches=16` (the SASRec recipe's real
  Beauty step, 16 packed rows of 50), ms per step over --steps steps;
* quickstart: the README main command (`rec_jax.main
  --config=configs/recommended.py`, fresh workdir), its wall seconds, the
  stages' seconds and the test NDCG@10 (memory reuse must not change a number:
  the runs are deterministic).

Writes benchmarks/results/hostmem.{json,md} (--out).
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common

MODES = {'glibc defaults': '0', 'kept (default)': None}


def _env(keep):
  env = dict(os.environ)
  env.pop('REC_JAX_MALLOC_KEEP_MB', None)
  if keep is not None:
    env['REC_JAX_MALLOC_KEEP_MB'] = keep
  return env


def _step(keep, steps: int, tmp: str) -> dict:
  out = os.path.join(tmp, 'step')
  subprocess.run(
      [sys.executable, os.path.join(common.REPO, 'benchmarks',
                                    'step_shape.py'),
       '--batches=16', f'--steps={steps}', '--repeats=3', f'--out={out}'],
      check=True, env=_env(keep), cwd=common.REPO, stdout=subprocess.DEVNULL)
  with open(out + '.json', encoding='utf-8') as f:
    row = json.load(f)['table'][0]
  return dict(ms_per_step=row['ms_per_step'], epoch_s=row['epoch_s'])


def _quickstart(keep, tmp: str) -> dict:
  workdir = os.path.join(tmp, 'quickstart')
  shutil.rmtree(workdir, ignore_errors=True)
  env = _env(keep)
  env.pop('REC_JAX_DATA_DIR', None)  # the embedded set, as a new user runs it
  t = time.perf_counter()
  subprocess.run(common.main_command(['--config=configs/recommended.py'],
                                     workdir),
                 check=True, env=env, cwd=common.REPO,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.perf_counter() - t
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    res = json.load(f)
  return dict(wall_s=wall, pretrain_s=res.get('pretrain_seconds'),
              finetune_s=res['train_seconds'], eval_s=res['eval_seconds'],
              test_ndcg10=res['test']['ndcg@10'])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--repeats', type=int, default=2)
  p.add_argument('--steps', type=int, default=60)
  p.add_argument('--what', default='step,quickstart')
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'hostmem'))
  args = p.parse_args()
  what = args.what.split(',')
  runs = {m: {w: [] for w in what} for m in MODES}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.repeats):
      for mode, keep in MODES.items():
        if 'step' in what:
          runs[mode]['step'].append(_step(keep, args.steps, tmp))
        if 'quickstart' in what:
          runs[mode]['quickstart'].append(_quickstart(keep, tmp))
        print(f'round {r + 1}/{args.repeats} {mode}:',
              {w: runs[mode][w][-1] for w in what}, flush=True)

  from rec_jax import trainer  # pylint: disable=g-import-not-at-top
  med = lambda rows, key: statistics.median(row[key] for row in rows)
  base, kept = MODES
  out = dict(date=datetime.date.today().isoformat(),
             hardware=trainer.hardware(), repeats=args.repeats,
             command='python benchmarks/hostmem.py ' + ' '.join(sys.argv[1:]),
             runs=runs)
  lines = [
      '# Host memory: freed memory kept in the heaps against glibc defaults', '',
      f"`REC_JAX_DATA_DIR=../shared/data {out['command']}` ({out['date']}, "
      f"{out['hardware']}); each figure a separate process, the two modes "
      f'alternating, medians of {args.repeats} rounds.', '',
      f'| | {base} | {kept} | speed-up |', '|---|---|---|---|']
  if 'step' in what:
    a, b = (med(runs[m]['step'], 'ms_per_step') for m in MODES)
    ea, eb = (med(runs[m]['step'], 'epoch_s') for m in MODES)
    out['step_speedup'] = a / b
    lines += [f'| Beauty step, 16 rows (ms) | {a:.1f} | {b:.1f} | '
              f'{a / b:.2f}x |',
              f'| Beauty epoch, steps only (s) | {ea:.2f} | {eb:.2f} | |']
  if 'quickstart' in what:
    for key, label in (('wall_s', 'quickstart wall (s)'),
                       ('pretrain_s', 'pretraining (s)'),
                       ('finetune_s', 'fine-tuning (s)'),
                       ('eval_s', 'evaluation (s)')):
      a, b = (med(runs[m]['quickstart'], key) for m in MODES)
      out[f'quickstart_{key}'] = {base: a, kept: b}
      lines.append(f'| {label} | {a:.1f} | {b:.1f} | {a / b:.2f}x |')
    nd = {m: sorted({round(r['test_ndcg10'], 6) for r in runs[m]['quickstart']})
          for m in MODES}
    lines.append(f"| quickstart test NDCG@10 | {nd[base]} | {nd[kept]} | |")
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  common.write_markdown(args.out + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
