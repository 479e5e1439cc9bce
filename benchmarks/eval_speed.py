r"""Full-ranking evaluation throughput (users/s) of the SASRec recipe.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/eval_speed.py \
      --datasets=beauty,ml-1m --repeats=3

For each dataset: the validation pass of configs/sasrec.py's model (every
user's history encoded in packed rows, then scored against the whole
catalog with the history excluded, top-k kept as the test pass does),
timed once with its compiles and then `repeats` times warm; the number of
compilations after the first pass and after the last (a later pass must
compile nothing). Writes benchmarks/results/eval_speed.{md,json}.
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
  p.add_argument('--datasets', default='beauty,ml-1m')
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'eval_speed'))
  args = p.parse_args()

  from rec_jax import evaluate  # pylint: disable=g-import-not-at-top
  from rec_jax import finetune  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top

  rows = []
  for dataset in args.datasets.split(','):
    config = common.config_of([f'--config=configs/sasrec.py:dataset='
                               f'{dataset}'])
    ds, split = trainer.load_data(config)
    mesh = sharding.make_mesh(config.mesh)
    graphdef, _, sh = finetune.abstract_model(config, ds.num_items, mesh)
    params = finetune.init_params(config, ds.num_items, mesh, sh, 0)
    ev = evaluate.make_evaluator(config, graphdef, mesh, ds.num_items)

    def one():
      t = time.perf_counter()
      ev.full_ranking(params, split.test_history, split.test_target,
                      keep_top=True)
      return time.perf_counter() - t

    def compiles():
      return ev._encode._cache_size() + ev._full[True]._cache_size()  # pylint: disable=protected-access
    cold = one()
    after_first = compiles()
    warm = [one() for _ in range(args.repeats)]
    sec = statistics.median(warm)
    rows.append(dict(dataset=dataset, users=ds.num_users,
                     items=ds.num_items, cold_s=cold, warm_s=sec,
                     users_per_s=ds.num_users / sec,
                     compiles_after_first=after_first,
                     compiles_after_all=compiles(), runs=warm))
  out = dict(date=datetime.date.today().isoformat(),
             hardware=trainer.hardware(),
             command='python benchmarks/eval_speed.py ' +
             ' '.join(sys.argv[1:]), rows=rows)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  lines = ['# Full-ranking evaluation throughput\n',
           f"`{out['command']}` ({out['date']}, {out['hardware']}; "
           'configs/sasrec.py, test histories, history excluded, top-20 '
           f'kept; median of {args.repeats} warm passes).\n',
           '| dataset | users | items | first pass s (compiles) | warm pass s '
           '| users/s | compilations after 1 / all passes |',
           '|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(f"| {r['dataset']} | {r['users']} | {r['items']} | "
                 f"{r['cold_s']:.1f} | {r['warm_s']:.2f} | "
                 f"{r['users_per_s']:.0f} | {r['compiles_after_first']} / "
                 f"{r['compiles_after_all']} |")
  with open(args.out + '.md', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
