"""Range checks of a recipe's values, before any data are read.

ml_collections already refuses unknown keys and values of another type
(`--config.model.max_len=abc`); this refuses values of the right type that
cannot train: a negative dropout, `max_len=0`, a learning rate <= 0, a
batch of 0 rows, a mesh that does not fit the devices. Each error names
the key, its value and what it must be. Rules match dotted keys by
pattern, so a key a new recipe adds under a known name (`*.batch_size`) is
checked too.
"""

import fnmatch

import jax

from rec_jax import config_lib
from rec_jax import sharding

_RATE = 'a rate in [0, 1)'
_RULES = (
    # (dotted-key pattern, test, what the value must be)
    ('*dropout_rate', lambda v: v == config_lib.FROM_DATA or 0 <= v < 1,
     f'{_RATE}, or {config_lib.FROM_DATA:g} (set from the data)'),
    ('model.max_len', lambda v: _int(v) and v >= 2, 'an integer >= 2'),
    ('model.embed_dim', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('model.mlp_dim', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('model.num_heads', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('model.num_layers', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('*batch_size', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('finetune.num_epochs', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('pretrain.num_epochs', lambda v: _int(v) and v >= 0, 'an integer >= 0'),
    ('*patience', lambda v: _int(v) and v >= 0, 'an integer >= 0'),
    ('*optimizer.lr', lambda v: v > 0, 'a learning rate > 0'),
    ('*optimizer.warmup_steps', lambda v: _int(v) and v >= 0,
     'an integer >= 0'),
    ('*optimizer.weight_decay', lambda v: v >= 0, 'a number >= 0'),
    ('*optimizer.grad_clip_norm', lambda v: v >= 0,
     'a number >= 0 (0: no clipping)'),
    ('*optimizer.b[12]', lambda v: 0 <= v < 1, _RATE),
    ('*optimizer.eps', lambda v: v > 0, 'a number > 0'),
    ('*mask_prob', lambda v: 0 <= v <= 1, 'a probability in [0, 1]'),
    ('finetune.label_smoothing', lambda v: 0 <= v < 1, _RATE),
    ('finetune.label_fraction', lambda v: 0 < v <= 1, 'a fraction in (0, 1]'),
    ('*temperature', lambda v: v > 0, 'a number > 0'),
    ('eval.top_k', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('checkpoint.max_to_keep', lambda v: _int(v) and v >= 1,
     'an integer >= 1'),
    ('checkpoint.*_steps', lambda v: _int(v) and v >= 0, 'an integer >= 0'),
    ('log_every_steps', lambda v: _int(v) and v >= 1, 'an integer >= 1'),
    ('seed', lambda v: _int(v) and v >= 0, 'an integer >= 0'),
    ('mesh.*', lambda v: _int(v) and (v == -1 or v >= 1),
     'an integer >= 1, or -1 (the remaining devices)'),
)


def _int(v) -> bool:
  return float(v).is_integer()


def _leaves(config, prefix=''):
  for key, value in config.items():
    path = f'{prefix}{key}'
    if hasattr(value, 'items'):
      yield from _leaves(value, path + '.')
    else:
      yield path, value


def check_values(config) -> None:
  """Raises ValueError naming the first key whose value no rule allows."""
  for key, value in _leaves(config):
    for pattern, ok, want in _RULES:
      if not fnmatch.fnmatchcase(key, pattern):
        continue
      number = isinstance(value, (int, float)) and not isinstance(value, bool)
      if not number or value != value or not ok(value):  # NaN fails too.
        raise ValueError(f'config {key}={value!r}: expected {want}')
  if 'mesh' in config:  # axes that fit the devices there are.
    sharding.mesh_shape(config.mesh, jax.device_count())
