r"""Trains RecBole's SASRec on Amazon Beauty and reports speed and metrics.

The RecBole half of the side-by-side speed benchmark: the same Beauty file
and the same SASRec settings as rec_jax, trained by RecBole 1.2.1's own
training step, timed per epoch (training only, evaluation excluded).

Runs in its own venv (RecBole pins numpy<2; rec_jax needs numpy>=2), made by
`bash benchmarks/recbole/setup_recbole.sh`, so nothing here imports rec_jax.

  benchmarks/.venv-recbole/bin/python benchmarks/recbole/run_recbole_sasrec.py \
      --epochs=2 --eval --out=benchmarks/results/recbole_sasrec_beauty_2ep.json

Reports two sets of test metrics for the same trained model:
  * `test`: RecBole's stock full-sort ranking. For sequential models RecBole
    does NOT remove the user's earlier items from the ranking.
  * `test_history_excluded`: the S3-Rec protocol. Every item the user
    interacted with before the test target is removed from the ranking, but
    never the target itself (Beauty has repeat purchases).

The last line on stdout is one JSON object (also written to --out). RecBole's
log goes to stderr and to <work_dir>/log/.
"""

import argparse
import copy
import json
import logging
import math
import os
import resource
import statistics
import sys
import time
import warnings

# RecBole 1.2.1 on the pinned pandas 2.x / torch 2.13 emits a FutureWarning
# per dataset column and per epoch (in-place fillna, torch.cuda.amp); both
# still behave as RecBole expects, and the noise would bury the log.
warnings.filterwarnings('ignore', category=FutureWarning)

# RecBole 1.2.1 reloads checkpoints with a bare torch.load, which torch>=2.6
# refuses (weights_only=True by default). This script keeps its best weights
# in memory instead, but set it anyway so no RecBole code path can trip on it.
os.environ.setdefault('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import recbole
import torch
from recbole import config as rb_config
from recbole import data as rb_data
from recbole import trainer as rb_trainer
from recbole import utils as rb_utils
# Importing the model package runs a module (sine.py) that turns on torch's
# anomaly detection for the whole process; main() turns it off again.
from recbole.model.sequential_recommender import sasrec
# pylint: enable=g-import-not-at-top,wrong-import-position

_DATASET_NAME = 'Beauty'
_TOPKS = (5, 10, 20)
_REPO_ROOT = os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))


def _parse_args(argv):
  """Parses command-line flags."""
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument(
      '--data_file', default=None,
      help='Beauty.txt (`user item item ...` per line, chronological). '
      'Default: $REC_JAX_DATA_DIR/s3rec/Beauty.txt.')
  parser.add_argument(
      '--work_dir', default=os.path.join(_REPO_ROOT, 'benchmarks', 'work',
                                         'recbole'),
      help='Writable dir for the .inter file and RecBole logs.')
  parser.add_argument('--epochs', type=int, default=300,
                      help='Train at most this many epochs.')
  parser.add_argument(
      '--time_budget_s', type=float, default=None,
      help='Start no further epoch once the next one (train plus validation, '
      'estimated from the median so far) would end past this many seconds of '
      'the training loop. At least one epoch always runs.')
  # On by default: benchmarks/speed_vs_recbole.py reads the test metrics,
  # and validation is outside the timed training seconds anyway.
  parser.add_argument(
      '--eval', action=argparse.BooleanOptionalAction, default=True,
      help='Validate after each epoch, keep the best weights (valid '
      'NDCG@10) and test them at the end. --no-eval trains only.')
  parser.add_argument(
      '--stopping_step', type=int, default=10,
      help='With --eval, stop after this many validations without '
      'improvement (RecBole default).')
  parser.add_argument('--threads', type=int, default=2,
                      help='torch intra-op threads.')
  parser.add_argument('--seed', type=int, default=2020,
                      help='RecBole seed (2020 is its default).')
  parser.add_argument('--out', default=None, help='Also write the JSON here.')
  return parser.parse_args(argv)


