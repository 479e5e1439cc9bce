r"""Text-aware items on Amazon Scientific: does item text help, does the
pretrained language model matter, can cold items be recommended; plus the
text encoder's throughput and what the embedding cache saves.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/text.py --seeds=0

Runs (configs/recommended.py:dataset=scientific, test NDCG@10 / HR@10,
full ranking, history excluded; workdirs under benchmarks/work/text/,
reused when finished):
  ids          text=false                     (ID embeddings only)
  text         text=true                      (ID + MiniLM text, adaptor)
  text_random  text=true, text_random_init    (the same text encoder from
                                               random initialisation)
  cold_ids     text=false, cold_fraction=0.1  test_cold: items never seen
  cold_text    text=true inductive, cold 0.1  in training
  text_dapt    text=true with the text encoder first adapted by masked
               language modelling on the items' text (rec_jax.text_mlm,
               --mlm_steps)
  text_scratch_mlm  the same MLM budget on the same texts from random
               initialisation (--scratch_lr): a text encoder trained
               from scratch
  inductive    text=true inductive, pretrain=false   } cross-domain: the
  cross        the same, initialised from a text      } same fine-tune with
               inductive encoder pretrained on        } and without
               --source (ml-1m titles and genres)     } pretraining elsewhere
  text_tune1   text=true, the top MiniLM block tuned end to end with the
               recommender (model.text_tune_layers=1)
  text_tune1_lora  the same with finetune=lora (adapters on that block and
               the recommender; meant with --arg=pretrain=true)
  (text_tune1* run only when named in --runs: every step runs the block
  over every item's tokens, an accelerator's job.)
Writes benchmarks/results/text.{md,json}.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import common
from common import mean_std

REPO = common.REPO
sys.path.insert(0, REPO)

RUNS = {
    'ids': ('text=false', []),
    'text': ('text=true', []),
    'text_random': ('text=true', ['--config.model.text_random_init=true']),
    # The top MiniLM block trained with the recommender (accelerator-sized:
    # every step runs it over every item's tokens).
    'text_tune1': ('text=true', ['--config.model.text_tune_layers=1',
                                 '--config.model.text_max_length=64']),
    # The same with rank-8 LoRA on the block (and the recommender's
    # blocks and table: finetune=lora), meant after pretraining
    # (--arg=pretrain=true).
    'text_tune1_lora': ('text=true,finetune=lora',
                        ['--config.model.text_tune_layers=1',
                         '--config.model.text_max_length=64']),
    'cold_ids': ('text=false', ['--config.data.cold_fraction=0.1']),
    'cold_text': ('text=true', ['--config.data.cold_fraction=0.1',
                                '--config.model.text_mode=inductive']),
    'text_dapt': ('text=true', ['--config.model.text_model={dapt}']),
    'text_scratch_mlm': ('text=true',
                         ['--config.model.text_model={scratch}']),
    'inductive': ('text=true,pretrain=false',
                  ['--config.model.text_mode=inductive']),
    'cross': ('text=true,pretrain=false',
              ['--config.model.text_mode=inductive',
               '--config.init_from.path={source}',
               '--config.init_from.allow_mismatch=encoder/item_embed']),
}
OPTIONS = {}


def _subprocess(cmd):
  if os.environ.get(common.PLAN_ENV):
    raise SystemExit(f'${common.PLAN_ENV} is set, but this run needs its '
                     f'inputs made first (they cannot be planned): {cmd}')
  print('+', ' '.join(cmd), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True)


def dapt_folder(dataset, root, scratch=False):
  """MiniLM after MLM on the items' text; with `scratch`, the same
  architecture MLM-trained from random initialisation (--scratch_lr)."""
  out = os.path.join(root, f'minilm_mlm{"_scratch" if scratch else ""}_'
                     f'{dataset}')
  if not (OPTIONS['only_finished'] or
          os.path.exists(os.path.join(out, 'adaptation.json'))):
    _subprocess([sys.executable, '-m', 'rec_jax.text_mlm',
                 f'--config=configs/recommended.py:dataset={dataset}',
                 f'--out={out}', f'--steps={OPTIONS["mlm_steps"]}']
                + (['--random_init', f'--lr={OPTIONS["scratch_lr"]}']
                   if scratch else []))
  return out


def source_pretrain(seed, root):
  source = OPTIONS['source']
  workdir = os.path.join(root, f'source_{source}_s{seed}')
  if not (OPTIONS['only_finished'] or os.path.exists(
      os.path.join(workdir, 'pretrain', 'summary.json'))):
    _subprocess([sys.executable, '-m', 'rec_jax.main',
                 f'--config=configs/recommended.py:dataset={source},'
                 f'seed={seed},text=true', f'--workdir={workdir}',
                 '--stage=pretrain', '--config.model.text_mode=inductive'])
  return os.path.join(workdir, 'pretrain')


def run(name, seed, root, dataset):
  arg, extra = RUNS[name]
  if OPTIONS['arg']:
    have = {a.split('=')[0] for a in arg.split(',')}
    arg = ','.join([arg] + [a for a in OPTIONS['arg'].split(',')
                            if a.split('=')[0] not in have])
    name_tag = f'{name}-{OPTIONS["arg"].replace("=", "").replace(",", "-")}'
  else:
    name_tag = name
  if name == 'text_dapt' and extra:
    extra = [e.format(dapt=dapt_folder(dataset, root)) for e in extra]
  if name == 'text_scratch_mlm' and extra:
    extra = [e.format(scratch=dapt_folder(dataset, root, scratch=True))
             for e in extra]
  if name == 'cross' and extra:
    extra = [e.format(source=source_pretrain(seed, root)) for e in extra]
  workdir = os.path.join(root, f'{name_tag}_{dataset}_s{seed}')
  return common.run_main(
      [f'--config=configs/recommended.py:dataset={dataset},seed={seed},'
       f'{arg}', *extra], workdir, only_finished=OPTIONS['only_finished'])


def throughput(dataset):
  """Items/s of the text encoder on the dataset's item texts (fresh cache),
  then the time to load the same embeddings from the cache."""
  from rec_jax import item_text  # pylint: disable=g-import-not-at-top
  from rec_jax.data import datasets  # pylint: disable=g-import-not-at-top
  ds = datasets.load(dataset)
  old = os.environ.get('REC_JAX_CACHE_DIR')
  tmp = tempfile.mkdtemp()
  try:
    # Weights stay where they are; only the embedding cache is fresh.
    from rec_jax import text_encoder  # pylint: disable=g-import-not-at-top
    folder = text_encoder.model_dir()
    os.environ['REC_JAX_CACHE_DIR'] = tmp
    t = time.perf_counter()
    enc = text_encoder.TextEncoder(folder)
    load_s = time.perf_counter() - t
    _, first = item_text.item_embeddings(ds, encoder=enc)
    _, second = item_text.item_embeddings(ds, encoder=enc)
    # The runs below read the same embeddings from the real cache.
    if old is not None:
      real = os.path.join(old, 'text_embeddings',
                          os.path.basename(first['path']))
      os.makedirs(os.path.dirname(real), exist_ok=True)
      if not os.path.exists(real):
        shutil.copy(first['path'], real)
  finally:
    if old is None:
      os.environ.pop('REC_JAX_CACHE_DIR', None)
    else:
      os.environ['REC_JAX_CACHE_DIR'] = old
    shutil.rmtree(tmp, ignore_errors=True)
  return dict(items=first['items'], encoder_load_s=load_s,
              embed_s=first['seconds'], items_per_s=first['items_per_s'],
              cache_load_s=second['seconds'],
              saved_s=first['seconds'] + load_s - second['seconds'])


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--dataset', default='scientific')
  p.add_argument('--seeds', default='0')
  p.add_argument('--runs', default=','.join(r for r in RUNS
                                            if r not in ACCELERATOR_RUNS),
                 help=f'of {sorted(RUNS)}; {ACCELERATOR_RUNS} only when '
                 'named (accelerator-sized)')
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'text'))
  p.add_argument('--mlm_steps', type=int, default=300)
  p.add_argument('--scratch_lr', type=float, default=5e-4,
                 help='MLM learning rate of the from-scratch text encoder')
  p.add_argument('--source', default='ml-1m')
  p.add_argument('--arg', default='',
                 help="appended to every arg string, e.g. 'pretrain=false'")
  p.add_argument('--out', default='', help='default benchmarks/results/'
                 'text (text_<arg> with --arg)')
  p.add_argument('--only_finished', action='store_true',
                 help='tabulate the finished runs, launch nothing')
  args = p.parse_args()
  seeds = [int(s) for s in args.seeds.split(',')]
  names = args.runs.split(',')
  OPTIONS.update(mlm_steps=args.mlm_steps, scratch_lr=args.scratch_lr,
                 source=args.source, arg=args.arg,
                 only_finished=args.only_finished)
  if not args.out:
    tag = args.arg.replace('=', '').replace(',', '-')
    args.out = os.path.join(REPO, 'benchmarks', 'results',
                            'text' + (f'_{tag}' if tag else ''))
  saved = os.path.join(args.workroot, f'throughput_{args.dataset}.json')
  if os.path.exists(saved):  # measured once per work root.
    with open(saved, encoding='utf-8') as f:
      speed = json.load(f)
  else:
    speed = throughput(args.dataset)
    os.makedirs(args.workroot, exist_ok=True)
    with open(saved, 'w', encoding='utf-8') as f:
      json.dump(speed, f)
  res = {n: {s: run(n, s, args.workroot, args.dataset) for s in seeds}
         for n in names}
  common.exit_if_planning()
  res = {n: {s: r for s, r in v.items() if r is not None}
         for n, v in res.items()}
  names = [n for n in names if res[n]]
  rows = []
  for n in names:
    rs = list(res[n].values())
    row = dict(run=n, seeds=len(rs), seed_list=list(res[n]),
               ndcg10=[r['test']['ndcg@10'] for r in rs],
               hr10=[r['test']['hr@10'] for r in rs],
               minutes=float(np.mean([r['train_seconds'] + r.get(
                   'pretrain_seconds', 0) for r in rs]) / 60))
    if 'test_cold' in rs[0]:
      row['cold_ndcg10'] = [r['test_cold']['ndcg@10'] for r in rs]
      row['cold_hr10'] = [r['test_cold']['hr@10'] for r in rs]
      row['cold_users'] = rs[0]['test_cold_users']
      row['num_items'] = rs[0]['num_items']
    rows.append(row)
  cmd = 'python benchmarks/text.py ' + ' '.join(sys.argv[1:])
  lines = [f'# Text-aware items on {args.dataset} '
           f'({datetime.date.today()})', '',
           f'`REC_JAX_DATA_DIR=../shared/data {cmd}` on {platform.machine()} '
           f'({os.cpu_count()} CPU cores). configs/recommended.py'
           + (f' with `{args.arg}`' if args.arg else ' (pretrain then '
              'fine-tune)') + ', test metrics, full ranking, history '
           'excluded.',
           '', '| run | seeds | test NDCG@10 | test HR@10 | cold NDCG@10 '
           '| cold HR@10 | minutes |', '|---|---|---|---|---|---|---|']
  for r in rows:
    cold = (mean_std(r['cold_ndcg10']), mean_std(r['cold_hr10'])) if (
        'cold_ndcg10' in r) else ('–', '–')
    lines.append(f'| {r["run"]} | {r["seeds"]} | {mean_std(r["ndcg10"])} | '
                 f'{mean_std(r["hr10"])} | {cold[0]} | {cold[1]} | '
                 f'{r["minutes"]:.1f} |')
  cold_rows = [r for r in rows if 'cold_users' in r]
  if cold_rows:
    r = cold_rows[0]
    lines += ['', f'Cold start: {r["cold_users"]} test users whose target '
              'never occurs in training; a random ranking of the '
              f'{r["num_items"]} items gives NDCG@10 about '
              f'{_random_ndcg(r["num_items"]):.4f}.']
  lines += comparisons(res)
  lines += extra_costs(names, args.workroot, args.dataset, seeds)
  lines += ['', f'Text encoder (all-MiniLM-L6-v2 in our Flax BERT): '
            f'{speed["items"]} item texts embedded at '
            f'{speed["items_per_s"]:.0f} items/s ({speed["embed_s"]:.1f} s, '
            f'plus {speed["encoder_load_s"]:.1f} s to load the encoder); '
            f'from the cache: {speed["cache_load_s"] * 1000:.1f} ms '
            f'(saves {speed["saved_s"]:.1f} s per run).', '']
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  plot(rows, args.out + '.png')
  lines += [f'![test NDCG@10 by run]({os.path.basename(args.out)}.png)', '']
  common.write_markdown(args.out + '.md', '\n'.join(lines))
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(date=str(datetime.date.today()), command=cmd, rows=rows,
                   throughput=speed), f, indent=2)
  print('\n'.join(lines))


ACCELERATOR_RUNS = ('text_tune1', 'text_tune1_lora')

# (run, baseline, what the comparison asks), metric 'test' or 'test_cold'.
COMPARISONS = (
    ('text', 'ids', 'test', 'item text (ID + text) vs IDs only'),
    ('text', 'text_random', 'test', 'pretrained language model vs the same '
     'encoder from random initialisation'),
    ('text_dapt', 'text_random', 'test', 'pretrained + domain-adaptive MLM '
     'vs random initialisation'),
    ('text_dapt', 'text', 'test', 'domain-adaptive MLM vs none'),
    ('text_tune1', 'text', 'test', 'top text block tuned end to end vs '
     'frozen text features'),
    ('text_tune1_lora', 'text_tune1', 'test', 'LoRA on the tuned text '
     'block (and the recommender) vs tuning it fully'),
    ('text', 'text_scratch_mlm', 'test', 'pretrained language model vs the '
     'same encoder MLM-trained from scratch on the item texts'),
    ('text_dapt', 'text_scratch_mlm', 'test', 'pretrained + domain-adaptive '
     'MLM vs MLM from scratch (same steps)'),
    ('cold_text', 'cold_ids', 'test_cold', 'cold items: inductive text vs '
     'IDs'),
    ('cross', 'inductive', 'test', 'cross-domain sequence pretraining vs '
     'none'),
)


def comparisons(res) -> list[str]:
  """Paired differences of test NDCG@10 over the seeds both runs have."""
  out = []
  for a, b, split, what in COMPARISONS:
    if a not in res or b not in res:
      continue
    common_seeds = sorted(set(res[a]) & set(res[b]))
    if not common_seeds:
      continue
    va = np.array([res[a][s][split]['ndcg@10'] for s in common_seeds])
    vb = np.array([res[b][s][split]['ndcg@10'] for s in common_seeds])
    rel = (f'{(va.mean() / vb.mean() - 1) * 100:+.1f}%' if vb.mean() > 0
           else 'n/a (baseline 0)')
    wins = int((va > vb).sum())
    out.append(f'| {what} | {a} vs {b} | {split} | {len(common_seeds)} | '
               f'{va.mean():.4f} vs {vb.mean():.4f} | {rel} | '
               f'{wins}/{len(common_seeds)} |')
  if out:
    out = ['', '| comparison | runs | split | seeds | NDCG@10 | relative | '
           'better on seeds |', '|---|---|---|---|---|---|---|'] + out
  return out


def extra_costs(names, root, dataset, seeds) -> list[str]:
  """What the DAPT / scratch-MLM folders and the cross-domain source
  pretraining cost (not in the runs' own minutes)."""
  out = []
  for name, tag in (('text_dapt', ''), ('text_scratch_mlm', '_scratch')):
    path = os.path.join(root, f'minilm_mlm{tag}_{dataset}', 'adaptation.json')
    if name in names and os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        a = json.load(f)
      init = ('random initialisation' if a.get('init') == 'random'
              else 'all-MiniLM-L6-v2')
      out.append(f'- {name}: MLM on the item texts from {init}, '
                 f'{a["steps"]} steps of {a["batch_size"]} texts, lr '
                 f'{a["lr"]:g}: loss {a["losses"][0][1]:.2f} -> '
                 f'{a["losses"][-1][1]:.2f}, {a["seconds"] / 60:.1f} min.')
  if 'cross' in names:
    for s in seeds:
      run_dir = common.finished_dir(
          os.path.join(root, f'source_{OPTIONS["source"]}_s{s}'),
          'pretrain/summary.json')
      path = os.path.join(run_dir or '', 'pretrain', 'summary.json')
      if run_dir:
        with open(path, encoding='utf-8') as f:
          p = json.load(f)
        out.append(f'- cross (seed {s}): source {OPTIONS["source"]} '
                   f'pretraining (inductive text, {p["epochs"]} epochs, '
                   f'{p["steps"]} steps) took {p["train_seconds"] / 60:.1f} '
                   'min.')
  return ([''] + out) if out else []


def plot(rows, path):
  plt = common.pyplot()
  fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 2, 3.2))
  x = np.arange(len(rows))
  mean = [np.mean(r['ndcg10']) for r in rows]
  err = [np.std(r['ndcg10'], ddof=1) if len(r['ndcg10']) > 1 else 0
         for r in rows]
  ax.bar(x, mean, yerr=err, color='tab:blue', label='test')
  cold = [(i, np.mean(r['cold_ndcg10'])) for i, r in enumerate(rows)
          if 'cold_ndcg10' in r]
  if cold:
    ax.bar([i + 0.3 for i, _ in cold], [v for _, v in cold], width=0.3,
           color='tab:orange', label='test_cold')
  ax.set_xticks(x, [f'{r["run"]}\n({r["seeds"]} seeds)' for r in rows],
                fontsize=8)
  ax.set_ylabel('NDCG@10')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _random_ndcg(num_items: int, k: int = 10) -> float:
  """Expected NDCG@k of a uniformly random ranking of num_items."""
  return float(sum(1 / np.log2(r + 2) for r in range(k)) / num_items)


if __name__ == '__main__':
  main()
