"""Tests for rec_jax.data.sources: real files (if present) and bad input."""

import hashlib
import json
import os

import numpy as np
import pytest

from rec_jax.data.sources import amazon
from rec_jax.data.sources import files
from rec_jax.data.sources import movielens
from rec_jax.data.sources import s3rec

DATA_DIR = os.environ.get('REC_JAX_DATA_DIR')
needs_data = pytest.mark.skipif(
    not DATA_DIR, reason='REC_JAX_DATA_DIR is not set (real data tests)')

# From shared/data/README.md.
README_SHA256 = {
    's3rec/Beauty.txt':
        '226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8',
    's3rec/Beauty_item2attributes.json':
        '129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4',
    's3rec/Toys_and_Games.txt':
        '176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f',
    's3rec/Toys_and_Games_item2attributes.json':
        'd371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0',
    's3rec/LastFM.txt':
        '9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802',
    's3rec/LastFM_sample.txt':
        '60194cc2e4fd1aa8b5dc8872e1f3af9c6abd09c39d478d3df9337cb97e6e2f0d',
    's3rec/LastFM_item2attributes.json':
        'a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef',
    'ml-1m/diffurec_ml-1m_dataset.pkl':
        '24517f75352c088e6163b0f1a1d61932390c08d837e191e02d09d1d35dc63ea4',
    'ml-1m/ml-1m_seq_movieid.txt':
        '3b3803d72c034929ada18b2cbd114296261c012b7a3e10282543adeceba53fb1',
    'ml-1m/ml-1m.txt':
        '968d320c4936cf7cf37f67f8cf96105269abe88ecb4a753afcae46fa011447f7',
    'ml-1m/ml-1m_item_map.tsv':
        '6f25b564c8278216e39c9252b36cb9c9bc659ff7c59dc32b9eae185658455ddd',
    'ml-1m/movies.dat':
        '0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9',
    'ml-1m/users.dat':
        '1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3',
    'ml-1m/README.grouplens':
        '2d5ddce86ccbd247207456165827b4b9ddf27282bca93807d4c763e28414f133',
    'ml-100k/u.data':
        '06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490',
    'ml-100k/u.item':
        '553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701',
    'ml-100k/u.user':
        'f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c',
    'ml-100k/u.genre':
        '9757e0d3e6b298159a80dd48eaf938114690e911e39af97a76949ef1663610bb',
    'ml-100k/u.occupation':
        'cd5fbec9afe345d993a62fc7817df1a4a9079c4feb267b3118763b8fd942137d',
    'ml-100k/u.info':
        '5b0a40b2e47a729ee6203063f6dcf8790c2e63f5a18663e6ee318a72c5f3c27b',
    'ml-100k/README':
        '4883b8cf340ed0059971b33f56ad3adc88a40792108ebca3d24aafc4c82e8b52',
    'amazon-scientific/Scientific.inter.json':
        '32c6c01876ebecebdfabd2dbd358594be36655e9e7b168772a7a3aa3624ee1b4',
    'amazon-scientific/Scientific.item.json':
        'ad24200106868dac2b544d812305d61a11bf07fed78b2f7cdca41d66f3418e71',
    'amazon-scientific/Scientific.txt':
        '299b35cf9a0749151b21a0a7d847bd54e2dceafbb223ad8ce1d31a4edca8bf6a',
}


def _path(relative):
  return os.path.join(DATA_DIR, relative)


def _write(tmp_path, name, text, encoding='utf-8'):
  path = tmp_path / name
  path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
  return path


# ---------------------------------------------------------------- real files


@needs_data
@pytest.mark.parametrize('relative', sorted(README_SHA256))
def test_sha256_matches_readme(relative):
  with open(_path(relative), 'rb') as f:
    assert hashlib.sha256(f.read()).hexdigest() == README_SHA256[relative]


@needs_data
@pytest.mark.parametrize(
    'stem,users,items,interactions,num_attributes,avg_raw_attributes', [
        ('Beauty', 22_363, 12_101, 198_502, 637, 3.72),
        ('Toys_and_Games', 19_412, 11_924, 167_597, 1_027, 4.28),
        ('LastFM', 1_090, 3_646, 52_551, 388, 31.52),
    ])
