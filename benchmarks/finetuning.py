r"""Fine-tuning studies over one pretrained encoder per (dataset, seed).

  # Methods x datasets: test NDCG@10, trainable parameters, fine-tune time,
  # peak memory.
  REC_JAX_DATA_DIR=../shared/data python benchmarks/finetuning.py \
      --study=methods --datasets=beauty --methods=full,lora,prefix,adapter,frozen,partial

  # Each method's share of full fine-tuning against the length of the
  # pretraining it starts from (workroots <workroot>_pe<N>).
  REC_JAX_DATA_DIR=../shared/data python benchmarks/finetuning.py \
      --study=pretrain_length --datasets=lastfm --methods=full,lora \
      --pretrain_epochs=0,300,600

  # Test NDCG@10 against the fraction of users with labels, pretrained vs
  # scratch (the same fine-tune from random initialisation).
  REC_JAX_DATA_DIR=../shared/data python benchmarks/finetuning.py \
      --study=label_fraction --datasets=beauty,toys \
      --fractions=0.01,0.05,0.1,0.25,1

The encoder is pretrained once per (dataset, seed) with
`configs/<recipe>.py --stage=pretrain`; every fine-tune reads it through
`--config.init_from.path`. Runs live in benchmarks/work/finetuning/ and are
reused when finished; results go to benchmarks/results/finetune_<study>.*.
"""

import argparse
import datetime
import json
import os
import sys

import numpy as np

import baselines
import common
from common import mean_std

REPO = common.REPO
ARG = ['']  # ',smoke' etc., appended to every arg string.




def pretrained(recipe, dataset, seed, root, arg=''):
  """The pretraining stage of `recipe`, run unless its checkpoint is here
  (planned instead under $REC_JAX_BENCH_PLAN; an archived pretraining has
  no checkpoint to fine-tune from). Returns its directory."""
  workdir = os.path.join(root, f'pre_{recipe}_{dataset}_s{seed}')
  if not os.path.exists(os.path.join(workdir, 'pretrain', 'summary.json')):
    args = [f'--config=configs/{recipe}.py:dataset={dataset},seed={seed}{arg}',
            '--stage=pretrain']
    if not common.plan(args, workdir):
      cmd = common.main_command(args, workdir)
      print('+', ' '.join(cmd), flush=True)
      if rc := common.launch(cmd):
        raise SystemExit(f'run failed ({rc}): {" ".join(cmd)}')
  return os.path.join(workdir, 'pretrain')


def finetuned(args, root, dataset, seed, arg, workdir):
  """results.json of the fine-tune `arg` from the pretrained encoder of
  (dataset, seed), finished here or archived; else runs (or plans) the
  pretraining when its checkpoint is missing, then the fine-tune. None when
  only_finished and it has not finished."""
  pre = os.path.join(root, f'pre_{args.recipe}_{dataset}_s{seed}', 'pretrain')
  cmd = [f'--config=configs/{args.recipe}.py:dataset={dataset},seed={seed},'
         f'pretrain=false,{arg}{ARG[0]}', f'--config.init_from.path={pre}']
  r = common.run_main(cmd, workdir, only_finished=True)
  if r is not None or args.only_finished:
    return r
  pretrained(args.recipe, dataset, seed, root, ARG[0])
  return common.run_main(cmd, workdir)


def methods_study(args, seeds, root):
  rows = []
  for d in args.datasets.split(','):
    for m in args.methods.split(','):
      res, done = [], []
      for s in seeds:
        r = finetuned(args, root, d, s, f'finetune={m}',
                      os.path.join(root, f'{m}_{d}_s{s}'))
        if r is not None:
          res.append(r)
          done.append(s)
      if not res:
        continue
      rows.append(dict(
          dataset=d, method=m, seeds=len(res), seed_list=done,
          ndcg10=[r['test']['ndcg@10'] for r in res],
          trainable=res[0]['trainable_params'], total=res[0]['total_params'],
          minutes=np.mean([r['train_seconds'] for r in res]) / 60,
          peak_mb=np.mean([r.get('peak_rss_mb', 0.0) for r in res]),
          peak_device_mb=(np.mean([r['peak_device_mb'] for r in res])
                          if all(r.get('peak_device_mb') for r in res)
                          else None),
          init_valid=[r['init_valid']['ndcg@10'] for r in res
                      if r.get('init_valid')],
          hardware=common.hardware(res)))
  for r in rows:
    full = next((x for x in rows if x['dataset'] == r['dataset'] and
                 x['method'] == 'full'), None)
    r['share'], r['share_seeds'] = share_of(r, full)
  return rows, methods_markdown(rows)


