"""What every raw-file reader shares: errors, line and JSON parsing.

The family readers (`s3rec`, `movielens`, `amazon` in this package) build on
these helpers, so every malformed file is reported the same way: a
`DataError` naming the file and the 1-based line number or JSON key. Also
here, because several families use it: the S3-Rec line format
(`user_id item_id item_id ...`) and, for retraining, the reader of new
interactions in that format (`read_new_interactions`).
"""

import json
import os
import re

import numpy as np

# Said in every missing-file error, so the reader knows how to fix it.
DATA_DIR_HINT = (
    'Point the env var REC_JAX_DATA_DIR (or the data_dir argument of '
    'rec_jax.data.datasets.load, config key data.data_dir) at a directory laid '
    'out like shared/data (s3rec/, ml-1m/, ml-100k/, amazon-scientific/), or '
    'leave both unset to download the files.')

INT32_MAX = 2**31 - 1
# Whole-line fast path; lines that fail it are re-scanned to name the problem.
_INT_LINE_RE = re.compile(r'[0-9]+(?: [0-9]+)+')
_SIGNED_INT_RE = re.compile(r'[+-]?[0-9]+')
# Eleven or more significant digits: past int32 (and past int64 soon).
_HUGE_INT_RE = re.compile(r'[1-9][0-9]{10,}')


class DataError(ValueError):
  """A raw data file is missing or malformed."""


class MissingFileError(DataError, FileNotFoundError):
  """A required raw data file does not exist."""


def _where(path, lineno=None, key=None) -> str:
  where = os.fspath(path)
  if lineno is not None:
    where += f', line {lineno}'
  if key is not None:
    where += f', key {key!r}'
  return where


def error(path, message, *, lineno=None, key=None) -> DataError:
  """A `DataError` whose message starts with the file and the line or key."""
  return DataError(f'{_where(path, lineno, key)}: {message}')


def check_exists(path) -> None:
  """Raises `MissingFileError` naming `path` if it is not a file.

  Args:
    path: the file that must exist.

  Raises:
    MissingFileError: the file does not exist.
  """
  if not os.path.isfile(path):
    raise MissingFileError(f'missing data file {os.fspath(path)}. '
                           f'{DATA_DIR_HINT}')


def read_lines(path, encoding='utf-8') -> list[str]:
  """All lines without line endings; CRLF files are accepted."""
  check_exists(path)
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode(encoding)
  except UnicodeDecodeError as e:
    lineno = data[:e.start].count(b'\n') + 1
    raise error(path, f'not valid {encoding}: {e.reason}',
                lineno=lineno) from e
  lines = text.split('\n')
  if lines[-1] == '':
    lines.pop()  # The final newline does not start another line.
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def load_json(path):
  """Parses a JSON file; duplicate object keys are an error, not last-wins."""
  check_exists(path)

  def unique_keys(pairs):
    result = {}
    for key, value in pairs:
      if key in result:
        raise error(path, 'duplicate key', key=key)
      result[key] = value
    return result

  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
      raise error(path, f'invalid JSON: {e.msg}', lineno=e.lineno) from e
    except UnicodeDecodeError as e:
      raise error(path, f'not valid utf-8: {e.reason}') from e


def is_json_int(value) -> bool:
  """True for JSON integers; False for floats, strings and booleans."""
  return isinstance(value, int) and not isinstance(value, bool)


def _diagnose_int_line(path, lineno, tokens, what):
  """Raises the precise error for a line that failed the fast-path regex."""
  if len(tokens) < 2:
    raise error(path, f'expected a user id and at least one {what} id, got '
                f'{" ".join(tokens)!r}', lineno=lineno)
  for column, token in enumerate(tokens, start=1):
    if not token:
      raise error(path, f'empty token at column {column} (double, leading '
                  'or trailing space)', lineno=lineno)
    if not _SIGNED_INT_RE.fullmatch(token):
      raise error(path, f'token {token!r} at column {column} is not an '
                  'integer', lineno=lineno)
    if int(token) <= 0:
      kind = 'user' if column == 1 else what
      raise error(path, f'{kind} id {token} at column {column} must be >= 1 '
                  '(0 is padding)', lineno=lineno)
  raise error(path, 'malformed line', lineno=lineno)


