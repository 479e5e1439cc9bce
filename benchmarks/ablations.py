r"""Paper-style ablation of pretraining recipes: datasets x recipes x seeds.

Every recipe shares one fine-tune (the SASRec recipe), so the `scratch` row
is that fine-tune from random initialisation (`recommended.py:pretrain=false`)
and every other row is the same fine-tune from that recipe's pretrained
encoder. Runs each (recipe, dataset, seed) once in its own workdir (re-running
resumes or skips finished runs), then writes a markdown table (mean ± std of
full-ranking HR / NDCG @5/10/20 and MRR, the change of NDCG@10 against
scratch, pretraining and fine-tuning time, the best published figure), a CSV,
a JSON for colab/ablations.ipynb and a bar plot:

  REC_JAX_DATA_DIR=../shared/data python benchmarks/ablations.py \
      --datasets=beauty,toys,lastfm,ml-1m \
      --recipes=cloze,s3rec,cl4srec,duorec,recommended --seeds=0,1,2

`--reuse_scratch=DIR` takes finished scratch runs from DIR/<name>_<dataset>_s<seed>
(e.g. the SASRec baselines, which are the identical fine-tune:
--reuse_scratch=benchmarks/work/baselines --scratch_name=sasrec).

Re-tabulating keeps what the runs at hand cannot recompute: a row of the
previous table (`--out`.json) that averages more seeds than its (dataset,
recipe) has finished runs here and in the archive (runs that predate
benchmarks/results/runs/) is carried over unchanged, marked with the date
it was tabulated; the hand-written notes below the table are kept.
"""

import argparse
import csv
import datetime
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import baselines  # pylint: disable=g-import-not-at-top,wrong-import-position

import common

REPO = baselines.REPO
METRICS = ('hr@5', 'hr@10', 'hr@20', 'ndcg@5', 'ndcg@10', 'ndcg@20', 'mrr')
# Best published full-ranking test NDCG@10 on these exact files (issue 3).
TARGETS = {'beauty': ('BSARec', 0.0611), 'toys': ('ICSRec', 0.0657),
           'lastfm': ('BSARec', 0.0435), 'ml-1m': ('ICSRec', 0.2007)}


def collect(args):
  """{(dataset, recipe): [results.json of each finished seed]}."""
  seeds = [int(s) for s in args.seeds.split(',')]
  out = {}
  for dataset in args.datasets.split(','):
    for recipe in ['scratch'] + args.recipes.split(','):
      runs = []
      for seed in seeds:
        r = None
        if recipe == 'scratch' and args.reuse_scratch:
          r = baselines.run_one(args.scratch_name, dataset, seed,
                                args.reuse_scratch, [], only_finished=True)
        if r is None:
          config, extra = (('recommended', 'pretrain=false')
                           if recipe == 'scratch' else (recipe, ''))
          extra = ','.join(x for x in (extra, args.arg) if x)
          r = baselines.run_one(config, dataset, seed, args.workroot,
                                args.override, args.only_finished,
                                extra_arg=extra, name=recipe)
        if r is not None:
          r = dict(r, seed=seed)
          runs.append(r)
      if runs:
        out[(dataset, recipe)] = runs
  return out


def previous_rows(out):
  """{(dataset, recipe): row} of the table already at `out`.json, each row
  with `carried_from` (the date it was computed); {} when there is none."""
  path = out + '.json'
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    table = json.load(f)
  return {(r['dataset'], r['recipe']): dict(
      r, carried_from=r.get('carried_from', table['date']))
          for r in table['rows']}


def merge(computed, previous, keys):
  """The rows to tabulate, in the order of `keys` ((dataset, recipe)): a
  computed row, unless the previous table's row averages more seeds (it
  came from runs that are no longer at hand), which is then carried."""
  computed = {(r['dataset'], r['recipe']): r for r in computed}
  rows = []
  for key in keys:
    new, old = computed.get(key), previous.get(key)
    if old and (new is None or new['seeds'] < old['seeds']):
      if new is not None:
        print(f'{key[0]} {key[1]}: {new["seeds"]} finished run(s) here, '
              f'fewer than the previous table\'s {old["seeds"]}; carrying '
              f'that row', flush=True)
      rows.append(old)
    elif new is not None:
      rows.append(new)
  return rows


