"""Strict readers for the raw benchmark files.

Each reader turns the public files of one benchmark (layouts in
shared/data/README.md) into a `types.SequenceDataset`. The TFDS builders in
`tfds_builders.py` call these readers once, at preparation time, and cache the
result; nothing else should parse raw files.

Readers fail loudly: anything unexpected raises `DataError` (a `ValueError`)
whose message names the file and the 1-based line number or JSON key, so a
truncated download or a hand-edited file never becomes a silently wrong
benchmark number.
"""

import json
import os
import re

import numpy as np

from rec_jax.data import types

# Said in every missing-file error, so the reader knows how to fix it.
DATA_DIR_HINT = (
    'Point the env var REC_JAX_DATA_DIR (or the data_dir argument of '
    'rec_jax.data.datasets.load, config key data.data_dir) at a directory laid '
    'out like shared/data (s3rec/, ml-1m/, ml-100k/, amazon-scientific/), or '
    'leave both unset to download the files.')

# GroupLens genre vocabulary (ml-1m README order); attribute id = index + 1.
ML1M_GENRES = (
    'Action', 'Adventure', 'Animation', "Children's", 'Comedy', 'Crime',
    'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror', 'Musical',
    'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western')
# ml-100k has the same genres plus 'unknown' first (u.genre, flag columns).
ML100K_GENRES = ('unknown',) + ML1M_GENRES

_INT32_MAX = 2**31 - 1
# Whole-line fast path; lines that fail it are re-scanned to name the problem.
_INT_LINE_RE = re.compile(r'[0-9]+(?: [0-9]+)+')
_SIGNED_INT_RE = re.compile(r'[+-]?[0-9]+')
_RATINGS_DAT_RE = re.compile(r'[0-9]+::[0-9]+::[0-9]+::[0-9]+')


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


def _error(path, message, *, lineno=None, key=None) -> DataError:
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


def _read_lines(path, encoding='utf-8') -> list[str]:
  """All lines without line endings; CRLF files are accepted."""
  check_exists(path)
  with open(path, 'rb') as f:
    data = f.read()
  try:
    text = data.decode(encoding)
  except UnicodeDecodeError as e:
    lineno = data[:e.start].count(b'\n') + 1
    raise _error(path, f'not valid {encoding}: {e.reason}',
                 lineno=lineno) from e
  lines = text.split('\n')
  if lines[-1] == '':
    lines.pop()  # The final newline does not start another line.
  return [line[:-1] if line.endswith('\r') else line for line in lines]


