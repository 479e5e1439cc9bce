r"""Periodic retraining: fine-tune the served model on new interactions,
evaluate, export, and swap it into the running service.

  python -m rec_jax.retrain --served=/tmp/rec_beauty \
      --interactions=new_interactions.txt --workdir=/tmp/rec_beauty_2 \
      [--serve_url=http://127.0.0.1:8000 --admin_token_file=TOKEN] \
      [--set=finetune.num_epochs=5]

The same as running, with the served run's own recipe,

  python -m rec_jax.main ... --stage=finetune \
      --config.init_from.path=/tmp/rec_beauty \
      --config.data.new_interactions=new_interactions.txt
  python -m rec_jax.main ... --stage=eval
  python -m rec_jax.export --workdir=/tmp/rec_beauty_2

then `POST /admin/reload {"artifact": ".../export"}` to the service (with
the admin token from --admin_token_file or $REC_JAX_ADMIN_TOKEN, checked
before training starts), which loads and compiles the new model beside the
old one and swaps it in without dropping a request; the new workdir must lie
under the service's --artifact_root. `--interactions` holds `user item item ...` lines (see
rec_jax.data.sources.files.read_new_interactions); the new items become each
user's newest, so validation and test hold out what happened last.
"""

import json
import os
import urllib.error
import urllib.request

from absl import app
from absl import flags
from absl import logging
import jax

from rec_jax import config_checks
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
  words = {'1': True, 'true': True, 'yes': True,
           '0': False, 'false': False, 'no': False}
  if isinstance(old, bool):
    if value.lower() not in words:
      raise app.UsageError(f'--set={assignment!r}: {key} is a boolean '
                           '(true / false)')
    parsed = words[value.lower()]
  else:
    try:
      parsed = type(old)(value) if old is not None else value
    except ValueError:
      raise app.UsageError(f'--set={assignment!r}: {key} is a '
                           f'{type(old).__name__}') from None
  with config.unlocked():
    target[node] = parsed


def reload_service(serve_url: str, artifact: str, token: str) -> dict:
  """POST /admin/reload of `artifact`; the service's answer.

  Raises:
    RuntimeError: with the service's error when it refuses the reload.
  """
  req = urllib.request.Request(
      serve_url.rstrip('/') + '/admin/reload',
      data=json.dumps({'artifact': artifact}).encode(),
      headers={'Content-Type': 'application/json',
               'Authorization': f'Bearer {token}'}, method='POST')
  try:
    with urllib.request.urlopen(req, timeout=600) as r:
      return json.load(r)
  except urllib.error.HTTPError as e:
    try:
      detail = json.loads(e.read()).get('error')
    except ValueError:
      detail = e.reason
    raise RuntimeError(f'{serve_url} refused the reload of {artifact} '
                       f'({e.code}): {detail}') from None


def retrain(served: str, interactions: str, workdir: str, *,
            sets=(), serve_url: str = '', admin_token: str | None = None
            ) -> dict:
  """Runs the four steps; returns results.json plus the artifact path (and
  the service's answer to the reload when `serve_url` is given, which needs
  `admin_token`)."""
  if serve_url and not admin_token:
    raise ValueError(f'--serve_url={serve_url}: the reload needs the '
                     "service's admin token (--admin_token_file or "
                     '$REC_JAX_ADMIN_TOKEN)')
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
  try:
    config_checks.check_values(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
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
    out['reload'] = reload_service(serve_url, path, admin_token)
    logging.info('Service now serves %s.', out['reload']['model'])
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  token = None
  if _FLAGS['serve_url'].value:
    from rec_jax import serve  # pylint: disable=g-import-not-at-top
    try:
      token = serve.load_admin_token(_FLAGS['admin_token_file'].value)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    if token is None:
      raise app.UsageError('--serve_url needs the service\'s admin token: '
                           '--admin_token_file or $REC_JAX_ADMIN_TOKEN')
  out = retrain(_FLAGS['served'].value, _FLAGS['interactions'].value,
                _FLAGS['workdir'].value, sets=_FLAGS['set'].value or (),
                serve_url=_FLAGS['serve_url'].value, admin_token=token)
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
  _FLAGS['admin_token_file'] = flags.DEFINE_string(
      'admin_token_file', None, "The service's admin token (else "
      '$REC_JAX_ADMIN_TOKEN); needed with --serve_url.')
  _FLAGS['set'] = flags.DEFINE_multi_string(
      'set', None, 'Config overrides, e.g. finetune.num_epochs=5.')
  flags.mark_flags_as_required(['served', 'interactions', 'workdir'])
  app.run(main)
