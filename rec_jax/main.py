"""The one entry point: runs a recipe's stages in order, or one of them.

  python -m rec_jax.main --config=configs/sasrec.py:dataset=beauty \
      --workdir=/tmp/sasrec_beauty [--stage=all|finetune|eval] \
      [--config.finetune.optimizer.lr=3e-4 ...]

Stages run in sub-workdirs (`<workdir>/finetune`); the evaluation writes
`<workdir>/results.json` and `<workdir>/predictions.jsonl`. Re-running the
same command with the same workdir resumes an interrupted run. This module
only sequences stages; it holds no training logic.
"""

import json
import logging as py_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from rec_jax import evaluate
from rec_jax import finetune

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe config.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where everything is written.')
_STAGE = flags.DEFINE_enum('stage', 'all', ['all', 'finetune', 'eval'],
                           'Run every stage of the recipe, or just one.')
flags.mark_flags_as_required(['config', 'workdir'])


def run_eval(config, workdir: str, train_summary: dict | None) -> dict:
  """Evaluates the best fine-tuned checkpoint; writes results.json."""
  results = evaluate.run(config, os.path.join(workdir, 'finetune'), workdir)
  if train_summary is None:
    summary_path = os.path.join(workdir, 'finetune', 'summary.json')
    with open(summary_path, encoding='utf-8') as f:
      train_summary = json.load(f)
  results.update(
      train_seconds=train_summary['train_seconds'],
      epochs=train_summary['epochs'], best_epoch=train_summary['best_epoch'],
      seconds_per_epoch=train_summary['seconds_per_epoch'],
      stopped_early=train_summary['stopped_early'])
  if jax.process_index() == 0:
    finetune.save_json(os.path.join(workdir, 'results.json'), results)
  return results


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
  workdir = os.path.abspath(_WORKDIR.value)
  os.makedirs(workdir, exist_ok=True)
  results_path = os.path.join(workdir, 'results.json')
  # A failed run must not leave an older results.json that looks current.
  if jax.process_index() == 0 and os.path.exists(results_path):
    os.remove(results_path)
  logging.info('JAX %s: %d devices (%s), %d processes.', jax.__version__,
               jax.device_count(), jax.devices()[0].platform,
               jax.process_count())
  summary = None
  if _STAGE.value in ('all', 'finetune'):
    summary = finetune.run(config, os.path.join(workdir, 'finetune'))
    if jax.process_index() == 0:
      finetune.save_json(os.path.join(workdir, 'finetune', 'summary.json'),
                         summary)
  if _STAGE.value in ('all', 'eval'):
    results = run_eval(config, workdir, summary)
    print('\n' + evaluate.log_table(results))
    print(f'results: {results_path}')


if __name__ == '__main__':
  if os.environ.get('REC_JAX_DISTRIBUTED'):
    jax.distributed.initialize()
  sys.exit(app.run(main))