def _resolve_data_file(data_file):
  """Returns the Beauty.txt path from the flag or $REC_JAX_DATA_DIR."""
  if data_file is None:
    data_dir = os.environ.get('REC_JAX_DATA_DIR')
    if not data_dir:
      raise SystemExit(
          'error: pass --data_file or set REC_JAX_DATA_DIR to a directory '
          'holding s3rec/Beauty.txt')
    data_file = os.path.join(data_dir, 's3rec', 'Beauty.txt')
  if not os.path.isfile(data_file):
    raise SystemExit(f'error: no such file: {data_file}')
  return os.path.abspath(data_file)


# ---------------------------------------------------------------------------
# Data: Beauty.txt -> RecBole atomic .inter file.
# ---------------------------------------------------------------------------


def _read_sequences(path):
  """Reads `user item item ...` lines into {user_token: [item_token, ...]}.

  Tokens stay strings because RecBole remaps token fields itself; the user
  and item ids are only checked to be integers so a damaged file fails here.
  """
  sequences = {}
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) < 2 or not all(t.isdigit() for t in fields):
        raise ValueError(f'{path}, line {lineno}: expected `user item ...` '
                         f'as integers, got {line.strip()[:80]!r}')
      user, items = fields[0], fields[1:]
      if user in sequences:
        raise ValueError(f'{path}, line {lineno}: user {user} seen twice')
      sequences[user] = items
  return sequences


def _write_inter_file(sequences, dataset_dir):
  """Writes the .inter file RecBole loads, one row per interaction.

  The timestamp is the item's position in its user's sequence: RecBole's
  'TO' order then reproduces the file's order within each user, which is all
  the leave-one-out split needs (Beauty.txt carries no real timestamps).
  """
  os.makedirs(dataset_dir, exist_ok=True)
  path = os.path.join(dataset_dir, f'{_DATASET_NAME}.inter')
  tmp_path = path + '.tmp'
  with open(tmp_path, 'w', encoding='utf-8') as f:
    f.write('user_id:token\titem_id:token\ttimestamp:float\n')
    for user, items in sequences.items():
      for position, item in enumerate(items):
        f.write(f'{user}\t{item}\t{position}\n')
  # Rename so a killed run never leaves a half-written file for the next one.
  os.replace(tmp_path, path)
  return path


# ---------------------------------------------------------------------------
# Config and model.
# ---------------------------------------------------------------------------


def _recbole_config_dict(args, data_path):
  """The RecBole settings shared with the rec_jax side of the benchmark."""
  return {
      'seed': args.seed,
      'reproducibility': True,
      'use_gpu': False,
      'show_progress': False,
      'data_path': data_path,
      'checkpoint_dir': os.path.join(args.work_dir, 'saved'),
      # Data: keep every interaction (the file is already 5-core) including
      # repeats; RecBole loads only user and item columns unless told.
      'load_col': {'inter': ['user_id', 'item_id', 'timestamp']},
      'user_inter_num_interval': '[0,inf)',
      'item_inter_num_interval': '[0,inf)',
      'rm_dup_inter': None,
      'MAX_ITEM_LIST_LENGTH': 50,
      # Model. inner_size is the feed-forward width: 4 x hidden_size, the
      # usual transformer ratio and RecBole's default for hidden 64.
      'hidden_size': 64,
      'inner_size': 256,
      'n_layers': 2,
      'n_heads': 2,
      'loss_type': 'CE',
      # Full softmax over items: CE takes no sampled negatives.
      'train_neg_sample_args': None,
      # Optimisation.
      'epochs': args.epochs,
      'train_batch_size': 256,
      'learner': 'adam',
      'learning_rate': 0.001,
      'stopping_step': args.stopping_step,
      # Evaluation: leave-one-out (last item test, second-last valid),
      # ranked against all items.
      'eval_args': {
          'split': {'LS': 'valid_and_test'},
          'group_by': 'user',
          'order': 'TO',
          'mode': 'full',
      },
      'metrics': ['Hit', 'NDCG'],
      'topk': list(_TOPKS),
      'valid_metric': 'NDCG@10',
  }