def share_of(row, full):
  """(mean test NDCG@10 of `row` / that of full fine-tuning, the seeds
  used): over the seeds both finished, so that a seed finished on one side
  only cannot skew the share; (None, []) without a full row."""
  if full is None:
    return None, []
  both = [s for s in row['seed_list'] if s in full['seed_list']]
  if not both:
    return None, []
  pick = lambda r: np.mean([v for seed, v in zip(r['seed_list'], r['ndcg10'])
                            if seed in both])
  return float(pick(row) / pick(full)), both


def _seeds_used(seeds) -> str:
  """' (seed 1)' / ' (seeds 0,2)': which seeds a paired figure rests on."""
  return f' (seed{"s" if len(seeds) > 1 else ""} {",".join(map(str, seeds))})'


def _share_cell(r) -> str:
  if r.get('share') is None:
    return '–'
  out = f'{100 * r["share"]:.1f}%'
  seeds = r.get('share_seeds', [])
  if seeds and len(seeds) < r['seeds']:
    out += _seeds_used(seeds)
  return out


def methods_markdown(rows) -> str:
  """The methods study's table; 'vs full' compares seeds both finished,
  and the validation score before fine-tuning is the pretrained model's
  own where the method starts as the identity (LoRA, adapters)."""
  lines = ['| dataset | method | seeds | valid NDCG@10 before fine-tuning | '
           'test NDCG@10 | vs full | trainable params | % of total | '
           'fine-tune min | peak RSS MB | peak device MB | hardware |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["dataset"]} | {r["method"]} | {r["seeds"]} | '
        f'{mean_std(r["init_valid"]) if r.get("init_valid") else "–"} | '
        f'{mean_std(r["ndcg10"])} | {_share_cell(r)} | {r["trainable"]:,} | '
        f'{100 * r["trainable"] / r["total"]:.2f}% | {r["minutes"]:.1f} | '
        f'{r["peak_mb"]:.0f} | '
        + (f'{r["peak_device_mb"]:.0f}' if r['peak_device_mb'] else '–')
        + f' | {r["hardware"]} |')
  return '\n'.join(lines)


def pretrain_length_study(args, seeds, root):
  """The methods study once per pretraining length (`--pretrain_epochs`,
  0 = the recipe's own length), each in its own workroot (`<root>` for 0,
  else `<root>_pe<N>`), with each method's share of full fine-tuning from
  the same encoder: how much a longer pretraining buys the methods that
  freeze most of the encoder."""
  rows = []
  base = ARG[0]
  for n in (int(x) for x in args.pretrain_epochs.split(',')):
    ARG[0] = base + (f',pretrain_epochs={n}' if n else '')
    sub_root = root if not n else f'{root}_pe{n}'
    sub, _ = methods_study(args, seeds, sub_root)
    for r in sub:
      steps = []
      for seed in seeds:
        pre = common.finished_dir(
            os.path.join(sub_root, f'pre_{args.recipe}_{r["dataset"]}_s{seed}'),
            'pretrain/summary.json')
        if pre:
          with open(os.path.join(pre, 'pretrain', 'summary.json'),
                    encoding='utf-8') as f:
            steps.append(json.load(f)['steps'])
      rows.append(dict(r, pretrain_epochs=n, pretrain_steps=steps))
  ARG[0] = base
  return rows, pretrain_length_markdown(rows)


