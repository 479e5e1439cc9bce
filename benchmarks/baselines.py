r"""SASRec and BERT4Rec on real datasets, several seeds, full ranking.

Runs `python -m rec_jax.main` once per (model, dataset, seed) in its own
workdir (re-running resumes / skips finished runs), then writes a markdown
table next to the published S3-Rec figures:

  REC_JAX_DATA_DIR=../shared/data python benchmarks/baselines.py \
      --models=sasrec,bert4rec --datasets=beauty,toys,lastfm,ml-1m \
      --seeds=0,1,2 --out=benchmarks/results/baselines.md

Extra `--override key=value` flags are passed to every run as
`--config.key=value`.

Re-tabulating keeps what the runs at hand cannot recompute: a row of the
previous table (`--out`) that averages more seeds than the (dataset,
model) has finished runs here and in the archive (runs that predate
benchmarks/results/runs/) is carried over unchanged and marked as such;
the hand-written notes below the table are kept (common.write_markdown).
"""

import argparse
import datetime
import json
import os
import sys

import numpy as np

import common
from common import mean_std

# Published full-ranking NDCG@10 for these exact files (S3-Rec line of work,
# as quoted in the foundation issue).
PUBLISHED = {
    ('sasrec', 'beauty'): 0.0318, ('bert4rec', 'beauty'): 0.0170,
    ('sasrec', 'toys'): 0.0374, ('bert4rec', 'toys'): 0.0099,
    ('sasrec', 'lastfm'): 0.0390, ('bert4rec', 'lastfm'): 0.0337,
}
# How the tables name each recipe's model.
NAMES = {'sasrec': 'SASRec', 'bert4rec': 'BERT4Rec', 'gru4rec': 'GRU4Rec'}
REPO = common.REPO
CARRIED = ' (carried)'


def previous_table(path):
  """The rows of the table already at `path`: {(dataset, model): row
  line}; empty when there is none."""
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    text = f.read()
  rows = {}
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if (line.startswith('| ') and len(cells) > 2 and cells[0] != 'dataset'
        and not set(cells[0]) <= set('-')):
      rows[(cells[0], cells[1])] = line
  return rows


def seed_count(line):
  """The number in a table row's seeds column."""
  return int(line.split('|')[3].split()[0])


def carried(line):
  """A previous row marked as carried (in its seeds column), once."""
  cells = line.split('|')
  if not cells[3].rstrip().endswith(CARRIED):
    cells[3] = f'{cells[3].rstrip()}{CARRIED} '
  return '|'.join(cells)


def run_one(model, dataset, seed, workroot, overrides, only_finished=False,
            extra_arg='', name=None):
  """results.json of one run; runs it unless finished (or only_finished).

  `model` names configs/<model>.py; `extra_arg` is appended to its arg
  string; `name` replaces `model` in the workdir name.
  """
  workdir = os.path.join(workroot, f'{name or model}_{dataset}_s{seed}')
  return common.run_main(
      [f'--config=configs/{model}.py:dataset={dataset},seed={seed}'
       + (f',{extra_arg}' if extra_arg else '')]
      + [f'--config.{o}' for o in overrides], workdir,
      only_finished=only_finished)