def test_s3rec_counts(stem, users, items, interactions, num_attributes,
                      avg_raw_attributes):
  sample = _path('s3rec/LastFM_sample.txt') if stem == 'LastFM' else None
  ds = s3rec.read_s3rec(stem.lower(), _path(f's3rec/{stem}.txt'),
                        _path(f's3rec/{stem}_item2attributes.json'), sample)
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (
      users, items, interactions)
  assert ds.num_attributes == num_attributes
  # Every id 1..A is used and every item has attributes.
  assert np.unique(ds.item_attributes[1:]).tolist() == list(
      range(num_attributes + 1))
  assert (ds.item_attributes[1:] > 0).any(axis=1).all()
  assert not ds.item_attributes[0].any()
  # The README's attrs/item counts repeats; the reader drops them (a set).
  with open(_path(f's3rec/{stem}_item2attributes.json')) as f:
    raw = json.load(f)
  assert np.mean([len(v) for v in raw.values()]) == pytest.approx(
      avg_raw_attributes, abs=0.005)
  for key in ('1', str(items)):
    assert ds.item_attributes[int(key)][ds.item_attributes[int(key)] > 0
                                       ].tolist() == list(dict.fromkeys(
                                           raw[key]))
  lengths = [len(s) for s in ds.sequences]
  assert min(lengths) >= 5
  assert all(s.dtype == np.int32 for s in ds.sequences)
  if stem == 'LastFM':
    assert ds.sample_negatives.shape == (1_090, 99)
    assert all(len(set(row)) == 99 for row in ds.sample_negatives.tolist())


@needs_data
def test_ml1m_offline():
  ds = movielens.read_ml1m_offline(_path('ml-1m/ml-1m.txt'),
                                   _path('ml-1m/ml-1m_item_map.tsv'))
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (
      6_040, 3_416, 999_611)
  assert min(len(s) for s in ds.sequences) == 18
  assert ds.item_text[0] == ''
  assert ds.item_text[2] == 'Titanic (1997). Genres: Drama, Romance.'
  titanic = ds.item_attributes[2][ds.item_attributes[2] > 0]
  genres = [movielens.ML1M_GENRES[a - 1] for a in titanic]
  assert genres == ['Drama', 'Romance']
  assert ds.num_attributes == 18
  assert ds.ratings is None and ds.timestamps is None


@needs_data
def test_movies_dat_is_latin1():
  movies = movielens.read_movies_dat(_path('ml-1m/movies.dat'))
  assert len(movies) == 3_883
  assert movies[1] == ('Toy Story (1995)', ['Animation', "Children's",
                                            'Comedy'])
  assert any('Misérables' in title for title, _ in movies.values())


@needs_data
def test_ml100k():
  ds = movielens.read_ml100k(_path('ml-100k/u.data'), _path('ml-100k/u.item'))
  assert (ds.num_users, ds.num_items, ds.num_interactions) == (
      943, 1_682, 100_000)
  assert ds.item_text[1] == ("Toy Story (1995). Genres: Animation, "
                             "Children's, Comedy.")
  assert ds.num_attributes == 19
  # Per user: chronological, ties in file order (a stable sort), ratings kept.
  rows = [line.split('\t') for line in open(_path('ml-100k/u.data'))]
  for user in (1, 196, 943):
    mine = [(int(t), int(i), float(r)) for u, i, r, t in rows
            if int(u) == user]
    mine.sort(key=lambda x: x[0])
    assert ds.timestamps[user - 1].tolist() == [m[0] for m in mine]
    assert ds.sequences[user - 1].tolist() == [m[1] for m in mine]
    assert ds.ratings[user - 1].tolist() == [m[2] for m in mine]
  assert all(np.all(np.diff(t) >= 0) for t in ds.timestamps)


@needs_data
def test_scientific_txt_equals_shifted_inter_json():
  item_json = _path('amazon-scientific/Scientific.item.json')
  offline = amazon.read_scientific(
      item_json, sequences_path=_path('amazon-scientific/Scientific.txt'))
  online = amazon.read_scientific(
      item_json,
      inter_json_path=_path('amazon-scientific/Scientific.inter.json'))
  assert (offline.num_users, offline.num_items,
          offline.num_interactions) == (8_317, 4_344, 58_492)
  assert all(np.array_equal(a, b)
             for a, b in zip(offline.sequences, online.sequences))
  assert offline.item_text == online.item_text
  with open(item_json) as f:
    meta = json.load(f)
  # Item k of the txt is key str(k - 1).
  assert offline.item_text[1].startswith(meta['0']['title'])
  assert offline.item_text[4_344].startswith(meta['4343']['title'])
  assert 'Brand: ' in offline.item_text[1]


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize('text,lineno,fragment', [
    ('1 1 2\n2\n', 2, 'at least one item'),
    ('1 1 2\n\n3 4 5\n', 2, 'at least one item'),
    ('1 1  2\n', 1, 'empty token'),
    ('1 1 2 \n', 1, 'empty token'),
    ('1 1 2\n2 3 x\n', 2, "'x' at column 3 is not an integer"),
    ('1 1 2.5\n', 1, 'not an integer'),
    ('1 1 0\n', 1, 'item id 0 at column 3 must be >= 1'),
    ('1 1 2\n2 -3 4\n', 2, 'item id -3'),
    ('0 1 2\n', 1, 'user id 0'),
    ('1 1 2\n3 4 5\n', 2, 'user id 3 does not match'),
    ('1 1 99999999999\n', 1, 'int32'),
])
def test_s3rec_sequences_errors(tmp_path, text, lineno, fragment):
  path = _write(tmp_path, 'Bad.txt', text)
  with pytest.raises(files.DataError) as info:
    files.read_s3rec_sequences(path)
  message = str(info.value)
  assert 'Bad.txt' in message
  assert f'line {lineno}' in message
  assert fragment in message


