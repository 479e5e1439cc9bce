r"""Downstream tasks against their simple baselines, on the same split.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/tasks.py --seeds=0,1,2

  ctr     ml-1m: the held-out next item against 4 popularity-sampled
          negatives outside the history; BCE fine-tune; test AUC / log loss
          vs the popularity baseline. Budget: --ctr_epochs (42) epochs.
  rating  ml-100k: the held-out item's rating; MSE fine-tune with the
          rating head; test RMSE / MAE vs global, user and item means.
configs/recommended.py with pretrain=false (--pretrain adds the pretrained
variant). Workdirs: benchmarks/work/tasks/<dataset>_<task>_pre<bool>_s<seed>
(reused when finished). Writes benchmarks/results/tasks.{md,json}.
"""

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

import common
from common import mean_std

REPO = common.REPO
TASKS = {'ctr': ('ml-1m', 'auc', 'popularity'),
         'rating': ('ml-100k', 'rmse', None)}


def run(task, seed, pretrain, root, ctr_epochs):
  dataset = TASKS[task][0]
  workdir = os.path.join(root, f'{dataset}_{task}_pre{str(pretrain).lower()}'
                         f'_s{seed}')
  args = [f'--config=configs/recommended.py:dataset={dataset},task={task},'
          f'pretrain={str(pretrain).lower()},seed={seed}']
  allow = ()
  if task == 'ctr':
    args.append(f'--config.finetune.num_epochs={ctr_epochs}')
    # The learning rate is constant, so a finished run configured for more
    # epochs that stopped after ctr_epochs is the ctr_epochs run.
    if common.config_of(args).finetune.optimizer.schedule == 'constant':
      allow = ('finetune.num_epochs',)
  r = common.run_main(args, workdir, allow=allow)
  if r is not None and task == 'ctr' and r['epochs'] > ctr_epochs:
    raise ValueError(f'{workdir} trained {r["epochs"]} epochs, more than '
                     f'--ctr_epochs={ctr_epochs}')
  return r


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--tasks', default='ctr,rating')
  p.add_argument('--seeds', default='0')
  p.add_argument('--pretrain', action='store_true')
  p.add_argument('--ctr_epochs', type=int, default=42)
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'tasks'))
  p.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results',
                                               'tasks'))
  args = p.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  rows = []
  for task in args.tasks.split(','):
    for pre in ([False, True] if args.pretrain else [False]):
      rs = [run(task, s, pre, args.workroot, args.ctr_epochs) for s in seeds]
      if common.planning():
        continue
      metric = TASKS[task][1]
      base = {name: np.mean([r['baselines'][name][metric] for r in rs])
              for name in rs[0]['baselines']}
      best = (max if metric == 'auc' else min)(base, key=base.get)
      model = [r['test'][metric] for r in rs]
      rows.append(dict(
          task=task, dataset=TASKS[task][0], pretrain=pre, seeds=len(rs),
          metric=metric, model=model,
          other={k: [r['test'][k] for r in rs] for k in rs[0]['test']},
          baselines=base, best_baseline=best,
          change=(np.mean(model) - base[best]) / base[best],
          epochs=[r['epochs'] for r in rs]))
  common.exit_if_planning()
  cmd = 'python benchmarks/tasks.py ' + ' '.join(sys.argv[1:])
  lines = [f'# Downstream tasks ({datetime.date.today()})', '',
           f'`REC_JAX_DATA_DIR=../shared/data {cmd}` on {platform.machine()} '
           f'({os.cpu_count()} CPU cores); test split, leave-one-out.', '',
           '| task | dataset | pretrain | seeds | metric | model | '
           'baselines | best baseline | change |',
           '|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    base = ', '.join(f'{k} {v:.4f}' for k, v in r['baselines'].items())
    others = '; '.join(f'{k} {mean_std(v)}' for k, v in r['other'].items()
                       if k != r['metric'])
    lines.append(f'| {r["task"]} | {r["dataset"]} | {r["pretrain"]} | '
                 f'{r["seeds"]} | {r["metric"]} | {mean_std(r["model"])} '
                 f'({others}) | {base} | {r["best_baseline"]} | '
                 f'{100 * r["change"]:+.1f}% |')
  lines += ['', 'ctr negatives are drawn by popularity, so the popularity '
            'baseline sits near AUC 0.5 by construction.', '']
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  common.write_markdown(args.out + '.md', '\n'.join(lines))
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(date=str(datetime.date.today()), command=cmd, rows=rows),
              f, indent=2)
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
