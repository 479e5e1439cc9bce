"""Full-ranking and sampled evaluation of next-item models; the `eval` stage.

Protocol (S3-Rec): score the target against every item of the catalog, with
the items of the user's own history removed from the ranking (never the
target itself). Also the 99-sampled-negatives protocol where the dataset
ships `NAME_sample.txt` (LastFM).
"""

import functools
import json
import os
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rec_jax import metrics
from rec_jax import models
from rec_jax import sharding
from rec_jax import tasks
from rec_jax import trainer
from rec_jax.data import pipeline


def encode_step(params, batch, *, graphdef):
  """Encoder outputs [R, L, D] of packed rows. Jit-able."""
  model = nnx.merge(graphdef, params)
  return model(batch['inputs'], batch['positions'], batch['segment_ids'])


def full_ranking_step(params, batch, *, graphdef, top_k, mesh,
                      exclude_history):
  """Ranks of targets among all items, and top-k lists (when top_k > 0).

  Args:
    params: model params.
    batch: `user` [E, D] user vectors, `targets` [E], `exclude` [E, H].
    graphdef: the model's graph definition.
    top_k: length of the returned lists; 0 returns none.
    mesh: for the sharded top-k.
    exclude_history: drop `exclude` items from the ranking.

  Returns:
    (ranks [E], top-k item ids [E, top_k] or None).
  """
  model = nnx.merge(graphdef, params)
  scores = model.encoder.item_logits(batch['user'])  # [E, V]
  if exclude_history:
    scores = metrics.exclude(scores, batch['exclude'], batch['targets'])
  ranks = metrics.target_rank(scores, batch['targets'])
  if not top_k:
    return ranks, None
  _, top = metrics.top_k(scores, top_k, mesh)
  return ranks, top


def sampled_step(params, batch, *, graphdef):
  """Ranks of targets among [target] + sampled negatives. Jit-able."""
  model = nnx.merge(graphdef, params)
  user = batch['user']
  cand = jnp.take(model.encoder.item_table(), batch['candidates'], axis=0)
  scores = jnp.einsum('ed,ecd->ec', user, cand.astype(user.dtype))
  return metrics.target_rank(scores.astype(jnp.float32),
                             jnp.zeros(scores.shape[:1], jnp.int32))


def candidate_scores_step(params, batch, *, graphdef):
  """Raw scores [E, C] of each user's candidate items. Jit-able."""
  model = nnx.merge(graphdef, params)
  user = batch['user']
  cand = jnp.take(model.encoder.item_table(), batch['candidates'], axis=0)
  return jnp.einsum('ed,ecd->ec', user, cand.astype(user.dtype)).astype(
      jnp.float32)