def test_s3rec_sequences_accepts_crlf_and_no_final_newline(tmp_path):
  path = _write(tmp_path, 'ok.txt', '1 3 1 2\r\n2 2 3')
  assert [s.tolist() for s in files.read_s3rec_sequences(path)] == [
      [3, 1, 2], [2, 3]]


def test_not_utf8_names_line(tmp_path):
  path = _write(tmp_path, 'Bin.txt', b'1 1 2\n2 3 \xff\n')
  with pytest.raises(files.DataError, match=r'Bin.txt, line 2.*utf-8'):
    files.read_s3rec_sequences(path)


def test_missing_file_error(tmp_path):
  path = tmp_path / 's3rec' / 'Beauty.txt'
  with pytest.raises(files.MissingFileError) as info:
    files.read_s3rec_sequences(path)
  assert isinstance(info.value, FileNotFoundError)
  assert isinstance(info.value, ValueError)
  assert str(path) in str(info.value)
  assert 'REC_JAX_DATA_DIR' in str(info.value)


@pytest.mark.parametrize('text,where,fragment', [
    ('{"1": [1, 2], "4": [3]}', "key '4'", 'not an item id in 1..3'),
    ('{"0": [1]}', "key '0'", 'not an item id'),
    ('{"01": [1]}', "key '01'", 'not an item id'),
    ('{"1": [1, 0]}', "key '1'", 'attribute ids in 1..2147483647'),
    ('{"1": [1, "2"]}', "key '1'", 'attribute ids in 1..'),
    ('{"1": [1, 2147483648]}', "key '1'", 'attribute ids in 1..'),
    ('{"1": 5}', "key '1'", 'list of attribute ids'),
    ('{"1": [1],\n "1": [2]}', "key '1'", 'duplicate key'),
    ('{"1": [1],\n "2": [2,]}', 'line 2', 'invalid JSON'),
    ('[1, 2]', 'Attrs.json', 'expected a JSON object'),
])
def test_item2attributes_errors(tmp_path, text, where, fragment):
  path = _write(tmp_path, 'Attrs.json', text)
  with pytest.raises(files.DataError) as info:
    s3rec.read_item2attributes(path, num_items=3)
  assert 'Attrs.json' in str(info.value)
  assert where in str(info.value)
  assert fragment in str(info.value)


def test_item2attributes_table(tmp_path):
  path = _write(tmp_path, 'a.json', '{"3": [2, 5, 2], "1": [1]}')
  table, num_attributes = s3rec.read_item2attributes(path, num_items=4)
  assert num_attributes == 5
  assert table.tolist() == [[0, 0], [1, 0], [0, 0], [2, 5], [0, 0]]


@pytest.mark.parametrize('rows,lineno,fragment', [
    (['1 ' + ' '.join(['9'] * 98)], 1, 'expected 99 negatives, got 98'),
    (['1 ' + ' '.join(['1'] * 99)], 1, "negative item 1 is in the user's"),
    (['1 ' + ' '.join(['11'] * 99)], 1, 'negative item 11 > num_items 10'),
    (['1 ' + ' '.join(['9'] * 98) + ' x'], 1, 'not an integer'),
])
def test_sample_negatives_errors(tmp_path, rows, lineno, fragment):
  path = _write(tmp_path, 'X_sample.txt', '\n'.join(rows) + '\n')
  with pytest.raises(files.DataError) as info:
    s3rec.read_sample_negatives(path, [np.array([1, 2, 3])], num_items=10)
  assert 'X_sample.txt' in str(info.value)
  assert f'line {lineno}' in str(info.value)
  assert fragment in str(info.value)


def test_sample_negatives_row_count(tmp_path):
  path = _write(tmp_path, 'X_sample.txt', '1 ' + ' '.join(['9'] * 99) + '\n')
  with pytest.raises(files.DataError, match='1 rows but .* 2 users'):
    s3rec.read_sample_negatives(path, [np.array([1]), np.array([2])], 10)


