r"""Variants of the SASRec fine-tune (the recipe every pretraining recipe
fine-tunes with), one change at a time, against the unchanged recipe on
the same seeds: what closes the gap to the published bests, and what does
not.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/variants.py \
      --variants=default,d128,d256,input_mask0.2,smooth0.1 \
      --datasets=beauty --seeds=0 --out=benchmarks/results/variants.md

Each variant is `configs/sasrec.py:dataset=D,seed=S` plus the overrides in
VARIANTS, in its own workdir `<workroot>/<variant>_<D>_s<S>` (re-running
resumes or reuses). `default` is the unchanged recipe: a finished
`<default_root>/sasrec_<D>_s<S>` (benchmarks/work/baselines or its archive;
its config is checked) when there is one, else a run of its own.

The table gives validation NDCG@10 (what a recipe search may look at),
test NDCG@10 / HR@10, and the change of each against `default` over the
seeds both finished (paired). Hand-written notes below the table are kept.
"""

import argparse
import datetime
import os
import sys

import numpy as np

import baselines
import common
from common import mean_std

REPO = common.REPO

# name -> --config.KEY=VALUE overrides of configs/sasrec.py.
VARIANTS = {
    'default': (),
    'd128': ('model.embed_dim=128', 'model.mlp_dim=512'),
    'd256': ('model.embed_dim=256', 'model.mlp_dim=1024'),
    'input_mask0.1': ('finetune.input_mask_prob=0.1',),
    'input_mask0.2': ('finetune.input_mask_prob=0.2',),
    'smooth0.1': ('finetune.label_smoothing=0.1',),
    'smooth0.2': ('finetune.label_smoothing=0.2',),
    # Fixed dropout rates instead of the one set from the data
    # (config_lib.dropout_from_data: 0.5 on Amazon / LastFM, 0.2 on ML-1M).
    # drop0.5 on ML-1M is the recipe before that rule (2026-12-02).
    'drop0.2': ('model.dropout_rate=0.2', 'model.attention_dropout_rate=0.2'),
    'drop0.5': ('model.dropout_rate=0.5', 'model.attention_dropout_rate=0.5'),
    'pos_none': ('model.positions=none',),
    'pos_relative': ('model.positions=relative',),
    # A 200-item window (the SASRec paper's on ML-1M) at the same tokens a
    # step: 4 packed rows of 200 instead of 16 of 50.
    'len200': ('model.max_len=200', 'finetune.batch_size=4'),
    'len200_drop0.5': ('model.max_len=200', 'finetune.batch_size=4',
                       'model.dropout_rate=0.5',
                       'model.attention_dropout_rate=0.5'),
    # Joint (multi-task) sequence-level objectives, 128 users a step.
    'joint_cl0.1': ('finetune.aux.objectives.contrastive=0.1',),
    'joint_duorec0.1': ('finetune.aux.objectives.duorec=0.1',),
    # The same on 32 users a step, cosine similarity, temperature 0.2: no
    # reward for growing the representations the next-item logits read.
    'joint_cl0.1_cos': ('finetune.aux.objectives.contrastive=0.1',
                        'finetune.aux.similarity=cosine',
                        'finetune.aux.temperature=0.2',
                        'finetune.aux.batch_size=32'),
}


def run(variant, dataset, seed, args):
  """results.json of one variant run (None: not finished, only_finished)."""
  if variant not in VARIANTS:
    raise SystemExit(f'unknown variant {variant!r}; known: '
                     f'{", ".join(VARIANTS)}')
  if variant == 'default' and common.finished_dir(os.path.join(
      args.default_root, f'sasrec_{dataset}_s{seed}')) is not None:
    return baselines.run_one('sasrec', dataset, seed, args.default_root, (),
                             only_finished=True)
  return baselines.run_one('sasrec', dataset, seed, args.workroot,
                           VARIANTS[variant], args.only_finished,
                           name=variant)


def paired_change(runs, base, key) -> str:
  """Mean relative change of `key` against `base` over the seeds both
  have: '+1.2% (seeds 0,1)'; '–' when they share none."""
  seeds = sorted(set(runs) & set(base))
  if not seeds:
    return '–'
  ratio = (np.mean([key(runs[s]) for s in seeds])
           / np.mean([key(base[s]) for s in seeds]))
  return f'{100 * (ratio - 1):+.1f}% (seeds {",".join(map(str, seeds))})'


def row(dataset, variant, runs, base) -> str:
  """One markdown row; `runs` and `base` map seed -> results.json."""
  res = [runs[s] for s in sorted(runs)]
  valid = lambda r: r['valid']['ndcg@10']
  test = lambda r: r['test']['ndcg@10']
  return (
      f'| {dataset} | {variant} | {" ".join(VARIANTS[variant]) or "–"} | '
      f'{len(res)} | {np.mean([r["best_epoch"] for r in res]):.0f} | '
      f'{mean_std([valid(r) for r in res])} | '
      f'{mean_std([test(r) for r in res])} | '
      f'{mean_std([r["test"]["hr@10"] for r in res])} | '
      f'{"–" if variant == "default" else paired_change(runs, base, valid)} | '
      f'{"–" if variant == "default" else paired_change(runs, base, test)} | '
      f'{np.mean([r["seconds_per_epoch"] for r in res]):.1f} | '
      f'{common.hardware(res)} |')


HEADER = (
    '| dataset | variant | overrides | seeds | best epoch | valid NDCG@10 '
    '| test NDCG@10 | test HR@10 | Δ valid vs default | Δ test vs default '
    '| s/epoch | hardware |\n'
    '|---|---|---|---|---|---|---|---|---|---|---|---|')


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--variants', default='default,' + ','.join(
      v for v in VARIANTS if v != 'default'))
  p.add_argument('--datasets', default='beauty')
  p.add_argument('--seeds', default='0')
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'variants'))
  p.add_argument('--default_root', default=os.path.join(
      REPO, 'benchmarks', 'work', 'baselines'))
  p.add_argument('--only_finished', action='store_true',
                 help='tabulate finished runs only; run nothing')
  p.add_argument('--out', default=os.path.join(REPO, 'benchmarks', 'results',
                                               'variants.md'))
  args = p.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  variants = args.variants.split(',')
  rows = []
  for dataset in args.datasets.split(','):
    found = {v: {s: r for s in seeds
                 if (r := run(v, dataset, s, args)) is not None}
             for v in variants}
    base = found.get('default', {})
    for v in variants:
      if found[v]:
        rows.append(row(dataset, v, found[v], base))
        print(rows[-1], flush=True)
  common.exit_if_planning()
  cmd = ' '.join(['python', 'benchmarks/variants.py'] + sys.argv[1:])
  text = (
      '# Variants of the SASRec fine-tune (full ranking, history excluded)'
      f'\n\nTabulated {datetime.date.today()}; mean ± std over seeds, with'
      f'\n\n```\nREC_JAX_DATA_DIR=../shared/data {cmd}\n```\n\n'
      f'{HEADER}\n' + '\n'.join(rows) + '\n\n'
      'Each variant changes the recipe of `configs/sasrec.py` (dropout from '
      'the data: 0.5 on Beauty, 0.2 on ML-1M; embed 64, 2 layers, full-softmax CE, early stopping on validation '
      'NDCG@10 with patience 10) by its overrides only. Δ: relative change '
      'of the mean against `default` over the seeds both finished.\n')
  common.write_markdown(args.out, text)
  print(text)


if __name__ == '__main__':
  main()
