"""Bad input, systematically: property-based cases (hypothesis) over the
files and requests rec_jax reads. Each case ends in the result the input
means, or in a clear error naming the file and line, the key or the field:
never another exception, never a silently different result.

Deterministic (derandomize): CI runs the same cases every time.
"""

import copy
import json
import os
import re
import tempfile

import hypothesis
from hypothesis import strategies as st
import numpy as np
import pytest

from rec_jax import serve
from rec_jax.data.sources import files
from rec_jax.data.sources import s3rec

SETTINGS = hypothesis.settings(max_examples=150, deadline=None,
                               derandomize=True, database=None)

# users 1..N with 1..8 items each.
sequences = st.lists(st.lists(st.integers(1, 5000), min_size=1, max_size=8),
                     min_size=1, max_size=12)


def _lines(seqs):
  return [' '.join(map(str, [u, *s])) for u, s in enumerate(seqs, start=1)]


def _write(data: bytes) -> str:
  fd, path = tempfile.mkstemp(suffix='.txt')
  with os.fdopen(fd, 'wb') as f:
    f.write(data)
  return path


def _read(data: bytes, reader):
  path = _write(data)
  try:
    return path, reader(path)
  except files.DataError as e:
    return path, e
  finally:
    os.remove(path)


def _same(got, seqs):
  return len(got) == len(seqs) and all(
      g.dtype == np.int32 and g.tolist() == s for g, s in zip(got, seqs))


@SETTINGS
@hypothesis.given(sequences, st.sampled_from(['\n', '\r\n']),
                  st.booleans())
def test_valid_sequence_files_read_back_exactly(seqs, newline, final):
  text = newline.join(_lines(seqs)) + (newline if final else '')
  _, got = _read(text.encode(), files.read_s3rec_sequences)
  assert not isinstance(got, Exception), got
  assert _same(got, seqs)


# Each mutation of line `i` (0-based) of a valid file, and the line
# (1-based) its error must name.
def _mutate(lines, kind, i, draw):
  lines = list(lines)
  if kind == 'empty line':
    lines.insert(i, '')
    return lines, i + 1
  if kind == 'tab':
    lines[i] = lines[i].replace(' ', '\t', 1)
  elif kind == 'huge id':
    digits = draw(st.integers(11, 40))
    lines[i] += ' ' + '9' * digits
  elif kind == 'int32 overflow':
    lines[i] += f' {2**31 + draw(st.integers(0, 10**9))}'
  elif kind == 'duplicate user':
    lines.insert(i + 1, lines[i])
    return lines, i + 2
  elif kind == 'unsorted users':
    if len(lines) < 2:
      return None
    j = draw(st.integers(0, len(lines) - 1).filter(lambda j: j != i))
    lines[i], lines[j] = lines[j], lines[i]
    return lines, min(i, j) + 1
  elif kind == 'BOM':
    lines[0] = '\ufeff' + lines[0]
    return lines, 1
  elif kind == 'trailing space':
    lines[i] += ' '
  elif kind == 'double space':
    lines[i] = lines[i].replace(' ', '  ', 1)
  elif kind == 'negative id':
    lines[i] += ' -' + str(draw(st.integers(1, 99)))
  elif kind == 'zero id':
    lines[i] += ' 0'
  elif kind == 'float id':
    lines[i] += ' 3.5'
  elif kind == 'user only':
    lines[i] = lines[i].split(' ')[0]
  elif kind == 'NUL':
    lines[i] += '\x00'
  elif kind == 'letters':
    lines[i] += ' ' + draw(st.text('abcxyz', min_size=1, max_size=4))
  return lines, i + 1


MUTATIONS = ('empty line', 'tab', 'huge id', 'int32 overflow',
             'duplicate user', 'unsorted users', 'BOM', 'trailing space',
             'double space', 'negative id', 'zero id', 'float id',
             'user only', 'NUL', 'letters', 'latin-1 byte')


