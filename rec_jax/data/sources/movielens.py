"""Readers for MovieLens: ml-1m (offline copy and GroupLens files) and ml-100k.

ml-1m comes two ways (shared/data/README.md): offline, the derived S3-Rec
style `ml-1m.txt` plus `ml-1m_item_map.tsv` (`read_ml1m_offline`); online,
the GroupLens `ratings.dat` plus `movies.dat` (`read_ml1m_ratings`), which
also gives ratings and timestamps. ml-100k is read from `u.data` plus
`u.item` (`read_ml100k`). Genres become attributes, title plus genres the
item text. `rec_jax.data.builders.movielens` prepares them for TFDS.
"""

import re

import numpy as np

from rec_jax.data import types
from rec_jax.data.sources import files

# GroupLens genre vocabulary (ml-1m README order); attribute id = index + 1.
ML1M_GENRES = (
    'Action', 'Adventure', 'Animation', "Children's", 'Comedy', 'Crime',
    'Documentary', 'Drama', 'Fantasy', 'Film-Noir', 'Horror', 'Musical',
    'Mystery', 'Romance', 'Sci-Fi', 'Thriller', 'War', 'Western')
# ml-100k has the same genres plus 'unknown' first (u.genre, flag columns).
ML100K_GENRES = ('unknown',) + ML1M_GENRES

