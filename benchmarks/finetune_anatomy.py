r"""Where a full fine-tune's gain lives: the item table or the blocks.

Reads a pretraining run and the full fine-tune that started from it (the
layout of benchmarks/finetuning.py: `pre_<recipe>_<dataset>_s<seed>` and
`full_<dataset>_s<seed>` under one workroot; both need their checkpoints)
and scores these models on validation (full ranking, history excluded):

  pretrained   the encoder as pretraining left it;
  full         the full fine-tune;
  full + pretrained table   the fine-tuned blocks with the pretrained item
                            table; then that table moved by the common
                            shift of the fine-tune's move (which no
                            ranking sees), and by that plus the best
                            rank-r approximation of the rest (`--rank`,
                            LoRA's table rank: what such an update could
                            give);
  pretrained + full table   the pretrained blocks with the fine-tuned table;
  full + linear map        the fine-tuned blocks on the pretrained table
                            under the best shared affine map towards the
                            fine-tuned table (D x D + D parameters), then
                            also moved by the best rank-r approximation of
                            what the map leaves;
  full + frequent rows      the fine-tuned blocks on the shifted pretrained
                            table with the fine-tuned rows of the k most
                            frequent training items (`--top_rows`): what a
                            method that spends its budget on the rows of
                            popular items (k x embed_dim parameters) could
                            give.

It also describes how the item table moved: |dE| / |E| (dE = fine-tuned
minus pretrained rows of the real items), the share of |dE|^2 that is a
common shift of every row, the share of the rest in its top r singular
directions, and the share a shared linear map of the pretrained table
explains.
Methods that freeze the table (LoRA, prefix, adapters, frozen + head) are
bounded by these figures.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/finetune_anatomy.py \
      --datasets=lastfm --workroot=benchmarks/work/finetuning
"""

import argparse
import datetime
import json
import os
import sys

import jax
import numpy as np

import common

RANKS = (1, 2, 4, 8, 16, 32)


def _swap_table(base, other):
  """`base` with the item table (every `item_embed` leaf) of `other`."""
  flat, tree = jax.tree_util.tree_flatten_with_path(base)
  theirs = {jax.tree_util.keystr(k): v
            for k, v in jax.tree_util.tree_flatten_with_path(other)[0]}
  return jax.tree_util.tree_unflatten(tree, [
      theirs[jax.tree_util.keystr(k)]
      if 'item_embed' in jax.tree_util.keystr(k) else v for k, v in flat])


def _table(params, num_items: int) -> np.ndarray:
  """Rows 1..num_items (the real items) of the item table."""
  enc = params['encoder']
  return np.asarray(enc['item_embed'])[1:num_items + 1]


def _with_rows(params, rows: np.ndarray):
  """`params` with rows 1..len(rows) of the item table replaced."""
  table = params['encoder']['item_embed']
  new = np.asarray(table).copy()
  new[1:len(rows) + 1] = rows
  enc = dict(params['encoder'],
             item_embed=jax.device_put(new, table.sharding))
  return dict(params, encoder=enc)


def best_rank(d: np.ndarray, rank: int) -> np.ndarray:
  """The best rank-`rank` approximation of `d` (truncated SVD)."""
  if not rank:  # linear_map's default: no SVD to pay for.
    return np.zeros_like(d)
  u, s, vt = np.linalg.svd(d, full_matrices=False)
  return (u[:, :rank] * s[:rank]) @ vt[:rank]


def shift_and_rank(e0: np.ndarray, e1: np.ndarray, rank: int):
  """e0 moved by the common shift of e1 - e0 (its mean row) and by the best
  rank-`rank` approximation of the rest of the move."""
  d = e1 - e0
  shift = d.mean(0)
  return e0 + shift + best_rank(d - shift, rank)


def linear_map(e0: np.ndarray, e1: np.ndarray, rank: int = 0):
  """The best affine map of e0 towards e1 (least squares: one shared
  [D, D] matrix and shift for every row), plus the best rank-`rank`
  approximation of what it leaves of e1: what a table adapter of D^2 + D
  (+ rank x (rows + D)) parameters could give."""
  x = np.concatenate([e0, np.ones((len(e0), 1), e0.dtype)], 1)
  mapped = x @ np.linalg.lstsq(x, e1, rcond=None)[0]
  return mapped + best_rank(e1 - mapped, rank)


def most_frequent(counts: np.ndarray, k: int) -> np.ndarray:
  """Indices of the `k` largest counts (ties: the lower index first)."""
  return np.argsort(-counts, kind='stable')[:k]


def frequent_rows(e0: np.ndarray, e1: np.ndarray, top: np.ndarray):
  """e0 moved by the common shift of e1 - e0, with the rows `top` taken
  from e1."""
  out = e0 + (e1 - e0).mean(0)
  out[top] = e1[top]
  return out