def _reported_config(config, args, data_file):
  """The settings that decide speed and quality, as plain JSON data."""
  keys = ('MAX_ITEM_LIST_LENGTH', 'hidden_size', 'inner_size', 'n_layers',
          'n_heads', 'hidden_dropout_prob', 'attn_dropout_prob', 'hidden_act',
          'layer_norm_eps', 'initializer_range', 'loss_type',
          'train_neg_sample_args', 'train_batch_size', 'learner',
          'learning_rate', 'weight_decay', 'eval_args', 'metrics', 'topk',
          'valid_metric', 'eval_batch_size', 'stopping_step', 'seed')
  reported = {k: config[k] for k in keys}
  reported.update({
      'model': 'SASRec',
      'data_file': data_file,
      'max_epochs': args.epochs,
      'time_budget_s': args.time_budget_s,
      'eval': args.eval,
      'torch_threads': torch.get_num_threads(),
      'device': str(config['device']),
  })
  # Round-trip through JSON so any non-JSON value fails here, not at the end.
  return json.loads(json.dumps(reported, default=str))


# ---------------------------------------------------------------------------
# History-excluded (S3-Rec protocol) evaluation.
# ---------------------------------------------------------------------------


def _test_histories(dataset, sequences):
  """Maps internal user id -> (items before the test target, target).

  Built from the raw file rather than from the test batch, whose item list
  RecBole truncates to MAX_ITEM_LIST_LENGTH: the S3-Rec protocol masks the
  user's whole history.
  """
  users = list(sequences)
  uids = dataset.token2id(dataset.uid_field, users)
  histories = {}
  for user, uid in zip(users, uids):
    iids = dataset.token2id(dataset.iid_field, sequences[user])
    histories[int(uid)] = (torch.as_tensor(iids[:-1], dtype=torch.int64),
                           int(iids[-1]))
  return histories


def _ranking_metrics(ranks, prefix):
  """HR@k and NDCG@k from 0-based ranks of the single target per user."""
  ranks = ranks.to(torch.float64)
  result = {}
  for k in _TOPKS:
    hit = ranks < k
    result[f'{prefix}@{k}'] = hit.double().mean().item()
  for k in _TOPKS:
    gain = torch.where(ranks < k, 1.0 / torch.log2(ranks + 2.0),
                       torch.zeros_like(ranks))
    result[f'ndcg@{k}'] = gain.mean().item()
  return result


@torch.no_grad()
def _evaluate_history_excluded(model, test_data, histories):
  """Ranks each test target with and without the user's history masked.

  Returns (history_excluded, stock_recomputed). The second repeats RecBole's
  stock ranking with this function's own code, so agreement with RecBole's
  `test` numbers shows the ranking arithmetic here is right.
  """
  model.eval()
  uid_field = test_data.dataset.uid_field
  iid_field = test_data.dataset.iid_field
  stock_ranks, excluded_ranks = [], []
  for batch in test_data:
    interaction = batch[0]
    scores = model.full_sort_predict(interaction)
    scores = scores.view(len(interaction), -1)  # [B, V]
    uids = interaction[uid_field].tolist()
    targets = interaction[iid_field]  # [B]
    for uid, target in zip(uids, targets.tolist()):
      if histories[uid][1] != target:
        raise ValueError(f'user {uid}: RecBole test target {target} is not '
                         f'the last item of the file ({histories[uid][1]})')
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    # Item 0 is RecBole's padding id; its column is never a candidate.
    scores[:, 0] = -math.inf
    stock_ranks.append((scores > target_scores).sum(dim=1))
    # Mask the history. The target may be in it (repeat purchase); counting
    # only items scored strictly above target_scores keeps it in the ranking.
    history = [histories[uid][0] for uid in uids]
    rows = torch.repeat_interleave(
        torch.arange(len(uids)), torch.tensor([len(h) for h in history]))
    scores[rows, torch.cat(history)] = -math.inf
    excluded_ranks.append((scores > target_scores).sum(dim=1))
  # Ties are broken in the target's favour; with float scores they are rare.
  return (_ranking_metrics(torch.cat(excluded_ranks), 'hr'),
          _ranking_metrics(torch.cat(stock_ranks), 'hit'))


# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------


def _peak_rss_mb():
  """Peak resident memory of this process plus its waited-for children, MB.

  ru_maxrss is in KiB on Linux. The two peaks need not coincide, so the sum
  is an upper bound; with RecBole's default worker=0 there are no children.
  """
  self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
  return (self_kb + children_kb) / 1024.0


def _process_cpu_seconds():
  """User plus system CPU time of this process, all threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def main(argv):
  args = _parse_args(argv)
  data_file = _resolve_data_file(args.data_file)
  args.work_dir = os.path.abspath(args.work_dir)
  out_path = os.path.abspath(args.out) if args.out else None
  torch.set_num_threads(args.threads)

  # RecBole writes ./log and ./log_tensorboard relative to the current dir;
  # keep them out of the repository.
  os.makedirs(args.work_dir, exist_ok=True)
  os.chdir(args.work_dir)

  # ---- Data -----------------------------------------------------------------
  setup_start = time.perf_counter()
  sequences = _read_sequences(data_file)
  data_path = os.path.join(args.work_dir, 'dataset')
  _write_inter_file(sequences, os.path.join(data_path, _DATASET_NAME))

  # RecBole's Config also parses sys.argv, where `--epochs=2` or `--out=...`
  # would become config overrides; this script's flags are already parsed.
  argv_saved, sys.argv = sys.argv, sys.argv[:1]
  try:
    config = rb_config.Config(model='SASRec', dataset=_DATASET_NAME,
                              config_dict=_recbole_config_dict(args, data_path))
  finally:
    sys.argv = argv_saved
  rb_utils.init_seed(config['seed'], config['reproducibility'])
  rb_utils.init_logger(config)
  logger = logging.getLogger()
  dataset = rb_data.create_dataset(config)
  logger.info(dataset)
  train_data, valid_data, test_data = rb_data.data_preparation(config, dataset)

  # ---- Model and trainer ----------------------------------------------------
  # Same seed again before init, as RecBole's own run_recbole does.
  rb_utils.init_seed(config['seed'] + config['local_rank'],
                     config['reproducibility'])
  model = sasrec.SASRec(config, train_data.dataset).to(config['device'])
  logger.info(model)
  # RecBole leaves anomaly detection on (see the import above). It makes
  # SASRec training about 1.45x slower and changes no result, so a fair
  # speed comparison turns it off.
  anomaly_detection_at_import = torch.is_anomaly_enabled()
  torch.autograd.set_detect_anomaly(False)
  trainer = rb_trainer.Trainer(config, model)
  # Trainer.fit does this first; it feeds data-dependent metrics.
  trainer.eval_collector.data_collect(train_data)
  setup_seconds = time.perf_counter() - setup_start

  # ---- Loop -----------------------------------------------------------------
  # Trainer.fit would time training and validation together and save a
  # checkpoint per improvement; this loop calls RecBole's own per-epoch
  # training step and times it alone.
  seconds_per_epoch, valid_seconds, valid_history = [], [], []
  # CPU seconds of this process during training. On a shared machine wall
  # time grows with other people's load and CPU time is less sensitive to
  # it, so the pair helps tell a slow framework from a busy machine.
  cpu_seconds_per_epoch = []
  epoch_wall_seconds = []  # Training plus validation, for the time budget.
  best_score, best_epoch, best_valid, best_state = -math.inf, None, None, None
  evals_without_gain = 0
  stopped_by = 'epochs'
  load_average_start = os.getloadavg()
  loop_start = time.perf_counter()
  for epoch in range(args.epochs):
    if args.time_budget_s is not None and epoch_wall_seconds:
      elapsed = time.perf_counter() - loop_start
      if elapsed + statistics.median(epoch_wall_seconds) > args.time_budget_s:
        stopped_by = 'time_budget'
        break

    stop = False
    epoch_start = start = time.perf_counter()
    cpu_start = _process_cpu_seconds()
    # pylint: disable-next=protected-access
    loss = trainer._train_epoch(train_data, epoch)
    seconds_per_epoch.append(time.perf_counter() - start)
    cpu_seconds_per_epoch.append(_process_cpu_seconds() - cpu_start)
    logger.info('epoch %d: train loss %.4f, %.1f s', epoch, loss,
                seconds_per_epoch[-1])
    if not math.isfinite(loss):
      raise FloatingPointError(f'epoch {epoch}: train loss is {loss}')

    if args.eval:
      start = time.perf_counter()
      # pylint: disable-next=protected-access
      score, result = trainer._valid_epoch(valid_data)
      valid_seconds.append(time.perf_counter() - start)
      valid_history.append(dict(result))
      logger.info('epoch %d: valid %s (%.1f s)', epoch, dict(result),
                  valid_seconds[-1])
      # RecBole's own rule, so the stopping epoch matches Trainer.fit.
      best_score, evals_without_gain, stop, improved = rb_utils.early_stopping(
          score, best_score, evals_without_gain, max_step=args.stopping_step)
      if improved:
        best_epoch, best_valid = epoch, dict(result)
        best_state = copy.deepcopy(model.state_dict())
    epoch_wall_seconds.append(time.perf_counter() - epoch_start)
    if args.eval and stop:
      stopped_by = 'early_stopping'
      break
  load_average_end = os.getloadavg()

  # ---- Test -----------------------------------------------------------------
  test, test_excluded, test_recomputed = None, None, None
  if args.eval:
    # Test the best-on-validation weights, as RecBole's load_best_model does.
    model.load_state_dict(best_state)
    test = dict(trainer.evaluate(test_data, load_best_model=False))
    test_excluded, test_recomputed = _evaluate_history_excluded(
        model, test_data, _test_histories(dataset, sequences))
    logger.info('test (stock): %s', test)
    logger.info('test (history excluded): %s', test_excluded)
    for key, value in test_recomputed.items():
      if abs(value - test[key]) > 2e-4:  # RecBole rounds to 4 decimals.
        logger.warning('stock %s recomputed here is %.5f, RecBole says %.4f',
                       key, value, test[key])

  report = {
      'framework': 'recbole',
      'recbole_version': recbole.__version__,
      'torch_version': torch.__version__,
      'numpy_version': np.__version__,
      'python_version': sys.version.split()[0],
      'epochs': len(seconds_per_epoch),
      'stopped_by': stopped_by,
      'seconds_per_epoch': [round(t, 3) for t in seconds_per_epoch],
      'median_seconds_per_epoch': round(statistics.median(seconds_per_epoch),
                                        3),
      'cpu_seconds_per_epoch': [round(t, 3) for t in cpu_seconds_per_epoch],
      'valid_seconds_per_epoch': [round(t, 3) for t in valid_seconds],
      'setup_seconds': round(setup_seconds, 3),
      'train_instances': len(train_data.dataset),
      'train_batches_per_epoch': len(train_data),
      'test_users': len(test_data.dataset),
      'peak_rss_mb': round(_peak_rss_mb(), 1),
      'torch_threads': torch.get_num_threads(),
      # The machine is shared: the 1/5/15-minute load averages around the
      # loop say how much other work competed for the cores.
      'load_average_start': [round(x, 2) for x in load_average_start],
      'load_average_end': [round(x, 2) for x in load_average_end],
      'anomaly_detection_at_import': anomaly_detection_at_import,
      'anomaly_detection_during_training': torch.is_anomaly_enabled(),
      'best_valid_epoch': best_epoch,
      'valid': best_valid,
      'valid_history': valid_history,
      'test': test,
      'test_history_excluded': test_excluded,
      'test_stock_recomputed': test_recomputed,
      'config': _reported_config(config, args, data_file),
  }
  line = json.dumps(report)
  if out_path:
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, 'w', encoding='utf-8') as f:
      f.write(json.dumps(report, indent=2) + '\n')
  sys.stdout.flush()
  print(line, flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