class Evaluator:
  """Evaluates params on (histories, targets) lists, batched and sharded.

  Two passes: the encoder runs over packed histories (several users to a
  row, as in training; one user per row, left-padded, for a family that
  does not pack: `packed`) to get one vector per user; then batches of
  `batch_size` user vectors are scored against the whole catalog, or by
  any step of (params, batch) through `map_users`.
  """

  def __init__(self, *, graphdef, mesh, max_len: int, mask_id: int | None,
               batch_size: int, top_k: int = 20, exclude_history: bool = True,
               packed: bool = True):
    sharding.check_batch(batch_size, mesh, 'eval.batch_size')
    self.mesh = mesh
    self.max_len = max_len
    self.mask_id = mask_id
    self.batch_size = batch_size
    self.top_k = top_k
    self.exclude_history = exclude_history
    self.packed = packed
    self._graphdef = graphdef
    self._encode = jax.jit(functools.partial(encode_step, graphdef=graphdef))
    self._full = {
        keep: jax.jit(functools.partial(
            full_ranking_step, graphdef=graphdef, top_k=top_k if keep else 0,
            mesh=mesh, exclude_history=exclude_history))
        for keep in (False, True)}
    self._steps = {}  # step function -> its jitted form.

  def user_vectors(self, params, histories) -> np.ndarray:
    """[N, D] encoder output at each history's newest position."""
    packed, where = pipeline.pack_eval(histories, self.max_len,
                                       mask_id=self.mask_id,
                                       row_multiple=self.batch_size,
                                       packed=self.packed)
    rows = sharding.process_rows(self.batch_size)
    hidden = []
    for start in range(0, len(packed['inputs']), self.batch_size):
      local = {k: v[start:start + self.batch_size][rows]
               for k, v in packed.items()}
      hidden.append(_gather(self._encode(
          params, sharding.host_to_global(self.mesh, local))))
    hidden = np.concatenate(hidden)
    return hidden[where[:, 0], where[:, 1]]

  def batches(self, users, histories, targets, fields=None):
    """(valid rows, global batch) of `batch_size` users: `user` vectors,
    `targets`, the `exclude` history items and any per-user `fields`."""
    n = len(histories)
    rows = sharding.process_rows(self.batch_size)
    # One exclusion width for the whole pass: one compilation, not one per
    # batch whose longest history crosses a power of two.
    width = pipeline.history_width(histories)
    for start in range(0, n, self.batch_size):
      idx = np.arange(start, start + self.batch_size)
      valid = idx < n
      idx = np.where(valid, idx, 0)  # pad the last batch with row 0.
      batch = dict(user=users[idx],
                   targets=np.asarray(targets, np.int32)[idx],
                   exclude=pipeline.pad_histories(
                       [histories[i] for i in idx], width))
      for name, value in (fields or {}).items():
        batch[name] = value[idx]
      local = {k: v[rows] for k, v in batch.items()}
      yield valid, sharding.host_to_global(self.mesh, local)

  def map_users(self, step, params, histories, targets, *,
                fields=None) -> np.ndarray:
    """`step(params, batch, *, graphdef)` over every user's batch row
    (see `batches`), jitted once per step; its outputs, concatenated."""
    if step not in self._steps:
      self._steps[step] = jax.jit(functools.partial(
          step, graphdef=self._graphdef))
    users = self.user_vectors(params, histories)
    out = []
    for valid, batch in self.batches(users, histories, targets, fields):
      out.append(_gather(self._steps[step](params, batch))[valid])
    return np.concatenate(out)

  def full_ranking(self, params, histories, targets, *, desc='eval',
                   keep_top=False):
    """Mean metrics over users (and each user's top-k when keep_top).

    Returns:
      (metrics dict, top-k int array [N, k] or None).
    """
    users = self.user_vectors(params, histories)
    all_ranks, all_top = [], []
    n = len(histories)
    for valid, batch in tqdm.tqdm(
        self.batches(users, histories, targets), desc=desc, leave=False,
        total=-(-n // self.batch_size), disable=jax.process_index() != 0):
      ranks, top = _gather(self._full[keep_top](params, batch))
      all_ranks.append(ranks[valid])
      if keep_top:
        all_top.append(top[valid])
    ranks = np.concatenate(all_ranks)
    out = metrics.mean(metrics.from_ranks(ranks, xp=np))
    return out, (np.concatenate(all_top) if keep_top else None)

  def candidate_scores(self, params, histories, candidates) -> np.ndarray:
    """float32 [N, C]: each user's scores of its candidate items."""
    cands = np.asarray(candidates, np.int32)
    scores = self.map_users(candidate_scores_step, params, histories,
                            cands[:, 0], fields=dict(candidates=cands))
    metrics.check_finite_rows(np.isfinite(scores).all(axis=1),
                              'candidate scores')
    return scores

  def sampled(self, params, histories, targets, negatives):
    """Metrics ranking each target against its own sampled negatives."""
    cands = np.concatenate([np.asarray(targets, np.int32)[:, None],
                            np.asarray(negatives, np.int32)], axis=1)
    ranks = self.map_users(sampled_step, params, histories, targets,
                           fields=dict(candidates=cands))
    return metrics.mean(metrics.from_ranks(ranks, xp=np))


def make_evaluator(config, graphdef, mesh, num_items: int) -> Evaluator:
  """The Evaluator of a recipe's model on `mesh`."""
  return Evaluator(
      graphdef=graphdef, mesh=mesh, max_len=config.model.max_len,
      mask_id=None if config.model.causal else num_items + 1,
      batch_size=config.eval.batch_size, top_k=config.eval.top_k,
      exclude_history=config.eval.exclude_history,
      packed=models.packs_rows(config.model))


def _gather(tree):
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)


def write_predictions(path: str, users, targets, top):
  """One JSON line per user: user, target and the ranked top-k items."""
  with open(path, 'w', encoding='utf-8') as f:
    for u, t, row in zip(users, targets, top):
      f.write(json.dumps({'user': int(u), 'target': int(t),
                          'top': [int(i) for i in row]}) + '\n')


def recompute_from_predictions(path: str, ks=metrics.KS) -> dict:
  """HR@k / NDCG@k from a predictions.jsonl (independent check)."""
  hr = {k: [] for k in ks}
  ndcg = {k: [] for k in ks}
  with open(path, encoding='utf-8') as f:
    for line in f:
      rec = json.loads(line)
      top = rec['top']
      rank = top.index(rec['target']) if rec['target'] in top else len(top)
      for k in ks:
        hr[k].append(float(rank < k))
        ndcg[k].append(1.0 / np.log2(rank + 2) if rank < k else 0.0)
  out = {f'hr@{k}': float(np.mean(hr[k])) for k in ks}
  out.update({f'ndcg@{k}': float(np.mean(ndcg[k])) for k in ks})
  return out


def log_table(results: dict):
  """Valid/test metrics (and baselines, if any) as a small text table."""
  splits = ('valid', 'test', 'test_sampled', 'valid_ranking', 'test_ranking')
  rows = [(s, results[s]) for s in splits if s in results]
  rows += [(f'baseline:{k}', v) for k, v in results.get('baselines',
                                                          {}).items()]
  lines = []
  for names in dict.fromkeys(tuple(r) for _, r in rows):
    order = [m for m in metrics.METRIC_NAMES if m in names] or sorted(names)
    lines.append(f'{"split":<20} ' + ' '.join(f'{m:>8}' for m in order))
    lines += [f'{s:<20} ' + ' '.join(f'{r[m]:8.4f}' for m in order)
              for s, r in rows if tuple(r) == names]
  return '\n'.join(lines)


def time_line(results: dict) -> str:
  """Where a run's seconds went, compile time apart: 'time: pretrain 45.2 s
  (compile 8.1 s), finetune 20.3 s (compile 4.0 s), eval 1.9 s (compile
  0.8 s)'. Stages trained before these fields existed show no compile."""
  parts = []
  for name, total, comp in (
      ('pretrain', 'pretrain_seconds', 'pretrain_compile_seconds'),
      ('finetune', 'train_seconds', 'compile_seconds'),
      ('eval', 'eval_seconds', 'eval_compile_seconds')):
    if results.get(total) is None:
      continue
    part = f'{name} {results[total]:.1f} s'
    if results.get(comp) is not None:
      part += f' (compile {results[comp]:.1f} s)'
    parts.append(part)
  return 'time: ' + ', '.join(parts)


def run(config, train_workdir: str, workdir: str, data=None) -> dict:
  """The `eval` stage: the best checkpoint of `train_workdir` on valid/test.

  Writes `<workdir>/predictions.jsonl` (every test user's target and top-k).

  Args:
    config: the recipe.
    train_workdir: the trained (fine-tune) stage.
    workdir: where predictions.jsonl goes.
    data: (dataset, split) as trainer.load_data gives them (loaded when
      None).

  Returns:
    {'valid': metrics, 'test': metrics[, 'test_sampled': metrics], ...}.
  """
  data = data or trainer.load_data(config)
  config = trainer.resolved(config, data)
  ds, split = data
  mesh = sharding.make_mesh(config.mesh)
  graphdef, params, meta = trainer.load_trained(config, train_workdir,
                                                ds.num_items, mesh)
  evaluator = make_evaluator(config, graphdef, mesh, ds.num_items)
  t = time.perf_counter()
  compiled_before = trainer.compile_clock()[0]
  valid, _ = evaluator.full_ranking(params, split.valid_history,
                                    split.valid_target, desc='valid')
  test, top = evaluator.full_ranking(params, split.test_history,
                                     split.test_target, desc='test',
                                     keep_top=True)
  results = dict(dataset=ds.name, num_users=ds.num_users,
                 num_items=ds.num_items, valid=valid, test=test,
                 best_step=int(meta['step']),
                 protocol=dict(ranking='full', exclude_history=bool(
                     config.eval.exclude_history), split='leave-one-out'))
  if ds.cold_items is not None:
    cold = np.isin(split.test_target, ds.cold_items)
    for name, rows in (('test_cold', cold), ('test_warm', ~cold)):
      idx = np.flatnonzero(rows)
      results[name], _ = evaluator.full_ranking(
          params, [split.test_history[i] for i in idx],
          split.test_target[idx], desc=name)
      results[name + '_users'] = int(len(idx))
    results['protocol']['cold_items'] = int(len(ds.cold_items))
  results = tasks.get(config.finetune.task).results(
      config, ds, split, evaluator, params, results)
  if config.eval.sampled and ds.sample_negatives is not None:
    results['test_sampled'] = evaluator.sampled(
        params, split.test_history, split.test_target, ds.sample_negatives)
  results['eval_seconds'] = time.perf_counter() - t
  results['eval_compile_seconds'] = (trainer.compile_clock()[0] -
                                     compiled_before)
  if jax.process_index() == 0:
    write_predictions(os.path.join(workdir, 'predictions.jsonl'), split.users,
                      split.test_target, top)
  return results


# ------------------------------------------------------- the stage ----


def pretraining(config) -> bool:
  return 'pretrain' in config and bool(config.pretrain.enabled)


def _summary(workdir: str, stage: str):
  path = os.path.join(workdir, stage, 'summary.json')
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def run_eval(config, workdir: str, data=None) -> dict:
  """Evaluates the best fine-tuned checkpoint; writes results.json."""
  results = run(config, os.path.join(workdir, 'finetune'), workdir, data)
  train_summary = _summary(workdir, 'finetune')
  if train_summary is None:
    raise FileNotFoundError(f'{workdir}/finetune/summary.json is missing: '
                            'run --stage=finetune first.')
  results.update(
      train_seconds=train_summary['train_seconds'],
      epochs=train_summary['epochs'], best_epoch=train_summary['best_epoch'],
      seconds_per_epoch=train_summary['seconds_per_epoch'],
      median_epoch_seconds=train_summary.get('median_epoch_seconds'),
      compile_seconds=train_summary.get('compile_seconds'),
      hardware=train_summary.get('hardware'),
      peak_device_mb=train_summary.get('peak_device_mb'),
      stopped_early=train_summary['stopped_early'],
      init_from=train_summary.get('init_from'),
      init_valid=train_summary.get('init_valid'),
      finetune_method=train_summary.get('method', 'full'),
      trainable_params=train_summary.get('trainable_params'),
      total_params=train_summary.get('total_params'))
  pre = _summary(workdir, 'pretrain') if pretraining(config) else None
  if pre is not None:
    results.update(pretrain_seconds=pre['train_seconds'],
                   pretrain_compile_seconds=pre.get('compile_seconds'),
                   pretrain_epochs=pre['epochs'],
                   pretrain_objectives=pre['objectives'],
                   pretrain_hardware=pre.get('hardware'))
  if jax.process_index() == 0:
    trainer.save_json(os.path.join(workdir, 'results.json'), results)
  return results