_ITEM_MAP_HEADER = 'item_id\tmovie_id\ttitle\tgenres\n'


@pytest.mark.parametrize('text,lineno,fragment', [
    ('item\tmovie\n', 1, 'expected the header'),
    (_ITEM_MAP_HEADER + '1\t10\tA (1990)\n', 2, 'expected 4 tab-separated'),
    (_ITEM_MAP_HEADER + '2\t10\tA (1990)\tDrama\n', 2, "item id '2'"),
    (_ITEM_MAP_HEADER + '1\tx\tA (1990)\tDrama\n', 2, 'not an integer'),
    (_ITEM_MAP_HEADER + '1\t10\tA (1990)\tDrama|Cooking\n', 2, 'Cooking'),
])
def test_ml1m_item_map_errors(tmp_path, text, lineno, fragment):
  path = _write(tmp_path, 'map.tsv', text)
  with pytest.raises(files.DataError) as info:
    movielens.read_ml1m_item_map(path, num_items=1)
  assert 'map.tsv' in str(info.value)
  assert f'line {lineno}' in str(info.value)
  assert fragment in str(info.value)


def _write_movies(tmp_path):
  text = ('1::Café au Lait (1993)::Comedy\n'
          '2::B (1994)::Drama|War\n'
          '3::C (1995)::Action\n')
  return _write(tmp_path, 'movies.dat', text, encoding='latin-1')


def test_ml1m_ratings_sort_filter_reindex(tmp_path):
  # Movie 3 has 1 rating (dropped with min_item_count=2). User 1 has a
  # timestamp tie (movies 2 then 1 in file order, kept by the stable sort).
  ratings = _write(tmp_path, 'ratings.dat', '\n'.join([
      '2::1::5::100',
      '1::1::3::300',
      '1::2::4::200',
      '1::3::2::50',
      '1::1::1::200',
      '2::2::2::90',
  ]) + '\n')
  ds = movielens.read_ml1m_ratings(ratings, _write_movies(tmp_path),
                                   min_item_count=2)
  # User 1 in time order: 3@50 (dropped), 2@200, 1@200 (tie, file order), 1@300.
  # First appearance scanning users in UserID order: movie 2 -> 1, 1 -> 2.
  assert [s.tolist() for s in ds.sequences] == [[1, 2, 2], [1, 2]]
  assert [r.tolist() for r in ds.ratings] == [[4, 1, 3], [2, 5]]
  assert [t.tolist() for t in ds.timestamps] == [[200, 200, 300], [90, 100]]
  assert ds.num_items == 2
  assert ds.item_text == ['', 'B (1994). Genres: Drama, War.',
                          'Café au Lait (1993). Genres: Comedy.']
  assert ds.item_attributes.tolist() == [[0, 0], [8, 17], [5, 0]]


@pytest.mark.parametrize('text,lineno,fragment', [
    ('1::1::5::100\n1::2::5\n', 2, 'UserID::MovieID::Rating::Timestamp'),
    ('1::1::5::100\n1::x::5::3\n', 2, 'UserID::MovieID::Rating::Timestamp'),
    ('1::1::5::100\n1::2::7::3\n', 2, 'rating 7 outside 1..5'),
    ('1::1::5::100\n1::0::3::3\n', 2, 'MovieID 0'),
    ('1::1::5::100\n1::9::3::3\n', 2, 'MovieID 9 is not in'),
])
def test_ml1m_ratings_errors(tmp_path, text, lineno, fragment):
  ratings = _write(tmp_path, 'ratings.dat', text)
  with pytest.raises(files.DataError) as info:
    movielens.read_ml1m_ratings(ratings, _write_movies(tmp_path))
  assert 'ratings.dat' in str(info.value)
  assert f'line {lineno}' in str(info.value)
  assert fragment in str(info.value)


def test_ml1m_ratings_users_must_be_contiguous(tmp_path):
  ratings = _write(tmp_path, 'ratings.dat', '1::1::5::1\n3::1::5::1\n')
  with pytest.raises(files.DataError, match='ratings.dat.*not 1..N'):
    movielens.read_ml1m_ratings(ratings, _write_movies(tmp_path),
                                min_item_count=1)


def test_movies_dat_errors(tmp_path):
  path = _write(tmp_path, 'movies.dat', '1::A::Drama\n1::B::Drama\n')
  with pytest.raises(files.DataError, match=r'movies.dat, line 2.*duplicate'):
    movielens.read_movies_dat(path)