def aggregate(runs):
  """Per (dataset, recipe): mean / std of each metric, times, delta."""
  rows = []
  for (dataset, recipe), res in runs.items():
    row = dict(dataset=dataset, recipe=recipe, seeds=len(res),
               test_ndcg10_by_seed={str(r['seed']): r['test']['ndcg@10']
                                    for r in res})
    for m in METRICS:
      v = np.array([r['test'][m] for r in res])
      row[m] = float(v.mean())
      row[m + '_std'] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    # Validation NDCG@10, the figure a recipe search may select on.
    valid = [r['valid']['ndcg@10'] for r in res if 'ndcg@10' in
             r.get('valid', {})]
    if len(valid) == len(res):
      row['valid_ndcg@10'] = float(np.mean(valid))
    row['pretrain_min'] = float(np.mean(
        [r.get('pretrain_seconds', 0.0) for r in res])) / 60
    row['finetune_min'] = float(np.mean([r['train_seconds'] for r in res])) / 60
    row['finetune_epochs'] = float(np.mean([r['epochs'] for r in res]))
    row['hardware'] = common.hardware(
        res + [dict(hardware=r['pretrain_hardware']) for r in res
               if r.get('pretrain_hardware')])
    scratch = runs.get((dataset, 'scratch'))
    if scratch and recipe != 'scratch':
      # Seed-matched: the scratch runs of the same seeds as this row.
      seeds = {r['seed'] for r in res}
      base = [r['test']['ndcg@10'] for r in scratch if r['seed'] in seeds]
      if base:
        by_seed = {r['seed']: r['test']['ndcg@10'] for r in scratch}
        shared = [r for r in res if r['seed'] in by_seed]
        mine = np.mean([r['test']['ndcg@10'] for r in shared])
        row['delta_ndcg@10_pct'] = float(100 * (mine / np.mean(base) - 1))
        # Per seed: on how many of the shared seeds this recipe's test
        # NDCG@10 is above scratch's (a mean gain can be one lucky seed).
        row['seeds_above_scratch'] = (
            sum(r['test']['ndcg@10'] > by_seed[r['seed']] for r in shared),
            len(shared))
    target = TARGETS.get(dataset)
    if target:
      row['target'] = target[1]
      row['vs_target_pct'] = float(100 * (row['ndcg@10'] / target[1] - 1))
    rows.append(row)
  return rows


def fmt(row, m):
  if row['seeds'] == 1:
    return f'{row[m]:.4f}'
  return f'{row[m]:.4f} ± {row[m + "_std"]:.4f}'


def markdown(rows, cmd):
  head = ('| dataset | recipe | seeds | NDCG@10 | HR@10 | NDCG@5 | HR@5 '
          '| NDCG@20 | HR@20 | MRR | valid NDCG@10 | Δ NDCG@10 vs scratch '
          '| seeds above scratch | vs best published '
          '| pretrain min | fine-tune min | hardware |\n' + '|---' * 17 + '|')
  lines, carried = [], []
  for r in rows:
    seeds = str(r['seeds'])
    if r.get('carried_from'):
      seeds += f' (carried, {r["carried_from"]})'
      carried.append(f'{r["dataset"]} {r["recipe"]}')
    delta = r.get('delta_ndcg@10_pct')
    delta = '–' if delta is None else f'{delta:+.1f}%'
    above = r.get('seeds_above_scratch')
    above = '–' if above is None else f'{above[0]}/{above[1]}'
    valid = r.get('valid_ndcg@10')
    valid = '–' if valid is None else f'{valid:.4f}'
    tgt = r.get('vs_target_pct')
    tgt = '–' if tgt is None else f'{tgt:+.1f}% of {r["target"]}'
    lines.append(
        f'| {r["dataset"]} | {r["recipe"]} | {seeds} | '
        f'{fmt(r, "ndcg@10")} | {fmt(r, "hr@10")} | {fmt(r, "ndcg@5")} | '
        f'{fmt(r, "hr@5")} | {fmt(r, "ndcg@20")} | {fmt(r, "hr@20")} | '
        f'{fmt(r, "mrr")} | {valid} | '
        f'{delta} | {above} | {tgt} | {r["pretrain_min"]:.1f} | '
        f'{r["finetune_min"]:.1f} | {r.get("hardware", "–")} |')
  return (
      '# Pretraining ablation (full ranking, leave-one-out, history '
      'excluded)\n\n'
      f'Tabulated {datetime.date.today()}; each row\'s times come from the '
      f'machine in its hardware column; test metrics, mean ± std over seeds, '
      f'with\n\n```\nREC_JAX_DATA_DIR=../shared/data {cmd}\n```\n\n'
      f'{head}\n' + '\n'.join(lines) + '\n\n'
      '`scratch`: the shared fine-tune from random initialisation. '
      'valid NDCG@10: mean over the seeds on the validation split. '
      'Δ: relative change of mean NDCG@10 against scratch on the same '
      'dataset and the same seeds; seeds above scratch: on how many of '
      'those seeds the test NDCG@10 is higher. Best published: ' + ', '.join(
          f'{d} {n} {v}' for d, (n, v) in TARGETS.items()) +
      ' (ML-1M indicative: our ml-1m.txt breaks timestamp ties '
      'differently).\n' + (
          f'\n"carried, DATE": rows copied unchanged from the table '
          f'tabulated on DATE ({", ".join(carried)}): their runs predate the '
          f'run archive (benchmarks/results/runs/) and this command finds '
          f'fewer finished runs for them, so it cannot recompute them. A '
          f'Δ of a computed row is taken against the scratch runs of its '
          f'seeds that are at hand.\n' if carried else ''))