@SETTINGS
@hypothesis.given(sequences, st.sampled_from(MUTATIONS), st.data())
def test_each_bad_line_is_named(seqs, kind, data):
  lines = _lines(seqs)
  i = data.draw(st.integers(0, len(lines) - 1))
  if kind == 'latin-1 byte':
    raw = ('\n'.join(lines[:i]) + ('\n' if i else '')).encode() + (
        lines[i] + ' caf\xe9\n').encode('latin-1')
    want = i + 1
  else:
    mutated = _mutate(lines, kind, i, data.draw)
    hypothesis.assume(mutated is not None)
    lines, want = mutated
    raw = ('\n'.join(lines) + '\n').encode()
  path, got = _read(raw, files.read_s3rec_sequences)
  assert isinstance(got, files.DataError), (kind, got)
  assert str(got).startswith(f'{path}, line {want}: '), (kind, str(got))


@SETTINGS
@hypothesis.given(st.binary(max_size=300))
def test_any_bytes_give_sequences_or_a_data_error(raw):
  path, got = _read(raw, files.read_s3rec_sequences)
  if isinstance(got, Exception):
    assert str(got).startswith(path), got
  else:  # then the bytes were a valid file, and this is what it says.
    lines = raw.decode().split('\n')
    if lines[-1] == '':
      lines.pop()
    said = [[int(t) for t in l.removesuffix('\r').split(' ')] for l in lines]
    assert said == [[u, *g.tolist()] for u, g in enumerate(got, start=1)]


@SETTINGS
@hypothesis.given(st.binary(max_size=300))
def test_any_bytes_as_new_interactions(raw):
  path, got = _read(raw, lambda p: files.read_new_interactions(p, 10, 50))
  if isinstance(got, Exception):
    assert str(got).startswith(path), got
    return
  for user, items in got.items():
    assert 1 <= user <= 10 + len(got)
    assert items.dtype == np.int32 and ((items >= 1) & (items <= 50)).all()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) |
    st.floats(allow_nan=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) |
    st.dictionaries(st.text(max_size=4), kids, max_size=4), max_leaves=12)


@SETTINGS
@hypothesis.given(st.dictionaries(
    st.sampled_from(['1', '2', '3', '0', '4', '01', 'x', '-1']),
    json_values | st.lists(st.integers(-3, 2**40), max_size=4),
    max_size=4))
def test_attribute_json_of_any_shape(mapping):
  path, got = _read(json.dumps(mapping).encode(),
                    lambda p: s3rec.read_item2attributes(p, num_items=3))
  if isinstance(got, Exception):
    assert str(got).startswith(f'{path}, key '), got
    return
  table, num_attributes = got
  assert table.shape[0] == 4 and table.dtype == np.int32
  for key, attrs in mapping.items():
    assert table[int(key), :len(set(attrs))].tolist() == list(
        dict.fromkeys(attrs))
  assert num_attributes == table.max(initial=0)


recommend_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({'history': st.lists(json_values, max_size=5)},
                          optional={'k': json_values,
                                    'exclude_seen': json_values}),
    st.fixed_dictionaries(
        {'history': st.lists(st.integers(-5, 120), max_size=8)},
        optional={'k': st.integers(-3, 30), 'exclude_seen': st.booleans()}))


@SETTINGS
@hypothesis.given(recommend_bodies)
def test_recommend_bodies(body):
  raw = json.dumps(body).encode()
  try:
    req = serve.parse_request(raw, num_items=100, k_max=20)
  except serve.BadRequest as e:
    assert 400 <= e.status < 500 and e.reason and str(e)
    return
  # Accepted only what the model can answer, as it was sent.
  assert req['history'] == body['history']
  assert all(type(x) is int and 1 <= x <= 100 for x in req['history'])  # pylint: disable=unidiomatic-typecheck
  assert 1 <= req['k'] <= 20 and req['k'] == body.get('k', 10)
  assert req['exclude_seen'] is body.get('exclude_seen', True)


@SETTINGS
@hypothesis.given(st.binary(max_size=200))
def test_recommend_bytes(raw):
  try:
    serve.parse_request(raw, num_items=100, k_max=20)
  except serve.BadRequest as e:
    assert 400 <= e.status < 500


def test_the_suite_tries_every_mutation():
  """The mutation list and _mutate agree (a kind _mutate does not know
  would silently test an unchanged, valid file)."""
  for kind in MUTATIONS:
    if kind == 'latin-1 byte':
      continue
    lines = ['1 5 6', '2 7', '3 8 9']
    out = _mutate(lines, kind, 1, lambda strategy: hypothesis.find(
        strategy, lambda _: True, settings=hypothesis.settings(
            database=None)))
    assert out is None or out[0] != lines, kind



# -------------------------------------------------------------- configs ----


