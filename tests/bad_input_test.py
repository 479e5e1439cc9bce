"""Bad input, systematically: property-based cases (hypothesis) over the
files and requests rec_jax reads. Each case ends in the result the input
means, or in a clear error naming the file and line, the key or the field:
never another exception, never a silently different result.

Deterministic (derandomize): CI runs the same cases every time.
"""

import json
import os
import tempfile

import hypothesis
from hypothesis import strategies as st
import numpy as np

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