_RATINGS_DAT_RE = re.compile(r'[0-9]+::[0-9]+::[0-9]+::[0-9]+')


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
    raise files.error(path, f'unknown genre(s) {unknown}', lineno=lineno)
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
  lines = files.read_lines(path)
  header = 'item_id\tmovie_id\ttitle\tgenres'
  if not lines or lines[0] != header:
    raise files.error(path, f'expected the header {header!r}', lineno=1)
  texts, genre_lists = [''], [[]]
  for lineno, line in enumerate(lines[1:], start=2):
    fields = line.split('\t')
    if len(fields) != 4:
      raise files.error(path, 'expected 4 tab-separated fields, got '
                        f'{len(fields)}', lineno=lineno)
    item_id, movie_id, title, genre_field = fields
    if item_id != str(lineno - 1):
      raise files.error(path, f'item id {item_id!r}, expected {lineno - 1} '
                        '(ids must be 1..M in order)', lineno=lineno)
    if not (movie_id.isascii() and movie_id.isdigit()):
      raise files.error(path, f'movie id {movie_id!r} is not an integer',
                        lineno=lineno)
    genres = _split_genres(path, lineno, genre_field)
    texts.append(movie_text(title, genres))
    genre_lists.append(genres)
  if len(texts) != num_items + 1:
    raise files.error(path, f'{len(texts) - 1} items but the sequences have '
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
  sequences = files.read_s3rec_sequences(sequences_path)
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
  for lineno, line in enumerate(files.read_lines(path, 'latin-1'), start=1):
    fields = line.split('::')
    if len(fields) != 3:
      raise files.error(path, f'expected MovieID::Title::Genres, got {line!r}',
                        lineno=lineno)
    movie_id, title, genre_field = fields
    if not (movie_id.isascii() and movie_id.isdigit()) or int(movie_id) <= 0:
      raise files.error(path, f'movie id {movie_id!r} is not an integer >= 1',
                        lineno=lineno)
    if int(movie_id) in movies:
      raise files.error(path, f'duplicate movie id {movie_id}', lineno=lineno)
    movies[int(movie_id)] = (title, _split_genres(path, lineno, genre_field))
  return movies


def _group_by_user(path, users, timestamps):
  """Row indices per user (ascending id), each sorted by time, stably.

  Users must be exactly 1..N: the README promises it for both MovieLens sets.
  """
  unique = np.unique(users)
  if unique[0] != 1 or unique[-1] != len(unique):
    missing = np.setdiff1d(np.arange(1, unique[-1] + 1), unique)
    raise files.error(path, f'user ids are not 1..N: {len(unique)} users, '
                      f'largest {unique[-1]}, first missing '
                      f'{missing[:5].tolist()}')
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
  lines = files.read_lines(ratings_path, 'latin-1')
  if not lines:
    raise files.error(ratings_path, 'file is empty')
  bad = [i for i, line in enumerate(lines) if not _RATINGS_DAT_RE.fullmatch(
      line)]
  if bad:
    raise files.error(ratings_path, 'expected UserID::MovieID::Rating::'
                      'Timestamp (non-negative integers), got '
                      f'{lines[bad[0]]!r}', lineno=bad[0] + 1)
  table = np.array(' '.join(lines).replace('::', ' ').split(),
                   dtype=np.int64).reshape(-1, 4)
  users, movies, ratings, timestamps = table.T
  for column, name in ((users, 'UserID'), (movies, 'MovieID')):
    if column.min() <= 0:
      row = int(np.argmin(column))
      raise files.error(ratings_path, f'{name} 0 must be >= 1', lineno=row + 1)
  if ratings.min() < 1 or ratings.max() > 5:
    row = int(np.flatnonzero((ratings < 1) | (ratings > 5))[0])
    raise files.error(ratings_path, f'rating {ratings[row]} outside 1..5',
                      lineno=row + 1)
  movie_info = read_movies_dat(movies_path)
  unknown = np.setdiff1d(np.unique(movies), list(movie_info))
  if unknown.size:
    row = int(np.flatnonzero(movies == unknown[0])[0])
    raise files.error(ratings_path,
                      f'MovieID {unknown[0]} is not in {movies_path}',
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
    raise files.error(ratings_path, f'no movie has >= {min_item_count} ratings')
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
  for lineno, line in enumerate(files.read_lines(path, 'latin-1'), start=1):
    fields = line.split('|')
    if len(fields) != 5 + len(ML100K_GENRES):
      raise files.error(path, f'expected {5 + len(ML100K_GENRES)} |-separated '
                        f'fields, got {len(fields)}', lineno=lineno)
    if fields[0] != str(lineno):
      raise files.error(path, f'movie id {fields[0]!r}, expected {lineno} (ids '
                        'must be 1..M in order)', lineno=lineno)
    flags = fields[5:]
    if any(f not in ('0', '1') for f in flags):
      raise files.error(path, 'genre flags must be 0 or 1', lineno=lineno)
    genres = [g for g, f in zip(ML100K_GENRES, flags) if f == '1']
    texts.append(movie_text(fields[1], genres))
    genre_lists.append(genres)
  if len(texts) == 1:
    raise files.error(path, 'file is empty')
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
  lines = files.read_lines(data_path)
  if not lines:
    raise files.error(data_path, 'file is empty')
  table = np.zeros((len(lines), 4), np.int64)
  for lineno, line in enumerate(lines, start=1):
    fields = line.split('\t')
    if len(fields) != 4 or not all(f.isascii() and f.isdigit() for f in fields):
      raise files.error(data_path, 'expected user<TAB>item<TAB>rating<TAB>'
                        'timestamp (non-negative integers), got '
                        f'{line!r}', lineno=lineno)
    table[lineno - 1] = [int(f) for f in fields]
    user, item, rating, _ = table[lineno - 1]
    if user <= 0 or item <= 0:
      raise files.error(data_path,
                        'user and item ids must be >= 1 (0 is padding)',
                        lineno=lineno)
    if item > num_items:
      raise files.error(data_path, f'item {item} is not in {item_path}',
                        lineno=lineno)
    if not 1 <= rating <= 5:
      raise files.error(data_path, f'rating {rating} outside 1..5',
                        lineno=lineno)
  users, items, ratings, timestamps = table.T
  groups = _group_by_user(data_path, users, timestamps)
  return types.SequenceDataset(
      name='ml-100k',
      sequences=[items[g].astype(np.int32) for g in groups],
      num_items=num_items, item_attributes=attributes,
      num_attributes=len(ML100K_GENRES), item_text=texts,
      ratings=[ratings[g].astype(np.float32) for g in groups],
      timestamps=[timestamps[g] for g in groups])