def plot_curves(runs, path):
  """Validation NDCG@10 per epoch of every run (from its workdir or the
  archive), one panel per dataset."""
  fig, panels = common.dataset_panels([d for d, _, _ in runs])
  for ax, dataset in panels:
    for (d, model, workdir) in runs:
      if d != dataset:
        continue
      path_m = os.path.join(common.finished_dir(workdir), 'finetune',
                            'metrics.jsonl')
      rows = [json.loads(l) for l in open(path_m, encoding='utf-8')]
      pts = sorted({r['step']: r['eval/valid/ndcg@10'] for r in rows
                    if 'eval/valid/ndcg@10' in r}.items())
      ax.plot(range(1, len(pts) + 1), [v for _, v in pts],
              label=f'{model} {os.path.basename(workdir)[-2:]}', alpha=0.8)
    ax.set_title(dataset)
    ax.set_xlabel('epoch')
    ax.set_ylabel('valid NDCG@10')
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--models', default='sasrec,bert4rec')
  p.add_argument('--datasets', default='beauty,toys,lastfm,ml-1m')
  p.add_argument('--seeds', default='0,1,2')
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'baselines'))
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--only_finished', action='store_true',
                 help='tabulate finished runs only; run nothing')
  p.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results',
                                               'baselines.md'))
  args = p.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  previous = previous_table(args.out)
  rows, curves, kept = [], [], []
  for dataset in args.datasets.split(','):
    for model in args.models.split(','):
      res = [run_one(model, dataset, s, args.workroot, args.override,
                     args.only_finished) for s in seeds]
      finished = [s for s, r in zip(seeds, res) if r is not None]
      res = [r for r in res if r is not None]
      before = previous.get((dataset, model))
      if before and not common.planning() and len(res) < seed_count(before):
        if res:
          print(f'{dataset} {model}: {len(res)} finished run(s) here, fewer '
                f'than the previous table\'s row; keeping that row',
                flush=True)
        rows.append(carried(before))
        kept.append(f'{dataset} {model}')
        print(rows[-1], flush=True)
        continue
      if not res:
        continue
      curves += [(dataset, model, os.path.join(
          args.workroot, f'{model}_{dataset}_s{s}')) for s in finished]
      test = lambda k: [r['test'][k] for r in res]
      pub = PUBLISHED.get((model, dataset))
      sampled = [r['test_sampled']['ndcg@10'] for r in res
                 if 'test_sampled' in r]
      rows.append(
          f'| {dataset} | {model} | {len(res)} | {mean_std(test("ndcg@10"))} | '
          f'{mean_std(test("hr@10"))} | {mean_std(test("ndcg@20"))} | '
          f'{mean_std(test("hr@20"))} | {mean_std(test("mrr"))} | '
          f'{mean_std(sampled) if sampled else "–"} | '
          f'{pub if pub else "–"} | '
          f'{np.mean([r["epochs"] for r in res]):.0f} | '
          f'{np.mean([r["seconds_per_epoch"] for r in res]):.1f} | '
          f'{np.mean([r["train_seconds"] for r in res]) / 60:.1f} | '
          f'{common.hardware(res)} |')
      print(rows[-1], flush=True)
  common.exit_if_planning()
  header = (
      '| dataset | model | seeds | test NDCG@10 | HR@10 | NDCG@20 | HR@20 '
      '| MRR | NDCG@10, 99 sampled negatives | published NDCG@10 '
      '| epochs | s/epoch | train min | hardware |\n'
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  cmd = ' '.join(['python', 'benchmarks/baselines.py'] + sys.argv[1:])
  text = (
      f'# {" / ".join(NAMES.get(m, m) for m in args.models.split(","))} '
      'baselines (full ranking, history excluded)\n\n'
      f'Tabulated {datetime.date.today()}; each row\'s times come from the '
      f'machine in its hardware column; mean ± std over seeds, with\n\n'
      f'```\nREC_JAX_DATA_DIR=../shared/data {cmd}\n```\n\n'
      f'{header}\n' + '\n'.join(rows) + '\n\n'
      'Published: full-ranking NDCG@10 on the same files from the S3-Rec line '
      'of papers (S3-Rec, CIKM 2020, and its successors), whose SASRec and '
      'BERT4Rec used the original losses (SASRec: BCE with one sampled '
      'negative). Ours: full-softmax cross-entropy, leave-one-out, history '
      'excluded, early stopping on validation NDCG@10 (patience 10).\n')
  if kept:
    text += (f'\n"{CARRIED.strip()}": rows copied unchanged from the previous '
             f'table ({", ".join(kept)}): their runs predate the run '
             f'archive (benchmarks/results/runs/), so this command cannot '
             f'recompute them, and the plot has no curves for them.\n')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  plot = args.out.replace('.md', '.png')
  if curves:  # none when every row is carried.
    plot_curves(curves, plot)
    text += f'\nValidation curves: `{os.path.basename(plot)}`.\n'
  common.write_markdown(args.out, text)
  print(text)


if __name__ == '__main__':
  main()
