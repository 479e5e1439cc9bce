"""Configs that runs saved (`<stage>/config.json`): the check that a
workdir is resumed (or tabulated) only by the config it started with, and
the upgrade that reads configs saved by older code in today's layout."""

import copy
import fnmatch
import json
import os

from absl import logging
import ml_collections

from rec_jax import config_lib


# ------------------------------------------------------- resume checks ----

# Keys that may change between a run and its resumption: where it runs and
# how often it logs or checkpoints, not what it computes.
RESUME_FREE = ('mesh.*', 'axis_rules', 'checkpoint.*', 'log_every_steps',
               'data.data_dir', 'data.cache_dir', 'eval.batch_size',
               'eval.top_k', 'eval.sampled')
# Sections a stage's results do not depend on.
# The pretraining stage's encoder is the plain one: the fine-tune's
# additions (model.peft, the task heads) do not change it.
STAGE_FREE = {'pretrain': ('finetune.*', 'init_from.*', 'eval.*',
                           'model.peft.*', 'model.head', 'model.rating_head'),
              'finetune': (),
              'eval': ('eval.*',)}


def flatten(tree, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists and tuples stay leaves."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def _free(key: str, patterns) -> bool:
  return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def config_diff(saved: dict, current: dict, ignore=()) -> tuple:
  """Compares two configs (as JSON dicts) key by key.

  Returns:
    (changed, only_saved, only_current): `changed` maps each dotted key whose
    value differs to (saved, current); the other two list keys that only one
    side has. Keys matching a glob in `ignore` are left out.
  """
  a, b = flatten(saved), flatten(current)
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  changed = {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys())
             if norm(a[k]) != norm(b[k]) and not _free(k, ignore)}
  only_a = sorted(k for k in a.keys() - b.keys() if not _free(k, ignore))
  only_b = sorted(k for k in b.keys() - a.keys() if not _free(k, ignore))
  return changed, only_a, only_b


def check_resume(stage_dir: str, config, stage: str, allow=(),
                 finished: bool = False) -> None:
  """Refuses to resume (or evaluate) a stage run with another recipe.

  A stage directory holding checkpoints is resumed by whatever config the
  command gives; when that config differs from the one the run started with
  (DIR/config.json), resuming would silently mix two recipes, or report an
  old run's numbers as the new recipe's. This raises instead, naming every
  key that changed.

  Args:
    stage_dir: `<workdir>/pretrain` or `<workdir>/finetune`.
    config: the config of this command.
    stage: 'pretrain', 'finetune' or 'eval' (which sections matter).
    allow: globs of further keys allowed to change (`main --allow_changed`).
    finished: check whenever DIR/config.json exists, checkpoints or not (a
      finished run whose checkpoints are gone, or its archived copy in
      benchmarks/results/runs, is still checked before it is tabulated).

  Raises:
    ValueError: when a key that matters differs.
  """
  path = os.path.join(stage_dir, 'config.json')
  started = any(os.path.isdir(os.path.join(stage_dir, d)) and
                os.listdir(os.path.join(stage_dir, d))
                for d in ('checkpoints', 'best'))
  if not ((started or finished) and os.path.exists(path)):
    return
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  ignore = RESUME_FREE + STAGE_FREE[stage] + tuple(allow)
  changed, only_saved, only_current = config_diff(saved, current, ignore)
  if only_saved or only_current:
    logging.warning('%s: keys only in the saved config %s, only in this '
                    'one %s (a run from another version of the code?)',
                    path, only_saved, only_current)
  if changed:
    lines = '\n'.join(f'  {k}: {a!r} (saved) != {b!r} (now)'
                      for k, (a, b) in changed.items())
    raise ValueError(
        f'{stage_dir} holds a {stage if stage != "eval" else "finetune"} run '
        f'started with another config ({path}); resuming it would mix two '
        f'recipes:\n{lines}\nUse a fresh --workdir, or pass '
        '--allow_changed=KEY,... to resume anyway.')


# ------------------------------------------------------- saved configs ----

# Keys that moved since configs were first saved (config.json of a run).
MOVED = {f'model.{k}': f'model.peft.{k}' for k in (
    'lora_rank', 'lora_alpha', 'lora_table_rank', 'lora_table_init',
    'prefix_len', 'adapter_dim')}
# Keys added since, with the value that gives the older runs' behaviour
# (where the saved config has their section): pretrain.epochs is set from
# the data by the rule the older code applied at run time.
ADDED = {'model.name': 'sasrec',
         'pretrain.epochs': int(config_lib.FROM_DATA),
         'pretrain.packed': False,
         'eval.every_steps': 0}


def upgrade(saved: dict) -> dict:
  """A saved config (config.json as a dict) in today's layout: moved keys
  (MOVED) at their new place, added keys (ADDED) at the value that older
  code implied, a `model.peft` section filled from its defaults. A run
  made before a change still exports, serves and evaluates."""
  saved = copy.deepcopy(saved)
  model = saved.setdefault('model', {})
  peft_section = model.setdefault('peft', {})
  for old, new in MOVED.items():
    name = old.split('.')[1]
    if name in model:
      peft_section.setdefault(new.split('.')[2], model.pop(name))
  for key, value in config_lib.peft_config().to_dict().items():
    peft_section.setdefault(key, value)
  for key, value in ADDED.items():
    section, name = key.split('.')
    if section in saved:
      saved[section].setdefault(name, value)
  return saved


def load_saved(path: str) -> ml_collections.ConfigDict:
  """The config a run saved (`<stage>/config.json`), upgraded."""
  with open(path, encoding='utf-8') as f:
    return ml_collections.ConfigDict(upgrade(json.load(f)))