def read_id_lines(path, what='item') -> list[np.ndarray]:
  """Parses `user id id ...` lines; line k must be user k. Returns the ids.

  `what` names the ids after the user id in error messages ('item').
  """
  lines = read_lines(path)
  if not lines:
    raise error(path, 'file is empty')
  for lineno, line in enumerate(lines, start=1):
    if not _INT_LINE_RE.fullmatch(line):
      _diagnose_int_line(path, lineno, line.split(' '), what)
  # Validated line by line above; convert and check ranges in one go (a
  # per-line numpy call costs more than the parsing for 20k short lines).
  # Ids too long for int64 are found in the text first.
  text = '\n'.join(lines)
  if (huge := _HUGE_INT_RE.search(text)) is not None:
    lineno = text.count('\n', 0, huge.start()) + 1
    raise error(path, f'id {huge.group()} does not fit in int32',
                lineno=lineno)
  lengths = np.array([line.count(' ') + 1 for line in lines])
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  flat = np.array(' '.join(lines).split(' '), dtype=np.int64)
  if flat.min() <= 0:  # Only '0' tokens get here.
    position = int(np.argmin(flat))
    lineno = int(np.searchsorted(starts, position, side='right'))
    column = position - starts[lineno - 1] + 1
    kind = 'user' if column == 1 else what
    raise error(path, f'{kind} id 0 at column {column} must be >= 1 (0 is '
                'padding)', lineno=lineno)
  if flat.max() > INT32_MAX:
    position = int(np.argmax(flat))
    lineno = int(np.searchsorted(starts, position, side='right'))
    raise error(path, f'id {flat[position]} does not fit in int32',
                lineno=lineno)
  users = flat[starts]
  wrong = np.flatnonzero(users != np.arange(1, len(lines) + 1))
  if wrong.size:
    lineno = int(wrong[0]) + 1
    raise error(path, f'user id {users[lineno - 1]} does not match the line '
                'number; users must be 1..N in file order', lineno=lineno)
  ids = flat.astype(np.int32)
  return [ids[start + 1:start + length]
          for start, length in zip(starts.tolist(), lengths.tolist())]


def read_s3rec_sequences(path) -> list[np.ndarray]:
  """Reads an S3-Rec `NAME.txt`: one `user_id item_id item_id ...` per line.

  The S3-Rec benchmarks, the derived `ml-1m.txt` and `Scientific.txt` all
  use this format.

  Args:
    path: the file.

  Returns:
    One int32 array of item ids per user, user 1 first.

  Raises:
    DataError: missing file, a malformed line, a non-integer token, an id
      <= 0, or user ids that are not 1..N in file order.
  """
  return read_id_lines(path, what='item')


def read_new_interactions(path, num_users: int,
                          num_items: int) -> dict[int, np.ndarray]:
  """Reads new interactions for retraining: `user_id item_id ...` lines in
  time order, in the S3-Rec format, for any subset of users (a user may
  appear on several lines; their items are appended in file order).

  Args:
    path: the file.
    num_users: users of the dataset; ids above it are new users, who must be
      numbered num_users + 1, num_users + 2, ... without gaps.
    num_items: item ids must lie in 1..num_items (the served catalog).

  Returns:
    {user id: int32 items to append}.

  Raises:
    DataError: naming the file and line of a malformed line, an item id out
      of the catalog, or a gap in new user ids.
  """
  lines = read_lines(path)
  if not lines:
    raise error(path, 'file is empty')
  out, next_new = {}, num_users + 1
  for lineno, line in enumerate(lines, start=1):
    tokens = line.split(' ')
    if not _INT_LINE_RE.fullmatch(line):
      _diagnose_int_line(path, lineno, tokens, 'item')
    ids = [int(t) for t in tokens]
    for column, item in enumerate(ids[1:], start=2):
      if not 1 <= item <= num_items:
        raise error(path, f'item id {item} at column {column} is not in '
                    f'the catalog 1..{num_items}', lineno=lineno)
    user = ids[0]
    if user > num_users and user not in out:
      if user != next_new:
        raise error(path, f'new user id {user}: expected {next_new} (new '
                    f'users are numbered {num_users + 1}, {num_users + 2}, '
                    '... in order of first appearance)', lineno=lineno)
      next_new += 1
    out[user] = np.concatenate([out.get(user, np.zeros(0, np.int32)),
                                np.asarray(ids[1:], np.int32)])
  return out

