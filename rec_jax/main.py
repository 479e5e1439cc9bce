"""The one entry point: runs a recipe's stages in order, or one of them.

  python -m rec_jax.main --config=configs/recommended.py:dataset=beauty \
      --workdir=/tmp/rec_beauty [--stage=all|pretrain|finetune|eval] \
      [--config.finetune.optimizer.lr=3e-4 ...]

Stages run in sub-workdirs (`<workdir>/pretrain`, `<workdir>/finetune`;
the fine-tune stage starts from the pretrained encoder when the recipe
pretrains, or from `--config.init_from.path`); the evaluation writes
`<workdir>/results.json` and `<workdir>/predictions.jsonl`. Re-running the
same command with the same workdir resumes an interrupted run. This module
only sequences stages; it holds no training logic.
"""

import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rec_jax import config_checks
from rec_jax import saved_config
from rec_jax import distributed
from rec_jax import evaluate
from rec_jax import finetune
from rec_jax import pretrain
from rec_jax import run_lock
from rec_jax import trainer

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe config.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where everything is written.')
_STAGE = flags.DEFINE_enum('stage', 'all',
                           ['all', 'pretrain', 'finetune', 'eval'],
                           'Run every stage of the recipe, or just one.')
_ALLOW_CHANGED = flags.DEFINE_list(
    'allow_changed', [],
    'Config keys (globs, e.g. finetune.num_epochs) allowed to differ from '
    'the config a run in --workdir started with when resuming it.')
flags.mark_flags_as_required(['config', 'workdir'])


_HELD_LOCKS = []  # open lock files of the workdirs this process runs in.


def init_path(config, workdir: str):
  """The pretrained run the fine-tune stage starts from, if any."""
  if config.init_from.path:
    return config.init_from.path
  if not evaluate.pretraining(config):
    return None
  path = os.path.join(workdir, 'pretrain')
  if not os.path.isdir(os.path.join(path, 'best')):
    raise FileNotFoundError(
        f'The recipe pretrains but {path}/best holds no checkpoint: run '
        '--stage=pretrain first, or fine-tune from scratch with '
        '--config.pretrain.enabled=false.')
  return path


class _QuietLibraries(py_logging.Filter):
  """Drops INFO chatter of Orbax and other libraries from the absl log."""

  def filter(self, record):
    return record.levelno >= py_logging.WARNING or (
        'site-packages' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  try:
    config_checks.check_values(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    try:
      _HELD_LOCKS.append(run_lock.acquire(workdir))  # until the process ends.
    except run_lock.WorkdirInUse as e:
      raise SystemExit(f'error: {e}') from None
  results_path = os.path.join(workdir, 'results.json')
  # A failed run must not leave an older results.json that looks current.
  if jax.process_index() == 0 and os.path.exists(results_path):
    os.remove(results_path)
  logging.info('JAX %s: %d devices (%s), %d processes.', jax.__version__,
               jax.device_count(), jax.devices()[0].platform,
               jax.process_count())
  stage = _STAGE.value
  if stage == 'pretrain' and not evaluate.pretraining(config):
    raise app.UsageError('--stage=pretrain: this recipe has no enabled '
                         'pretrain section.')
  # The data, loaded once for every stage; the values the recipe takes from
  # them are resolved before any check (a saved config holds them).
  data = trainer.load_data(config)
  config = trainer.resolved(config, data)

  def check(stage_name, sub):
    saved_config.check_resume(os.path.join(workdir, sub), config, stage_name,
                            _ALLOW_CHANGED.value)

  if stage == 'pretrain' or (stage == 'all' and evaluate.pretraining(config)):
    check('pretrain', 'pretrain')
    summary = pretrain.run(config, os.path.join(workdir, 'pretrain'), data)
    if jax.process_index() == 0:
      trainer.save_json(os.path.join(workdir, 'pretrain', 'summary.json'),
                        summary)
  if stage in ('all', 'finetune'):
    check('finetune', 'finetune')
    summary = finetune.run(config, os.path.join(workdir, 'finetune'),
                           init_from=init_path(config, workdir), data=data)
    if jax.process_index() == 0:
      trainer.save_json(os.path.join(workdir, 'finetune', 'summary.json'),
                        summary)
  if stage in ('all', 'eval'):
    check('eval', 'finetune')
    results = evaluate.run_eval(config, workdir, data)
    print('\n' + evaluate.log_table(results))
    print(evaluate.time_line(results))
    print(f'results: {results_path}')


if __name__ == '__main__':
  distributed.initialize()  # multi-host launches only; see the module.
  sys.exit(app.run(main))