def _load_json(path):
  """Parses a JSON file; duplicate object keys are an error, not last-wins."""
  check_exists(path)

  def unique_keys(pairs):
    result = {}
    for key, value in pairs:
      if key in result:
        raise _error(path, 'duplicate key', key=key)
      result[key] = value
    return result

  with open(path, encoding='utf-8') as f:
    try:
      return json.load(f, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
      raise _error(path, f'invalid JSON: {e.msg}', lineno=e.lineno) from e
    except UnicodeDecodeError as e:
      raise _error(path, f'not valid utf-8: {e.reason}') from e


def _is_canonical_int(text: str) -> bool:
  """True for '7', False for '07', '+7', ' 7', '7.0' or '٧'."""
  return text.isascii() and text.isdigit() and str(int(text)) == text


def _is_json_int(value) -> bool:
  """True for JSON integers; False for floats, strings and booleans."""
  return isinstance(value, int) and not isinstance(value, bool)


def _diagnose_int_line(path, lineno, tokens, what):
  """Raises the precise error for a line that failed the fast-path regex."""
  if len(tokens) < 2:
    raise _error(path, f'expected a user id and at least one {what} id, got '
                 f'{" ".join(tokens)!r}', lineno=lineno)
  for column, token in enumerate(tokens, start=1):
    if not token:
      raise _error(path, f'empty token at column {column} (double, leading '
                   'or trailing space)', lineno=lineno)
    if not _SIGNED_INT_RE.fullmatch(token):
      raise _error(path, f'token {token!r} at column {column} is not an '
                   'integer', lineno=lineno)
    if int(token) <= 0:
      kind = 'user' if column == 1 else what
      raise _error(path, f'{kind} id {token} at column {column} must be >= 1 '
                   '(0 is padding)', lineno=lineno)
  raise _error(path, 'malformed line', lineno=lineno)


def _read_id_lines(path, what='item') -> list[np.ndarray]:
  """Parses `user id id ...` lines; line k must be user k. Returns the ids."""
  lines = _read_lines(path)
  if not lines:
    raise _error(path, 'file is empty')
  for lineno, line in enumerate(lines, start=1):
    if not _INT_LINE_RE.fullmatch(line):
      _diagnose_int_line(path, lineno, line.split(' '), what)
  # Validated line by line above; convert and check ranges in one go (a
  # per-line numpy call costs more than the parsing for 20k short lines).
  lengths = np.array([line.count(' ') + 1 for line in lines])
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  flat = np.array(' '.join(lines).split(' '), dtype=np.int64)
  if flat.min() <= 0:  # Only '0' tokens get here.
    position = int(np.argmin(flat))
    lineno = int(np.searchsorted(starts, position, side='right'))
    column = position - starts[lineno - 1] + 1
    kind = 'user' if column == 1 else what
    raise _error(path, f'{kind} id 0 at column {column} must be >= 1 (0 is '
                 'padding)', lineno=lineno)
  if flat.max() > _INT32_MAX:
    position = int(np.argmax(flat))
    lineno = int(np.searchsorted(starts, position, side='right'))
    raise _error(path, f'id {flat[position]} does not fit in int32',
                 lineno=lineno)
  users = flat[starts]
  wrong = np.flatnonzero(users != np.arange(1, len(lines) + 1))
  if wrong.size:
    lineno = int(wrong[0]) + 1
    raise _error(path, f'user id {users[lineno - 1]} does not match the line '
                 'number; users must be 1..N in file order', lineno=lineno)
  ids = flat.astype(np.int32)
  return [ids[start + 1:start + length]
          for start, length in zip(starts.tolist(), lengths.tolist())]


def read_s3rec_sequences(path) -> list[np.ndarray]:
  """Reads an S3-Rec `NAME.txt`: one `user_id item_id item_id ...` per line.

  Args:
    path: the file.

  Returns:
    One int32 array of item ids per user, user 1 first.

  Raises:
    DataError: missing file, a malformed line, a non-integer token, an id
      <= 0, or user ids that are not 1..N in file order.
  """
  return _read_id_lines(path, what='item')


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
  lines = _read_lines(path)
  if not lines:
    raise _error(path, 'file is empty')
  out, next_new = {}, num_users + 1
  for lineno, line in enumerate(lines, start=1):
    tokens = line.split(' ')
    if not _INT_LINE_RE.fullmatch(line):
      _diagnose_int_line(path, lineno, tokens, 'item')
    ids = [int(t) for t in tokens]
    for column, item in enumerate(ids[1:], start=2):
      if not 1 <= item <= num_items:
        raise _error(path, f'item id {item} at column {column} is not in '
                     f'the catalog 1..{num_items}', lineno=lineno)
    user = ids[0]
    if user > num_users and user not in out:
      if user != next_new:
        raise _error(path, f'new user id {user}: expected {next_new} (new '
                     f'users are numbered {num_users + 1}, {num_users + 2}, '
                     '... in order of first appearance)', lineno=lineno)
      next_new += 1
    out[user] = np.concatenate([out.get(user, np.zeros(0, np.int32)),
                                np.asarray(ids[1:], np.int32)])
  return out


def read_item2attributes(path, num_items: int) -> tuple[np.ndarray, int]:
  """Reads an S3-Rec `NAME_item2attributes.json`.

  Duplicate attribute ids of one item (LastFM lists a tag once per user who
  gave it) are dropped, keeping first occurrences: the attributes are a set.

  Args:
    path: the file, `{"item_id": [attr_id, ...], ...}`.
    num_items: item ids must lie in 1..num_items.

  Returns:
    (attributes, num_attributes): int32 [num_items + 1, A] attribute ids
    padded with 0 (row 0 and items absent from the file are all zeros), and
    the largest attribute id.

  Raises:
    DataError: missing file, invalid JSON, a key that is not an item id in
      range, or attribute ids that are not positive integers.
  """
  mapping = _load_json(path)
  if not isinstance(mapping, dict):
    raise _error(path, 'expected a JSON object {"item_id": [attr_id, ...]}')
  rows = {}
  for key, attrs in mapping.items():
    if not _is_canonical_int(key) or not 1 <= int(key) <= num_items:
      raise _error(path, f'key is not an item id in 1..{num_items}', key=key)
    if not isinstance(attrs, list) or not all(
        _is_json_int(a) and a >= 1 for a in attrs):
      raise _error(path, 'expected a list of attribute ids >= 1 (0 is '
                   f'padding), got {attrs!r}', key=key)
    rows[int(key)] = list(dict.fromkeys(attrs))
  width = max((len(a) for a in rows.values()), default=0)
  table = np.zeros((num_items + 1, width), np.int32)
  for item, attrs in rows.items():
    table[item, :len(attrs)] = attrs
  num_attributes = int(table.max(initial=0))
  if num_attributes > _INT32_MAX:
    raise _error(path, f'attribute id {num_attributes} does not fit in int32')
  return table, num_attributes


def read_sample_negatives(path, sequences: list[np.ndarray],
                          num_items: int) -> np.ndarray:
  """Reads an S3-Rec `NAME_sample.txt`: `user_id neg_1 ... neg_99` per line.

  Upstream `generate_test.py` may repeat a negative within a row, so repeats
  are allowed; negatives inside the user's own history are not.

  Args:
    path: the file.
    sequences: the users' sequences, to check user ids and histories.
    num_items: negatives must lie in 1..num_items.

  Returns:
    int32 [num_users, 99].

  Raises:
    DataError: any malformed line, a row count or width that does not match,
      or a negative that is out of range or in the user's history.
  """
  rows = _read_id_lines(path, what='negative item')
  if len(rows) != len(sequences):
    raise _error(path, f'{len(rows)} rows but the sequences file has '
                 f'{len(sequences)} users')
  for lineno, (row, seq) in enumerate(zip(rows, sequences), start=1):
    if len(row) != 99:
      raise _error(path, f'expected 99 negatives, got {len(row)}',
                   lineno=lineno)
    if row.max() > num_items:
      raise _error(path, f'negative item {row.max()} > num_items {num_items}',
                   lineno=lineno)
    seen = np.isin(row, seq)
    if seen.any():
      raise _error(path, f'negative item {row[seen][0]} is in the user\'s own '
                   'history', lineno=lineno)
  return np.stack(rows)


def _check_items_in_range(path, sequences, num_items):
  for lineno, seq in enumerate(sequences, start=1):
    if seq.max() > num_items:
      raise _error(path, f'item id {seq.max()} > num_items {num_items}',
                   lineno=lineno)


def read_s3rec(name: str, sequences_path, attributes_path,
               sample_path=None) -> types.SequenceDataset:
  """Reads one S3-Rec benchmark (Beauty, Toys_and_Games, LastFM, ...).

  Args:
    name: dataset name stored in the result, e.g. 'beauty'.
    sequences_path: `NAME.txt`.
    attributes_path: `NAME_item2attributes.json`.
    sample_path: optional `NAME_sample.txt` with 99 negatives per user.

  Returns:
    The dataset; num_items is the largest item id.

  Raises:
    DataError: see the individual readers.
  """
  sequences = read_s3rec_sequences(sequences_path)
  num_items = int(max(s.max() for s in sequences))
  attributes, num_attributes = read_item2attributes(attributes_path, num_items)
  negatives = None
  if sample_path is not None:
    negatives = read_sample_negatives(sample_path, sequences, num_items)
  return types.SequenceDataset(
      name=name, sequences=sequences, num_items=num_items,
      item_attributes=attributes, num_attributes=num_attributes,
      sample_negatives=negatives)


def movie_text(title: str, genres) -> str:
  """The item text of a movie: title plus genres."""
  return f'{title}. Genres: {", ".join(genres)}.'


def _genre_attributes(genre_lists, vocabulary) -> np.ndarray:
  """int32 [len(genre_lists), G] genre attribute ids (index + 1), 0-padded."""
  width = max((len(g) for g in genre_lists), default=0)
  table = np.zeros((len(genre_lists), width), np.int32)
  for row, genres in enumerate(genre_lists):
    table[row, :len(genres)] = [vocabulary.index(g) + 1 for g in genres]
  return table


def _split_genres(path, lineno, field) -> list[str]:
  genres = field.split('|')
  unknown = [g for g in genres if g not in ML1M_GENRES]
  if unknown:
    raise _error(path, f'unknown genre(s) {unknown}', lineno=lineno)
  return genres


def read_ml1m_item_map(path, num_items: int) -> tuple[list[str], np.ndarray]:
  """Reads `ml-1m_item_map.tsv` (item_id, movie_id, title, genres; UTF-8).

  Args:
    path: the file; item ids must be exactly 1..num_items in order.
    num_items: number of items of `ml-1m.txt`.

  Returns:
    (item_text, item_attributes): num_items + 1 strings ('' first) and int32
    [num_items + 1, G] genre ids (ML1M_GENRES index + 1).

  Raises:
    DataError: missing file, bad header, wrong field count or ids, unknown
      genre.
  """
  lines = _read_lines(path)
  header = 'item_id\tmovie_id\ttitle\tgenres'
  if not lines or lines[0] != header:
    raise _error(path, f'expected the header {header!r}', lineno=1)
  texts, genre_lists = [''], [[]]
  for lineno, line in enumerate(lines[1:], start=2):
    fields = line.split('\t')
    if len(fields) != 4:
      raise _error(path, f'expected 4 tab-separated fields, got {len(fields)}',
                   lineno=lineno)
    item_id, movie_id, title, genre_field = fields
    if item_id != str(lineno - 1):
      raise _error(path, f'item id {item_id!r}, expected {lineno - 1} (ids '
                   'must be 1..M in order)', lineno=lineno)
    if not (movie_id.isascii() and movie_id.isdigit()):
      raise _error(path, f'movie id {movie_id!r} is not an integer',
                   lineno=lineno)
    genres = _split_genres(path, lineno, genre_field)
    texts.append(movie_text(title, genres))
    genre_lists.append(genres)
  if len(texts) != num_items + 1:
    raise _error(path, f'{len(texts) - 1} items but the sequences have '
                 f'{num_items}')
  return texts, _genre_attributes(genre_lists, ML1M_GENRES)


def read_ml1m_offline(sequences_path, item_map_path) -> types.SequenceDataset:
  """Reads the offline ml-1m files: `ml-1m.txt` plus `ml-1m_item_map.tsv`.

  `ml-1m.txt` is in S3-Rec format (users in ascending MovieLens UserID, items
  with >= 5 ratings renumbered by first appearance); it has no ratings or
  timestamps.

  Args:
    sequences_path: `ml-1m.txt`.
    item_map_path: `ml-1m_item_map.tsv`.

  Returns:
    The dataset, with genres as attributes and title + genres as item text.

  Raises:
    DataError: see `read_s3rec_sequences` and `read_ml1m_item_map`.
  """
  sequences = read_s3rec_sequences(sequences_path)
  num_items = int(max(s.max() for s in sequences))
  texts, attributes = read_ml1m_item_map(item_map_path, num_items)
  return types.SequenceDataset(
      name='ml-1m', sequences=sequences, num_items=num_items,
      item_attributes=attributes, num_attributes=len(ML1M_GENRES),
      item_text=texts)


def read_movies_dat(path) -> dict[int, tuple[str, list[str]]]:
  """Reads ml-1m `movies.dat` (latin-1, `MovieID::Title::Genres`).

  Args:
    path: the file.

  Returns:
    MovieID -> (title, genres).

  Raises:
    DataError: missing file, wrong field count, bad id, duplicate id, unknown
      genre.
  """
  movies = {}
  for lineno, line in enumerate(_read_lines(path, 'latin-1'), start=1):
    fields = line.split('::')
    if len(fields) != 3:
      raise _error(path, f'expected MovieID::Title::Genres, got {line!r}',
                   lineno=lineno)
    movie_id, title, genre_field = fields
    if not (movie_id.isascii() and movie_id.isdigit()) or int(movie_id) <= 0:
      raise _error(path, f'movie id {movie_id!r} is not an integer >= 1',
                   lineno=lineno)
    if int(movie_id) in movies:
      raise _error(path, f'duplicate movie id {movie_id}', lineno=lineno)
    movies[int(movie_id)] = (title, _split_genres(path, lineno, genre_field))
  return movies


def _group_by_user(path, users, timestamps):
  """Row indices per user (ascending id), each sorted by time, stably.

  Users must be exactly 1..N: the README promises it for both MovieLens sets.
  """
  unique = np.unique(users)
  if unique[0] != 1 or unique[-1] != len(unique):
    missing = np.setdiff1d(np.arange(1, unique[-1] + 1), unique)
    raise _error(path, f'user ids are not 1..N: {len(unique)} users, largest '
                 f'{unique[-1]}, first missing {missing[:5].tolist()}')
  # lexsort is stable: equal (user, time) keep their file order.
  order = np.lexsort((timestamps, users))
  bounds = np.searchsorted(users[order], np.arange(1, len(unique) + 2))
  return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def read_ml1m_ratings(ratings_path, movies_path,
                      min_item_count: int = 5) -> types.SequenceDataset:
  """Reads the GroupLens ml-1m `ratings.dat` + `movies.dat` (online path).

  Each user's ratings are sorted by timestamp (stable, so ties keep file
  order), items with fewer than `min_item_count` ratings are dropped, and the
  kept items are renumbered 1..M in order of first appearance scanning users
  in ascending UserID: the recipe behind `ml-1m.txt`. Tie order may differ
  from that file's (see shared/data/README.md).

  Args:
    ratings_path: `ratings.dat`, `UserID::MovieID::Rating::Timestamp`.
    movies_path: `movies.dat` (latin-1), for titles and genres.
    min_item_count: minimum number of ratings an item needs to be kept.

  Returns:
    The dataset with ratings and timestamps; users left without items are
    dropped and the rest renumbered 1..N in UserID order.

  Raises:
    DataError: malformed lines, ids <= 0, ratings outside 1..5, users that are
      not 1..N, a rated movie missing from movies.dat.
  """
  lines = _read_lines(ratings_path, 'latin-1')
  if not lines:
    raise _error(ratings_path, 'file is empty')
  bad = [i for i, line in enumerate(lines) if not _RATINGS_DAT_RE.fullmatch(
      line)]
  if bad:
    raise _error(ratings_path, 'expected UserID::MovieID::Rating::Timestamp '
                 f'(non-negative integers), got {lines[bad[0]]!r}',
                 lineno=bad[0] + 1)
  table = np.array(' '.join(lines).replace('::', ' ').split(),
                   dtype=np.int64).reshape(-1, 4)
  users, movies, ratings, timestamps = table.T
  for column, name in ((users, 'UserID'), (movies, 'MovieID')):
    if column.min() <= 0:
      row = int(np.argmin(column))
      raise _error(ratings_path, f'{name} 0 must be >= 1', lineno=row + 1)
  if ratings.min() < 1 or ratings.max() > 5:
    row = int(np.flatnonzero((ratings < 1) | (ratings > 5))[0])
    raise _error(ratings_path, f'rating {ratings[row]} outside 1..5',
                 lineno=row + 1)
  movie_info = read_movies_dat(movies_path)
  unknown = np.setdiff1d(np.unique(movies), list(movie_info))
  if unknown.size:
    row = int(np.flatnonzero(movies == unknown[0])[0])
    raise _error(ratings_path, f'MovieID {unknown[0]} is not in {movies_path}',
                 lineno=row + 1)

  _, inverse, counts = np.unique(movies, return_inverse=True,
                                 return_counts=True)
  keep = counts[inverse] >= min_item_count
  new_id = {}
  sequences, user_ratings, user_times = [], [], []
  for rows in _group_by_user(ratings_path, users, timestamps):
    rows = rows[keep[rows]]
    if not rows.size:
      continue
    for m in movies[rows].tolist():
      new_id.setdefault(m, len(new_id) + 1)
    sequences.append(np.array([new_id[m] for m in movies[rows].tolist()],
                              np.int32))
    user_ratings.append(ratings[rows].astype(np.float32))
    user_times.append(timestamps[rows].astype(np.int64))
  if not new_id:
    raise _error(ratings_path, f'no movie has >= {min_item_count} ratings')
  by_item = sorted(new_id, key=new_id.get)
  texts = [''] + [movie_text(*movie_info[m]) for m in by_item]
  attributes = _genre_attributes([[]] + [movie_info[m][1] for m in by_item],
                                 ML1M_GENRES)
  return types.SequenceDataset(
      name='ml-1m', sequences=sequences, num_items=len(new_id),
      item_attributes=attributes, num_attributes=len(ML1M_GENRES),
      item_text=texts, ratings=user_ratings, timestamps=user_times)


def read_ml100k_items(path) -> tuple[list[str], np.ndarray]:
  """Reads ml-100k `u.item` (latin-1, `|`-separated, 19 genre flags).

  Args:
    path: the file; movie ids must be 1..M in order.

  Returns:
    (item_text, item_attributes): M + 1 strings ('' first), title + genres;
    int32 [M + 1, G] genre ids (ML100K_GENRES index + 1).

  Raises:
    DataError: missing file, wrong field count, ids out of order, bad flags.
  """
  texts, genre_lists = [''], [[]]
  for lineno, line in enumerate(_read_lines(path, 'latin-1'), start=1):
    fields = line.split('|')
    if len(fields) != 5 + len(ML100K_GENRES):
      raise _error(path, f'expected {5 + len(ML100K_GENRES)} |-separated '
                   f'fields, got {len(fields)}', lineno=lineno)
    if fields[0] != str(lineno):
      raise _error(path, f'movie id {fields[0]!r}, expected {lineno} (ids '
                   'must be 1..M in order)', lineno=lineno)
    flags = fields[5:]
    if any(f not in ('0', '1') for f in flags):
      raise _error(path, 'genre flags must be 0 or 1', lineno=lineno)
    genres = [g for g, f in zip(ML100K_GENRES, flags) if f == '1']
    texts.append(movie_text(fields[1], genres))
    genre_lists.append(genres)
  if len(texts) == 1:
    raise _error(path, 'file is empty')
  return texts, _genre_attributes(genre_lists, ML100K_GENRES)


def read_ml100k(data_path, item_path) -> types.SequenceDataset:
  """Reads ml-100k `u.data` (user, item, rating, timestamp; tabs) + `u.item`.

  Each user's ratings are sorted by timestamp, stably; all ratings are kept
  and the original user and item ids are used (both are 1..N / 1..M).

  Args:
    data_path: `u.data`.
    item_path: `u.item`.

  Returns:
    The dataset with ratings, timestamps, genre attributes and item text.

  Raises:
    DataError: malformed lines, ids <= 0 or beyond u.item, ratings outside
      1..5, users that are not 1..N.
  """
  texts, attributes = read_ml100k_items(item_path)
  num_items = len(texts) - 1
  lines = _read_lines(data_path)
  if not lines:
    raise _error(data_path, 'file is empty')
  table = np.zeros((len(lines), 4), np.int64)
  for lineno, line in enumerate(lines, start=1):
    fields = line.split('\t')
    if len(fields) != 4 or not all(f.isascii() and f.isdigit() for f in fields):
      raise _error(data_path, 'expected user<TAB>item<TAB>rating<TAB>timestamp '
                   f'(non-negative integers), got {line!r}', lineno=lineno)
    table[lineno - 1] = [int(f) for f in fields]
    user, item, rating, _ = table[lineno - 1]
    if user <= 0 or item <= 0:
      raise _error(data_path, 'user and item ids must be >= 1 (0 is padding)',
                   lineno=lineno)
    if item > num_items:
      raise _error(data_path, f'item {item} is not in {item_path}',
                   lineno=lineno)
    if not 1 <= rating <= 5:
      raise _error(data_path, f'rating {rating} outside 1..5', lineno=lineno)
  users, items, ratings, timestamps = table.T
  groups = _group_by_user(data_path, users, timestamps)
  return types.SequenceDataset(
      name='ml-100k',
      sequences=[items[g].astype(np.int32) for g in groups],
      num_items=num_items, item_attributes=attributes,
      num_attributes=len(ML100K_GENRES), item_text=texts,
      ratings=[ratings[g].astype(np.float32) for g in groups],
      timestamps=[timestamps[g] for g in groups])


def read_inter_json(path) -> list[np.ndarray]:
  """Reads an LC-Rec style `NAME.inter.json` (0-based) as 1-based sequences.

  Args:
    path: `{"user_idx": [item_idx, ...]}` with users 0..N-1.

  Returns:
    One int32 array per user with every item id + 1 (user u -> index u),
    i.e. the S3-Rec numbering of `Scientific.txt`.

  Raises:
    DataError: missing file, invalid JSON, users not 0..N-1 or empty or
      non-integer item lists.
  """
  mapping = _load_json(path)
  if not isinstance(mapping, dict):
    raise _error(path, 'expected a JSON object {"user_idx": [item_idx, ...]}')
  sequences = []
  for user in range(len(mapping)):
    key = str(user)
    if key not in mapping:
      raise _error(path, f'users must be "0".."{len(mapping) - 1}"', key=key)
    items = mapping[key]
    if not isinstance(items, list) or not items or not all(
        _is_json_int(i) and 0 <= i < _INT32_MAX for i in items):
      raise _error(path, 'expected a non-empty list of item indices >= 0',
                   key=key)
    sequences.append(np.array(items, np.int32) + 1)
  if not sequences:
    raise _error(path, 'file is empty')
  return sequences


def _sentence(text: str) -> str:
  text = text.strip()
  return text if not text or text[-1] in '.!?' else text + '.'


def amazon_item_text(meta: dict) -> str:
  """Item text from an Amazon item record: title, brand, categories, text."""
  parts = [_sentence(meta['title'])]
  if meta['brand'].strip():
    parts.append(_sentence(f'Brand: {meta["brand"]}'))
  if meta['categories'].strip():
    parts.append(_sentence(f'Categories: {meta["categories"]}'))
  parts.append(_sentence(meta['description']))
  return ' '.join(p for p in parts if p)


def read_amazon_item_json(path, num_items: int) -> list[str]:
  """Reads an LC-Rec style `NAME.item.json` as 1-based item text.

  Args:
    path: `{"item_idx": {"title", "description", "brand", "categories"}}`,
      0-based: item k of the S3-Rec numbering is key str(k - 1).
    num_items: keys must be exactly "0".."num_items - 1".

  Returns:
    num_items + 1 strings, '' first.

  Raises:
    DataError: missing file, invalid JSON, missing or extra keys, missing
      fields, an empty title.
  """
  mapping = _load_json(path)
  if not isinstance(mapping, dict):
    raise _error(path, 'expected a JSON object {"item_idx": {...}}')
  if len(mapping) != num_items:
    extra = sorted(set(mapping) - {str(k) for k in range(num_items)})
    raise _error(path, f'{len(mapping)} items but the sequences have '
                 f'{num_items}; unexpected keys {extra[:5]}')
  texts = ['']
  for item in range(num_items):
    key = str(item)
    meta = mapping.get(key)
    if not isinstance(meta, dict):
      raise _error(path, 'missing item record', key=key)
    for field in ('title', 'description', 'brand', 'categories'):
      if not isinstance(meta.get(field), str):
        raise _error(path, f'field {field!r} missing or not a string', key=key)
    if not meta['title'].strip():
      raise _error(path, 'empty title', key=key)
    texts.append(amazon_item_text(meta))
  return texts


def read_scientific(item_json_path, *, sequences_path=None,
                    inter_json_path=None) -> types.SequenceDataset:
  """Reads Amazon Scientific: sequences plus `Scientific.item.json` text.

  Exactly one sequence source is given: the derived S3-Rec style
  `Scientific.txt` (offline) or the upstream 0-based `Scientific.inter.json`
  (online), which is shifted by +1 to give the same numbering.

  Args:
    item_json_path: `Scientific.item.json`.
    sequences_path: `Scientific.txt`.
    inter_json_path: `Scientific.inter.json`.

  Returns:
    The dataset with item text and no attributes.

  Raises:
    DataError: see the individual readers; also when the item ids are not
      exactly 1..M.
  """
  if (sequences_path is None) == (inter_json_path is None):
    raise ValueError('give exactly one of sequences_path, inter_json_path')
  if sequences_path is not None:
    source, sequences = sequences_path, read_s3rec_sequences(sequences_path)
  else:
    source, sequences = inter_json_path, read_inter_json(inter_json_path)
  num_items = int(max(s.max() for s in sequences))
  used = np.unique(np.concatenate(sequences))
  if used.size != num_items:
    raise _error(source, f'item ids are not contiguous: {used.size} distinct '
                 f'ids, largest {num_items}')
  texts = read_amazon_item_json(item_json_path, num_items)
  return types.SequenceDataset(
      name='scientific', sequences=sequences, num_items=num_items,
      item_text=texts)