def table_change(e0: np.ndarray, e1: np.ndarray, counts: np.ndarray) -> dict:
  """How the item table moved from e0 to e1 (rows: items). A common shift
  of every row (the move's mean row) changes no ranking through the tied
  output layer (softmax ignores a logit shared by all items), so the rank
  shares describe the move without it."""
  d = e1 - e0
  shift = d.mean(0)
  s = np.linalg.svd(d - shift, compute_uv=False)
  energy = np.cumsum(s ** 2) / max(float(np.sum(s ** 2)), 1e-30)
  w = np.linalg.lstsq(e0, e1, rcond=None)[0]
  linear = 1 - (np.linalg.norm(e1 - e0 @ w) ** 2 /
                max(np.linalg.norm(d) ** 2, 1e-30))
  log_n = np.log1p(counts)
  corr = lambda x: float(np.corrcoef(log_n, x)[0, 1])
  return dict(
      relative_change=float(np.linalg.norm(d) / np.linalg.norm(e0)),
      common_shift_share=float(len(d) * np.sum(shift ** 2) /
                               max(np.linalg.norm(d) ** 2, 1e-30)),
      energy_top_rank={str(r): float(energy[min(r, len(energy)) - 1])
                       for r in RANKS},
      linear_map_share=float(linear),
      corr_log_count_norm_pretrained=corr(np.linalg.norm(e0, axis=1)),
      corr_log_count_norm_finetuned=corr(np.linalg.norm(e1, axis=1)))


def anatomy(pre_dir: str, full_dir: str, args: list[str],
            rank: int = 2, top_rows=()) -> dict:
  """Scores and table change of one (pretraining, full fine-tune) pair;
  `args` is the fine-tune's command line (for its config); `rank`: of the
  table move given to the fine-tuned blocks (LoRA's table rank);
  `top_rows`: the k of the frequent-rows scores."""
  # rec_jax (datasets, models) loads here, not at import.
  from rec_jax import evaluate  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top
  from rec_jax.tasks import ctr  # pylint: disable=g-import-not-at-top
  config = common.config_of(args)
  ds, split = trainer.load_data(config)
  mesh = sharding.make_mesh(config.mesh)
  graphdef, full, _ = trainer.load_trained(
      config, os.path.join(full_dir, 'finetune'), ds.num_items, mesh)
  evaluator = evaluate.make_evaluator(config, graphdef, mesh, ds.num_items)
  _, pre, _ = trainer.load_trained(config, pre_dir, ds.num_items, mesh,
                                   encoder_only=True)
  score = lambda p, name: float(evaluator.full_ranking(
      p, split.valid_history, split.valid_target, desc=name)[0]['ndcg@10'])
  counts = ctr.train_counts(split.train, ds.num_items)[1:]  # real items
  e0, e1 = _table(pre, ds.num_items), _table(full, ds.num_items)
  targets = np.bincount(np.asarray(split.valid_target),
                        minlength=ds.num_items + 1)[1:]
  rows = []
  for k in top_rows:
    top = most_frequent(counts, k)
    rows.append(dict(
        k=k, params=int(k * e0.shape[1]),
        train_share=float(counts[top].sum() / counts.sum()),
        valid_target_share=float(targets[top].sum() / max(targets.sum(), 1)),
        valid_ndcg10=score(_with_rows(full, frequent_rows(e0, e1, top)),
                           f'full + {k} frequent rows')))
  return dict(
      rank=rank,
      valid_ndcg10=dict(
          pretrained=score(pre, 'pretrained'),
          full=score(full, 'full'),
          full_with_pretrained_table=score(_swap_table(full, pre),
                                           'full + pretrained table'),
          full_with_pretrained_table_shifted=score(
              _with_rows(full, shift_and_rank(e0, e1, 0)),
              'full + pretrained table + shift'),
          full_with_rank_move=score(
              _with_rows(full, shift_and_rank(e0, e1, rank)),
              f'full + pretrained table + shift + rank {rank}'),
          full_with_linear_map=score(
              _with_rows(full, linear_map(e0, e1)),
              'full + linearly mapped pretrained table'),
          full_with_linear_map_rank=score(
              _with_rows(full, linear_map(e0, e1, rank)),
              f'full + linearly mapped pretrained table + rank {rank}'),
          pretrained_with_full_table=score(_swap_table(pre, full),
                                           'pretrained + full table')),
      table=table_change(e0, e1, counts),
      frequent_rows=rows)


def _fmt(x) -> str:
  """A score, or '–' for one a row (tabulated earlier) lacks."""
  return '–' if x is None else f'{x:.4f}'