def _recipe():
  import conftest  # pylint: disable=g-import-not-at-top
  return conftest.load_config('recommended')


def _with(config, key, value):
  config = copy.deepcopy(config)
  *path, node = key.split('.')
  target = config
  for part in path:
    target = target[part]
  with config.unlocked(), target.ignore_type():
    target[node] = value
  return config


nan, inf = float('nan'), float('inf')
# Values that cannot train, drawn per key; each must be refused naming it.
BAD_VALUES = {
    'model.dropout_rate': st.floats().filter(
        lambda x: not 0 <= x < 1 and x != -1) | st.just(nan),
    'model.attention_dropout_rate': st.floats(1, 10) | st.just(-0.5),
    'model.max_len': st.integers(-10**6, 1) | st.just(2.5) | st.just(True),
    'model.embed_dim': st.integers(-100, 0),
    'model.num_layers': st.integers(-5, 0),
    'finetune.batch_size': st.integers(-100, 0) | st.just(inf),
    'finetune.num_epochs': st.integers(-100, 0),
    'finetune.optimizer.lr': st.floats(max_value=0) | st.just(nan),
    'pretrain.optimizer.lr': st.floats(max_value=0),
    'finetune.optimizer.b2': st.floats(1, 2) | st.floats(max_value=-1e-9),
    'finetune.label_smoothing': st.floats(1, 5),
    'finetune.label_fraction': st.floats(max_value=0) | st.floats(1.01, 9),
    'pretrain.temperature': st.floats(max_value=0),
    'pretrain.mask_prob': st.floats(1.001, 5) | st.floats(max_value=-1e-9),
    'eval.top_k': st.integers(-5, 0),
    'checkpoint.max_to_keep': st.integers(-5, 0),
    'log_every_steps': st.integers(-5, 0),
    'seed': st.integers(max_value=-1) | st.just('0'),
    'mesh.data': st.integers(-10, -2) | st.just(0),
    'mesh.model': st.just(0) | st.just(1.5),
}


@SETTINGS
@hypothesis.given(st.data())
def test_out_of_range_config_values_are_refused_naming_the_key(data):
  from rec_jax import config_checks  # pylint: disable=g-import-not-at-top
  key = data.draw(st.sampled_from(sorted(BAD_VALUES)))
  value = data.draw(BAD_VALUES[key])
  with pytest.raises(ValueError, match=f'^config {re.escape(key)}='):
    config_checks.check_values(_with(_recipe(), key, value))


@SETTINGS
@hypothesis.given(st.floats(0, 0.99), st.integers(2, 512),
                  st.floats(1e-8, 10), st.integers(1, 4096))
def test_in_range_config_values_pass(dropout, max_len, lr, batch):
  from rec_jax import config_checks  # pylint: disable=g-import-not-at-top
  config = _recipe()
  for key, value in (('model.dropout_rate', dropout), ('model.max_len',
                     max_len), ('finetune.optimizer.lr', lr),
                     ('finetune.batch_size', batch)):
    config = _with(config, key, value)
  config_checks.check_values(config)


def test_two_open_mesh_axes_are_refused():
  from rec_jax import config_checks  # pylint: disable=g-import-not-at-top
  config = _with(_with(_recipe(), 'mesh.data', -1), 'mesh.model', -1)
  with pytest.raises(ValueError, match='at most one axis may be -1'):
    config_checks.check_values(config)


def test_bad_overrides_stop_the_run_before_it_writes(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from conftest import REPO  # pylint: disable=g-import-not-at-top
  for override, message in (
      ('model.max_len=abc', 'invalid literal'),
      ('model.max_len=0', 'config model.max_len=0: expected an integer >= 2'),
      ('model.dropout_rate=-0.5', 'config model.dropout_rate=-0.5'),
      ('finetune.optimizer.lr=0', 'config finetune.optimizer.lr=0.0'),
      ('mesh.data=3', 'does not divide'),
      ('model.no_such_key=1', 'no_such_key')):
    workdir = tmp_path / override.split('=')[0]
    proc = subprocess.run(
        [sys.executable, '-m', 'rec_jax.main',
         '--config=configs/sasrec.py:smoke', f'--workdir={workdir}',
         f'--config.{override}'],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, override
    assert message in proc.stderr, (override, proc.stderr[-1500:])
    assert not os.path.exists(workdir / 'finetune'), override