def pretrain_length_markdown(rows) -> str:
  """The pretrain_length study's table: full fine-tuning first, then each
  method by pretraining length; the validation score of the pretrained
  model before fine-tuning where the runs recorded it."""
  lines = ['| dataset | pretraining epochs | pretraining steps | method | '
           'seeds | valid NDCG@10 before fine-tuning | test NDCG@10 | '
           'vs full | % trainable | hardware |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for r in sorted(rows, key=lambda r: (r['dataset'], r['method'] != 'full',
                                       r['method'], r['pretrain_epochs'])):
    lines.append(
        f'| {r["dataset"]} | {r["pretrain_epochs"] or "recipe"} | '
        f'{"/".join(map(str, sorted(set(r["pretrain_steps"])))) or "–"} | '
        f'{r["method"]} | {r["seeds"]} | '
        f'{mean_std(r["init_valid"]) if r.get("init_valid") else "–"} | '
        f'{mean_std(r["ndcg10"])} | {_share_cell(r)} | '
        f'{100 * r["trainable"] / r["total"]:.2f}% | {r["hardware"]} |')
  return '\n'.join(lines)


def plot_pretrain_length(rows, path):
  fig, panels = common.dataset_panels([r['dataset'] for r in rows])
  for ax, d in panels:
    for m in sorted({r['method'] for r in rows if r['dataset'] == d}):
      sub = sorted((r for r in rows if r['dataset'] == d and
                    r['method'] == m and r['pretrain_steps']),
                   key=lambda r: np.mean(r['pretrain_steps']))
      ax.plot([np.mean(r['pretrain_steps']) for r in sub],
              [np.mean(r['ndcg10']) for r in sub], marker='o', label=m)
    common.finish_panel(ax, d, 'pretraining steps', 'test NDCG@10')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def fraction_study(args, seeds, root):
  """Pretrained vs scratch at each label fraction. At fraction 1 the
  pretrained run is the methods study's `full` run (the same command) and,
  with --reuse_scratch, the scratch run is the SASRec baseline (the same
  fine-tune; see benchmarks/ablations.py)."""
  rows = []
  fractions = [float(f) for f in args.fractions.split(',')]
  for d in args.datasets.split(','):
    for f in fractions:
      for init in ('pretrained', 'scratch'):
        res = []
        for s in seeds:
          if init == 'scratch' and f == 1 and args.reuse_scratch:
            r = baselines.run_one('sasrec', d, s, args.reuse_scratch, [],
                                  only_finished=True)
            if r is None and not (args.only_finished or common.planning()):
              raise FileNotFoundError(
                  f'--reuse_scratch: no finished sasrec_{d}_s{s} in '
                  f'{args.reuse_scratch}')
          elif init == 'pretrained':
            name = f'full_{d}_s{s}' if f == 1 else f'lf{f:g}_{init}_{d}_s{s}'
            r = finetuned(args, root, d, s, f'label_fraction={f}',
                          os.path.join(root, name))
          else:
            r = common.run_main(
                [f'--config=configs/{args.recipe}.py:dataset={d},seed={s},'
                 f'pretrain=false,label_fraction={f}{ARG[0]}'],
                os.path.join(root, f'lf{f:g}_{init}_{d}_s{s}'),
                only_finished=args.only_finished)
          if r is not None:
            res.append(dict(r, seed=s))
        if res:
          rows.append(dict(dataset=d, fraction=f, init=init, seeds=len(res),
                           seed_list=[r['seed'] for r in res],
                           ndcg10=[r['test']['ndcg@10'] for r in res],
                           hr10=[r['test']['hr@10'] for r in res],
                           train_seconds=[r['train_seconds'] for r in res],
                           epochs=[r['epochs'] for r in res],
                           hardware=common.hardware(res)))
  lines = ['| dataset | label fraction | pretrained NDCG@10 | scratch NDCG@10 '
           '| ratio | pretrained HR@10 | scratch HR@10 | fine-tune min '
           '(pre / scratch) | hardware |',
           '|---|---|---|---|---|---|---|---|---|']
  get = lambda d, f, i: next((r for r in rows if r['dataset'] == d and
                              r['fraction'] == f and r['init'] == i), None)
  fmt = lambda r, k: mean_std(r[k]) + (f' ({r["seeds"]})' if r['seeds'] !=
                                       len(seeds) else '') if r else '–'
  for d in args.datasets.split(','):
    for f in fractions:
      p, s = get(d, f, 'pretrained'), get(d, f, 'scratch')
      if not (p or s):
        continue
      ratio = paired_ratio(p, s) if p and s else '–'
      mins = ' / '.join(f'{np.mean(r["train_seconds"]) / 60:.1f}' if r
                        else '–' for r in (p, s))
      hw = ' / '.join(r['hardware'] if r else '–' for r in (p, s))
      lines.append(f'| {d} | {f:g} | {fmt(p, "ndcg10")} | '
                   f'{fmt(s, "ndcg10")} | {ratio} | {fmt(p, "hr10")} | '
                   f'{fmt(s, "hr10")} | {mins} | {hw} |')
  return rows, '\n'.join(lines)