def markdown(rows, cmd: str) -> str:
  lines = [
      f'# Fine-tuning anatomy: item table vs blocks\n\nTabulated '
      f'{datetime.date.today()}; validation NDCG@10 (full ranking, history '
      f'excluded), with\n\n```\nREC_JAX_DATA_DIR=../shared/data {cmd}\n```\n',
      '| dataset | seed | pretrained | full | full + pretrained table | '
      '+ shift | + shift + rank-r move | + linear map | + linear map + '
      'rank-r move | pretrained + full table | '
      '\\|dE\\| / \\|E\\| | common shift share | '
      + ' | '.join(f'rank {r} share' for r in RANKS)
      + ' | shared linear map share |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|' + '---|' * len(RANKS)
      + '---|']
  for r in rows:
    v, t = r['valid_ndcg10'], r['table']
    lines.append(
        f'| {r["dataset"]} | {r["seed"]} | {v["pretrained"]:.4f} | '
        f'{v["full"]:.4f} | {v["full_with_pretrained_table"]:.4f} | '
        f'{v["full_with_pretrained_table_shifted"]:.4f} | '
        f'{v["full_with_rank_move"]:.4f} (r={r["rank"]}) | '
        f'{_fmt(v.get("full_with_linear_map"))} | '
        f'{_fmt(v.get("full_with_linear_map_rank"))} | '
        f'{v["pretrained_with_full_table"]:.4f} | '
        f'{t["relative_change"]:.2f} | {t["common_shift_share"]:.1%} | '
        + ' | '.join(f'{t["energy_top_rank"][str(k)]:.1%}' for k in RANKS)
        + f' | {t["linear_map_share"]:.1%} |')
  lines.append(
      '\nThe scores are validation NDCG@10 of: the pretrained model, the '
      'full fine-tune, its blocks on the pretrained item table, the same '
      'table moved by the common shift of dE (dE: the fine-tuned minus the '
      'pretrained table; the shift is its mean row), the same plus the best '
      'rank-r approximation of the rest of dE (what a rank-r table update '
      'could give the fine-tuned blocks), the blocks on the pretrained '
      'table under the best shared affine map towards the fine-tuned one '
      '(a [D, D] matrix and a shift: what a table adapter of D^2 + D '
      'parameters could give), that plus the best rank-r approximation of '
      'what the map leaves, and the pretrained blocks on the '
      'fine-tuned table. `common shift share`: the part of |dE|^2 that is '
      'the shift, which changes no ranking through the tied output layer. '
      '`rank r share`: the part of the rest of |dE|^2 in its top r singular '
      'directions. `shared linear map share`: the part of |dE|^2 that the '
      'best single linear map of the pretrained table explains.')
  if any(r.get('frequent_rows') for r in rows):
    lines += [
        '\n## The rows of the most frequent items\n',
        'The fine-tuned blocks on the pretrained table moved by the common '
        'shift, with the fine-tuned rows of the k most frequent training '
        'items: what a method that spends its parameters on the rows of '
        'popular items could give.\n',
        '| dataset | seed | k rows | parameters | share of training '
        'interactions | share of validation targets | valid NDCG@10 |',
        '|---|---|---|---|---|---|---|']
    for r in rows:
      for f in r.get('frequent_rows', ()):
        lines.append(
            f'| {r["dataset"]} | {r["seed"]} | {f["k"]:,} | '
            f'{f["params"]:,} | {f["train_share"]:.1%} | '
            f'{f["valid_target_share"]:.1%} | {f["valid_ndcg10"]:.4f} |')
  return '\n'.join(lines) + '\n'


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  p.add_argument('--datasets', default='lastfm')
  p.add_argument('--seeds', default='0')
  p.add_argument('--recipe', default='recommended')
  p.add_argument('--workroot', default=os.path.join(
      common.REPO, 'benchmarks', 'work', 'finetuning'))
  p.add_argument('--arg', default='', help='appended to every arg string '
                 '(as given to benchmarks/finetuning.py)')
  p.add_argument('--rank', type=int, default=2,
                 help='rank of the table move given to the fine-tuned '
                 'blocks (LoRA: model.peft.lora_table_rank, 2)')
  p.add_argument('--top_rows', default='',
                 help='comma-separated k: score the fine-tuned blocks with '
                 'the fine-tuned rows of the k most frequent items only')
  p.add_argument('--out', default=os.path.join(
      common.REPO, 'benchmarks', 'results', 'finetune_anatomy'))
  args = p.parse_args()
  root = os.path.abspath(args.workroot)
  extra = f',{args.arg}' if args.arg else ''
  rows = []
  for d in args.datasets.split(','):
    for s in (int(x) for x in args.seeds.split(',')):
      pre = os.path.join(root, f'pre_{args.recipe}_{d}_s{s}')
      full = os.path.join(root, f'full_{d}_s{s}')
      for path, what in ((os.path.join(pre, 'pretrain', 'best'), 'pretraining'),
                         (os.path.join(full, 'finetune', 'best'),
                          'full fine-tune')):
        if not os.path.isdir(path):
          raise SystemExit(f'{path}: no {what} checkpoint (run '
                           'benchmarks/finetuning.py --study=methods '
                           f'--methods=full --datasets={d} --seeds={s} first)')
      fine_tune = [f'--config=configs/{args.recipe}.py:dataset={d},seed={s},'
                   f'pretrain=false,finetune=full{extra}',
                   f'--config.init_from.path={pre}/pretrain']
      common.check_finished(fine_tune, full)
      rows.append(dict(dataset=d, seed=s,
                       **anatomy(pre, full, fine_tune, args.rank,
                                   [int(k) for k in args.top_rows.split(',')
                                    if k])))
  cmd = ' '.join(['python', 'benchmarks/finetune_anatomy.py'] + sys.argv[1:])
  text = markdown(rows, cmd)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  common.write_markdown(args.out + '.md', text)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(command=cmd, rows=rows), f, indent=2)
  print(text)


if __name__ == '__main__':
  main()
