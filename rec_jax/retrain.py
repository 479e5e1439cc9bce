r"""Periodic retraining: fine-tune the served model on new interactions,
evaluate, export, and swap it into the running service.

  python -m rec_jax.retrain --served=/tmp/rec_beauty \
      --interactions=new_interactions.txt --workdir=/tmp/rec_beauty_2 \
      [--serve_url=http://127.0.0.1:8000] [--set=finetune.num_epochs=5]

The same as running, with the served run's own recipe,

  python -m rec_jax.main ... --stage=finetune \
      --config.init_from.path=/tmp/rec_beauty \
      --config.data.new_interactions=new_interactions.txt
  python -m rec_jax.main ... --stage=eval
  python -m rec_jax.export --workdir=/tmp/rec_beauty_2

then `POST /admin/reload {"artifact": ".../export"}` to the service, which
loads and compiles the new model beside the old one and swaps it in without
dropping a request. `--interactions` holds `user item item ...` lines (see
rec_jax.data.sources.files.read_new_interactions); the new items become each
user's newest, so validation and test hold out what happened last.
"""

import json
import os
import urllib.request

from absl import app
from absl import flags
from absl import logging
import jax

from rec_jax import evaluate
from rec_jax import export
from rec_jax import finetune
from rec_jax import trainer


def override(config, assignment: str):
  """Applies 'a.b.c=value' (value parsed as the key's current type)."""
  key, sep, value = assignment.partition('=')
  if not sep:
    raise app.UsageError(f'--set={assignment!r}: expected key=value')
  *path, node = key.split('.')
  target = config
  for part in path:
    if part not in target:
      raise app.UsageError(f'--set={assignment!r}: no key {part!r}')
    target = target[part]
  if node not in target:
    raise app.UsageError(f'--set={assignment!r}: no key {key!r}')
  old = target[node]
  if isinstance(old, bool):
    parsed = value.lower() in ('1', 'true', 'yes')
  else:
    parsed = type(old)(value) if old is not None else value
  with config.unlocked():
    target[node] = parsed


def retrain(served: str, interactions: str, workdir: str, *,
            sets=(), serve_url: str = '') -> dict:
  """Runs the four steps; returns results.json plus the artifact path (and
  the service's answer to the reload when `serve_url` is given)."""
  stage = export.stage_dir(served)
  config = export.load_config(stage)
  with config.unlocked():
    config.data.new_interactions = os.path.abspath(interactions)
    config.init_from.path = os.path.dirname(stage) if stage.endswith(
        'finetune') else stage
    if 'pretrain' in config:
      config.pretrain.enabled = False
  for s in sets:
    override(config, s)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  data = trainer.load_data(config)
  summary = finetune.run(config, os.path.join(workdir, 'finetune'),
                         init_from=config.init_from.path, data=data)
  if jax.process_index() == 0:
    trainer.save_json(os.path.join(workdir, 'finetune', 'summary.json'),
                      summary)
  results = evaluate.run_eval(config, workdir, data)
  print('\n' + evaluate.log_table(results))
  path = export.export(workdir)
  out = dict(results=results, artifact=path)
  if serve_url:
    req = urllib.request.Request(
        serve_url.rstrip('/') + '/admin/reload',
        data=json.dumps({'artifact': path}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    with urllib.request.urlopen(req, timeout=600) as r:
      out['reload'] = json.load(r)
    logging.info('Service now serves %s.', out['reload']['model'])
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  out = retrain(_FLAGS['served'].value, _FLAGS['interactions'].value,
                _FLAGS['workdir'].value, sets=_FLAGS['set'].value or (),
                serve_url=_FLAGS['serve_url'].value)
  print(json.dumps({k: v for k, v in out.items() if k != 'results'}))


_FLAGS = {}

if __name__ == '__main__':
  _FLAGS['served'] = flags.DEFINE_string(
      'served', None, 'The workdir of the model being served.')
  _FLAGS['interactions'] = flags.DEFINE_string(
      'interactions', None, 'New `user item item ...` lines.')
  _FLAGS['workdir'] = flags.DEFINE_string(
      'workdir', None, 'Where the retrained run is written.')
  _FLAGS['serve_url'] = flags.DEFINE_string(
      'serve_url', '', 'A running rec_jax.serve to swap the new model into.')
  _FLAGS['set'] = flags.DEFINE_multi_string(
      'set', None, 'Config overrides, e.g. finetune.num_epochs=5.')
  flags.mark_flags_as_required(['served', 'interactions', 'workdir'])
  app.run(main)