def plot(rows, path):
  """A bar per (dataset, recipe) of test NDCG@10 ± std, the best published
  figure as a line, written to `path`; returns the figure."""
  fig, panels = common.dataset_panels([r['dataset'] for r in rows], 3.2)
  for ax, d in panels:
    sub = [r for r in rows if r['dataset'] == d]
    ax.bar(range(len(sub)), [r['ndcg@10'] for r in sub],
           yerr=[r['ndcg@10_std'] for r in sub], capsize=3,
           color=['0.6' if r['recipe'] == 'scratch' else 'C0' for r in sub])
    # A bar that averages fewer seeds than the panel's fullest says so.
    most = max(r.get('seeds', 1) for r in sub)
    ax.set_xticks(range(len(sub)), [
        r['recipe'] + (f' (n={r["seeds"]})' if r.get('seeds', most) < most
                       else '') for r in sub], rotation=30)
    # The bars start at zero, so a few percent is hard to see: each
    # pretrained bar carries its change against scratch.
    for i, r in enumerate(sub):
      if r.get('delta_ndcg@10_pct') is not None:
        ax.text(i, r['ndcg@10'] / 2, f'{r["delta_ndcg@10_pct"]:+.1f}%',
                ha='center', va='center', color='white', fontsize=8)
    if d in TARGETS:
      ax.axhline(TARGETS[d][1], color='C3', ls='--', lw=1,
                 label=f'{TARGETS[d][0]} {TARGETS[d][1]}')
      ax.legend(fontsize=7, loc='upper right')
    # Head room above the bars and the target line for the legend.
    ax.set_ylim(0, 1.2 * max([r['ndcg@10'] + r['ndcg@10_std'] for r in sub]
                             + [TARGETS.get(d, ('', 0))[1]]))
    ax.set_title(d)
    ax.set_ylabel('test NDCG@10')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return fig


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--datasets', default='beauty,toys,lastfm,ml-1m')
  p.add_argument('--recipes', default='cloze,s3rec,cl4srec,duorec,recommended')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--arg', default='', help='appended to every arg string, '
                 'e.g. smoke')
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'ablations'))
  p.add_argument('--reuse_scratch', default='')
  p.add_argument('--scratch_name', default='sasrec')
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--only_finished', action='store_true')
  p.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results',
                                               'ablations'))
  args = p.parse_args()
  runs = collect(args)
  common.exit_if_planning()
  keys = [(d, r) for d in args.datasets.split(',')
          for r in ['scratch'] + args.recipes.split(',')]
  rows = merge(aggregate(runs), previous_rows(args.out), keys)
  if not rows:
    raise SystemExit('no finished runs to tabulate')
  cmd = ' '.join(['python', 'benchmarks/ablations.py'] + sys.argv[1:])
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  text = markdown(rows, cmd)
  common.write_markdown(args.out + '.md', text)
  with open(args.out + '.csv', 'w', newline='', encoding='utf-8') as f:
    keys = sorted({k for r in rows for k in r},
                  key=lambda k: (k not in ('dataset', 'recipe', 'seeds'), k))
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(command=cmd, date=str(datetime.date.today()), rows=rows),
              f, indent=2)
  plot(rows, args.out + '.png')
  print(text)


if __name__ == '__main__':
  main()