def paired_ratio(p, s) -> str:
  """Mean pretrained / mean scratch NDCG@10 over the seeds both have (a
  seed finished on one side only would skew the ratio); names those seeds
  when they are not all of either side's."""
  ratio, both = share_of(p, s)
  if ratio is None:
    return '–'
  out = f'{ratio:.2f}x'
  if len(both) < max(len(p['seed_list']), len(s['seed_list'])):
    out += _seeds_used(both)
  return out


def plot_fractions(rows, path):
  fig, panels = common.dataset_panels([r['dataset'] for r in rows])
  for ax, d in panels:
    for init in ('pretrained', 'scratch'):
      sub = sorted((r for r in rows if r['dataset'] == d and
                    r['init'] == init), key=lambda r: r['fraction'])
      ax.errorbar([r['fraction'] for r in sub],
                  [np.mean(r['ndcg10']) for r in sub],
                  yerr=[np.std(r['ndcg10']) for r in sub], marker='o',
                  label=init, capsize=3)
    ax.set_xscale('log')
    common.finish_panel(ax, d, 'fraction of users with labels',
                        'test NDCG@10')
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--study', choices=('methods', 'label_fraction',
                                     'pretrain_length'), required=True)
  p.add_argument('--recipe', default='recommended')
  p.add_argument('--datasets', default='beauty')
  p.add_argument('--methods', default='full,lora,prefix,adapter,frozen,partial')
  p.add_argument('--fractions', default='0.01,0.05,0.1,0.25,1')
  p.add_argument('--pretrain_epochs', default='0,300,600',
                 help='pretrain_length: pretraining lengths (0 = the '
                 "recipe's); each has its workroot <workroot>_pe<N>")
  p.add_argument('--seeds', default='0')
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'finetuning'))
  p.add_argument('--out', default='')
  p.add_argument('--arg', default='', help='appended to every arg string')
  p.add_argument('--reuse_scratch', default='',
                 help='label_fraction: take the fraction-1 scratch runs from '
                 'DIR/sasrec_<dataset>_s<seed> (e.g. benchmarks/work/baselines)')
  p.add_argument('--only_finished', action='store_true',
                 help='tabulate finished runs only; run nothing')
  args = p.parse_args()
  ARG[0] = f',{args.arg}' if args.arg else ''
  seeds = [int(s) for s in args.seeds.split(',')]
  study = dict(methods=methods_study, label_fraction=fraction_study,
               pretrain_length=pretrain_length_study)[args.study]
  rows, table = study(args, seeds, os.path.abspath(args.workroot))
  common.exit_if_planning()
  out = args.out or os.path.join(REPO, 'benchmarks', 'results',
                                 f'finetune_{args.study}')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  cmd = ' '.join(['python', 'benchmarks/finetuning.py'] + sys.argv[1:])
  text = (f'# Fine-tuning: {args.study}\n\nTabulated '
          f'{datetime.date.today()}; times come from the machine in the '
          f'hardware column; test metrics (full ranking, history excluded), '
          f'with\n\n```\n'
          f'REC_JAX_DATA_DIR=../shared/data {cmd}\n```\n\n{table}\n')
  common.write_markdown(out + '.md', text)
  with open(out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(command=cmd, rows=rows), f, indent=2, default=float)
  if args.study == 'label_fraction':
    plot_fractions(rows, out + '.png')
  if args.study == 'pretrain_length':
    plot_pretrain_length(rows, out + '.png')
  print(text)


if __name__ == '__main__':
  main()