def _u_item_line(movie_id, title, flags=(0,) * 19):
  return '|'.join([str(movie_id), title, '01-Jan-1995', '', 'http://x'] +
                  [str(f) for f in flags])


def test_ml100k_small(tmp_path):
  items = _write(tmp_path, 'u.item', '\n'.join([
      _u_item_line(1, 'Les Misérables (1995)', (0, 0, 0, 0, 0, 0, 0, 0, 1) +
                   (0,) * 10),
      _u_item_line(2, 'B (1996)', (1,) + (0,) * 18),
  ]) + '\n', encoding='latin-1')
  data = _write(tmp_path, 'u.data', '2\t1\t3\t10\n1\t2\t4\t7\n1\t1\t5\t7\n'
                '1\t2\t1\t3\n')
  ds = movielens.read_ml100k(data, items)
  assert [s.tolist() for s in ds.sequences] == [[2, 2, 1], [1]]
  assert [r.tolist() for r in ds.ratings] == [[1, 4, 5], [3]]
  assert ds.item_text[1] == 'Les Misérables (1995). Genres: Drama.'
  assert ds.item_attributes.tolist() == [[0], [9], [1]]


@pytest.mark.parametrize('text,lineno,fragment', [
    ('1\t1\t3\t10\n1\t2\t3\n', 2, 'expected user<TAB>item'),
    ('1\t1\t3\t10\n1\t3\t3\t11\n', 2, 'item 3 is not in'),
    ('1\t1\t3\t10\n1\t0\t3\t11\n', 2, 'must be >= 1'),
    ('1\t1\t3\t10\n1 2 3 11\n', 2, 'expected user<TAB>item'),
    ('1\t1\t9\t10\n', 1, 'rating 9 outside 1..5'),
])
def test_ml100k_data_errors(tmp_path, text, lineno, fragment):
  items = _write(tmp_path, 'u.item', _u_item_line(1, 'A') + '\n' +
                 _u_item_line(2, 'B') + '\n')
  data = _write(tmp_path, 'u.data', text)
  with pytest.raises(files.DataError) as info:
    movielens.read_ml100k(data, items)
  assert 'u.data' in str(info.value)
  assert f'line {lineno}' in str(info.value)
  assert fragment in str(info.value)


def test_ml100k_item_errors(tmp_path):
  items = _write(tmp_path, 'u.item', _u_item_line(1, 'A') + '\n1|B|x\n')
  with pytest.raises(files.DataError, match=r'u.item, line 2.*24 '):
    movielens.read_ml100k_items(items)
  items = _write(tmp_path, 'u.item', _u_item_line(2, 'A') + '\n')
  with pytest.raises(files.DataError, match=r'u.item, line 1.*expected 1'):
    movielens.read_ml100k_items(items)


def _item_record(title='T'):
  return {'title': title, 'description': 'D', 'brand': '',
          'categories': 'C'}


def test_scientific_errors(tmp_path):
  txt = _write(tmp_path, 'Sci.txt', '1 1 2\n2 2 1\n')
  good = _write(tmp_path, 'good.json', json.dumps(
      {'0': _item_record('A.'), '1': _item_record('B')}))
  ds = amazon.read_scientific(good, sequences_path=txt)
  assert ds.item_text == ['', 'A. Categories: C. D.', 'B. Categories: C. D.']

  bad = _write(tmp_path, 'Items.json', json.dumps(
      {'0': _item_record(), '2': _item_record()}))
  with pytest.raises(files.DataError, match=r"Items.json, key '1'"):
    amazon.read_scientific(bad, sequences_path=txt)
  bad = _write(tmp_path, 'Items.json', json.dumps(
      {'0': _item_record(), '1': _item_record('  ')}))
  with pytest.raises(files.DataError,
                     match=r"Items.json, key '1'.*empty title"):
    amazon.read_scientific(bad, sequences_path=txt)
  bad = _write(tmp_path, 'Items.json', json.dumps(
      {'0': _item_record(), '1': {'title': 'x'}}))
  with pytest.raises(files.DataError, match=r"key '1'.*'description'"):
    amazon.read_scientific(bad, sequences_path=txt)

  inter = _write(tmp_path, 'Sci.inter.json', '{"0": [0, 1], "2": [1]}')
  with pytest.raises(files.DataError, match=r"Sci.inter.json, key '1'"):
    amazon.read_scientific(good, inter_json_path=inter)
  inter = _write(tmp_path, 'Sci.inter.json', '{"0": [0, 1], "1": []}')
  with pytest.raises(files.DataError, match=r"Sci.inter.json, key '1'"):
    amazon.read_scientific(good, inter_json_path=inter)
