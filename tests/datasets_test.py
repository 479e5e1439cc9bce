"""Tests for rec_jax.data.datasets and the TFDS builders behind it.

Real-data tests read REC_JAX_DATA_DIR and are skipped without it. Everything
is prepared into a per-module temporary cache; nothing touches the network
(downloads are faked from the local files).
"""

import functools
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rec_jax.data import datasets
from rec_jax.data import synthetic
from rec_jax.data.builders import base
from rec_jax.data.builders import catalog
from rec_jax.data.builders import s3rec as s3rec_builders
from rec_jax.data.sources import amazon
from rec_jax.data.sources import files
from rec_jax.data.sources import movielens
from rec_jax.data.sources import s3rec

DATA_DIR = os.environ.get('REC_JAX_DATA_DIR')
needs_data = pytest.mark.skipif(
    not DATA_DIR, reason='REC_JAX_DATA_DIR is not set (real data tests)')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('rec_jax_cache'))


@pytest.fixture(autouse=True)
def downloads(monkeypatch, cache_dir):
  """Refuses downloads (records attempts) and keeps the cache in tmp."""
  monkeypatch.setenv(catalog.CACHE_DIR_ENV, cache_dir)
  attempts = []

  def refuse(self, url_or_urls):
    del self
    attempts.append(url_or_urls)
    raise ConnectionError('network disabled in tests')

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', refuse)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      refuse)
  return attempts


@pytest.fixture(scope='module')
def load_real(cache_dir):
  """load(name) from DATA_DIR into the module cache, once per name."""
  return functools.cache(
      lambda name: datasets.load(name, data_dir=DATA_DIR, cache_dir=cache_dir))


def _path(relative):
  return os.path.join(DATA_DIR, relative)


def _assert_same(a, b):
  assert (a.num_items, a.num_attributes) == (b.num_items, b.num_attributes)
  assert len(a.sequences) == len(b.sequences)
  for field in ('sequences', 'ratings', 'timestamps'):
    x, y = getattr(a, field), getattr(b, field)
    assert (x is None) == (y is None), field
    if x is not None:
      assert all(np.array_equal(p, q) and p.dtype == q.dtype
                 for p, q in zip(x, y)), field
  for field in ('item_attributes', 'sample_negatives'):
    x, y = getattr(a, field), getattr(b, field)
    assert (x is None) == (y is None), field
    if x is not None:
      assert np.array_equal(x, y) and x.dtype == y.dtype, field
  assert a.item_text == b.item_text


def test_names():
  assert set(datasets.NAMES) == {
      'beauty', 'toys', 'sports', 'yelp', 'lastfm', 'ml-1m', 'ml-100k',
      'scientific', 'synthetic'}


def test_unknown_name_lists_known_names(cache_dir):
  with pytest.raises(datasets.DataError) as info:
    datasets.load('beuty', cache_dir=cache_dir)
  assert "'beuty'" in str(info.value)
  for name in datasets.NAMES:
    assert name in str(info.value)


# ------------------------------------------------------------------ synthetic


def test_synthetic_round_trip_and_cache(cache_dir, monkeypatch):
  ds = datasets.load('synthetic', cache_dir=cache_dir)
  _assert_same(ds, synthetic.generate())
  assert ds.name == 'synthetic'
  small = datasets.load('synthetic', cache_dir=cache_dir, num_users=50,
                        seed=3)
  _assert_same(small, synthetic.generate(num_users=50, seed=3))
  configs = os.listdir(os.path.join(cache_dir, 'rec_jax_synthetic'))
  assert len(configs) == 2  # Each parameter set has its own cache entry.

  # A second load reads the cache: the generator is not called again.
  @functools.wraps(synthetic.generate)  # Same signature: it names the config.
  def fail(**kwargs):
    raise AssertionError(f'regenerated {kwargs}')

  monkeypatch.setattr(synthetic, 'generate', fail)
  _assert_same(datasets.load('synthetic', cache_dir=cache_dir, num_users=50,
                             seed=3), small)


def test_generator_arguments(cache_dir):
  with pytest.raises(TypeError):
    datasets.load('synthetic', cache_dir=cache_dir, num_user=5)
  with pytest.raises(datasets.DataError, match='takes no generator'):
    datasets.load('beauty', cache_dir=cache_dir, num_users=5)


def test_fast_decoder_matches_tfds(cache_dir):
  builder = catalog.make_builder('synthetic', cache_dir=cache_dir,
                                 num_users=300)
  base.prepare(builder)
  mine = base.read_users(builder)
  reference = builder.as_data_source(split=base.SPLIT)
  assert len(mine) == len(reference) == 300
  for fast, slow in zip(mine, reference):
    assert fast.keys() == slow.keys()
    for key in fast:
      assert np.array_equal(fast[key], slow[key])
      assert np.asarray(fast[key]).dtype == np.asarray(slow[key]).dtype
  # TFDS's 'all' split reads the same records; storage is not in user order.
  assert len(builder.as_data_source(split='all')) == 300
  assert [r['user_id'] for r in mine] != list(range(1, 301))


def test_describe_synthetic():
  stats = datasets.describe(synthetic.generate(num_users=100))
  assert stats['users'] == 100 and stats['items'] == 500
  assert stats['interactions'] == sum(
      len(s) for s in synthetic.generate(num_users=100).sequences)
  assert stats['density'] == pytest.approx(stats['interactions'] / 50_000)
  assert stats['attributes'] == 38
  assert stats['avg_attributes_per_item'] == 3.0
  assert stats['has_text'] and stats['has_sample_negatives']


def test_interrupted_preparation_recovers(cache_dir):
  # A child process is SIGKILLed half-way through writing the examples; the
  # next load must neither see a half-written dataset nor fail on leftovers.
  script = f"""
import os, signal
from rec_jax.data import datasets
from rec_jax.data.builders import base
original = base.Builder._generate_examples
def dying(self, ds):
  for i, example in enumerate(original(self, ds)):
    if i == 200:
      os.kill(os.getpid(), signal.SIGKILL)
    yield example
base.Builder._generate_examples = dying
datasets.load('synthetic', cache_dir={cache_dir!r}, num_users=400, seed=7)
"""
  child = subprocess.run([sys.executable, '-c', script], cwd=REPO,
                         env={**os.environ, 'PYTHONPATH': REPO},
                         capture_output=True, check=False, timeout=120)
  assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
  builder = catalog.make_builder('synthetic', cache_dir=cache_dir,
                                 num_users=400, seed=7)
  assert not builder.data_path.exists()
  leftovers = [d for d in os.listdir(builder.data_path.parent)
               if d.startswith('incomplete')]
  assert leftovers  # The killed run's temp dir; TFDS ignores it.
  _assert_same(datasets.load('synthetic', cache_dir=cache_dir,
                             num_users=400, seed=7),
               synthetic.generate(num_users=400, seed=7))


# ------------------------------------------------------------------ real data

_EXPECTED = {
    # name: users, items, interactions, attributes, min/median/max length.
    'beauty': (22_363, 12_101, 198_502, 637, (5, 6, 204)),
    'toys': (19_412, 11_924, 167_597, 1_027, (5, 6, 550)),
    'lastfm': (1_090, 3_646, 52_551, 388, (5, 19, 899)),
    'ml-1m': (6_040, 3_416, 999_611, 18, (18, None, None)),
    'ml-100k': (943, 1_682, 100_000, 19, (None, None, None)),
    'scientific': (8_317, 4_344, 58_492, 0, (5, 6, 78)),
}


@needs_data
@pytest.mark.parametrize('name', sorted(_EXPECTED))
def test_real_counts(load_real, name):
  users, items, interactions, attributes, lengths = _EXPECTED[name]
  stats = datasets.describe(load_real(name))
  assert (stats['users'], stats['items'], stats['interactions'],
          stats['attributes']) == (users, items, interactions, attributes)
  for key, value in zip(('min_len', 'median_len', 'max_len'), lengths):
    if value is not None:
      assert stats[key] == value, key
  assert stats['density'] == pytest.approx(interactions / (users * items))


@needs_data
def test_readme_statistics(load_real):
  beauty = datasets.describe(load_real('beauty'))
  assert beauty['avg_len'] == pytest.approx(8.88, abs=0.005)
  assert beauty['density'] * 100 == pytest.approx(0.0734, abs=0.00005)
  lastfm = load_real('lastfm')
  assert lastfm.sample_negatives.shape == (1_090, 99)
  assert datasets.describe(lastfm)['density'] * 100 == pytest.approx(
      1.3223, abs=0.00005)


@needs_data
def test_real_round_trip(load_real):
  # What comes out of the prepared TFDS copy equals what the readers parse.
  def read_s3rec(stem, sample=None):
    return s3rec.read_s3rec(stem, _path(f's3rec/{stem}.txt'),
                            _path(f's3rec/{stem}_item2attributes.json'),
                            sample)

  expected = {
      'beauty': read_s3rec('Beauty'),
      'toys': read_s3rec('Toys_and_Games'),
      'lastfm': read_s3rec('LastFM', _path('s3rec/LastFM_sample.txt')),
      'ml-1m': movielens.read_ml1m_offline(_path('ml-1m/ml-1m.txt'),
                                           _path('ml-1m/ml-1m_item_map.tsv')),
      'ml-100k': movielens.read_ml100k(_path('ml-100k/u.data'),
                                       _path('ml-100k/u.item')),
      'scientific': amazon.read_scientific(
          _path('amazon-scientific/Scientific.item.json'),
          sequences_path=_path('amazon-scientific/Scientific.txt')),
  }
  for name, want in expected.items():
    got = load_real(name)
    assert got.name == name
    _assert_same(got, want)


@needs_data
def test_cached_metadata_records_source_sha256(load_real, cache_dir):
  load_real('lastfm')
  builder = catalog.make_builder('lastfm', data_dir=DATA_DIR,
                                 cache_dir=cache_dir)
  assert builder.data_path.exists()
  assert builder.info.metadata['source_sha256'] == {
      name: s3rec_builders.KNOWN_SHA256[name] for name in
      ('LastFM.txt', 'LastFM_item2attributes.json', 'LastFM_sample.txt')}


@needs_data
@pytest.mark.parametrize('name,missing', [
    ('sports', 's3rec/Sports_and_Outdoors.txt'),
    ('yelp', 's3rec/Yelp.txt'),
])
def test_missing_local_file_does_not_download(cache_dir, downloads, name,
                                              missing):
  with pytest.raises(files.MissingFileError) as info:
    datasets.load(name, data_dir=DATA_DIR, cache_dir=cache_dir)
  assert os.path.join(os.path.abspath(DATA_DIR), missing) in str(info.value)
  assert 'REC_JAX_DATA_DIR' in str(info.value)
  assert not downloads


def test_missing_data_dir(tmp_path, cache_dir, downloads):
  with pytest.raises(files.MissingFileError, match='nowhere'):
    datasets.load('beauty', data_dir=str(tmp_path / 'nowhere'),
                  cache_dir=cache_dir)
  with pytest.raises(files.MissingFileError) as info:
    datasets.load('ml-1m', data_dir=str(tmp_path), cache_dir=cache_dir)
  assert str(tmp_path / 'ml-1m' / 'ml-1m.txt') in str(info.value)
  assert not downloads


@needs_data
def test_data_dir_argument_beats_env(tmp_path, monkeypatch, load_real,
                                     cache_dir):
  monkeypatch.setenv(catalog.DATA_DIR_ENV, str(tmp_path))
  with pytest.raises(files.MissingFileError, match=str(tmp_path)):
    datasets.load('lastfm', cache_dir=cache_dir)
  _assert_same(datasets.load('lastfm', data_dir=DATA_DIR, cache_dir=cache_dir),
               load_real('lastfm'))


@needs_data
def test_changed_source_files_invalidate_cache(tmp_path, cache_dir):
  local = tmp_path / 'data'
  (local / 's3rec').mkdir(parents=True)
  for name in ('LastFM.txt', 'LastFM_item2attributes.json'):
    shutil.copy(_path(f's3rec/{name}'), local / 's3rec' / name)
  before = datasets.load('lastfm', data_dir=str(local), cache_dir=cache_dir)
  assert before.sample_negatives is None  # The optional file is absent.

  # Drop user 1's last item (it has more than 5) and reload.
  lines = (local / 's3rec' / 'LastFM.txt').read_text().split('\n')
  assert len(lines[0].split()) > 6
  lines[0] = lines[0].rsplit(' ', 1)[0]
  (local / 's3rec' / 'LastFM.txt').write_text('\n'.join(lines))
  after = datasets.load('lastfm', data_dir=str(local), cache_dir=cache_dir)
  assert after.num_interactions == before.num_interactions - 1
  np.testing.assert_array_equal(after.sequences[0], before.sequences[0][:-1])

  # And a file that turns bad is reported, not masked by the old cache.
  (local / 's3rec' / 'LastFM.txt').write_text('1 1 2\n2 x\n')
  with pytest.raises(files.DataError, match=r'LastFM.txt, line 2'):
    datasets.load('lastfm', data_dir=str(local), cache_dir=cache_dir)


# ------------------------------------------- the download path, with fakes


def _fake_downloads(monkeypatch, served=None, archives=None):
  """Serves URLs by base name from local files / extracted directories."""
  requested = []

  def download(self, urls):
    del self
    requested.extend(urls.values())
    return {key: served[url.rsplit('/', 1)[1]] for key, url in urls.items()}

  def download_and_extract(self, url):
    del self
    requested.append(url)
    return archives[url.rsplit('/', 1)[1]]

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', download)
  monkeypatch.setattr(tfds.download.DownloadManager, 'download_and_extract',
                      download_and_extract)
  return requested


@needs_data
def test_download_path_s3rec_and_scientific(monkeypatch, tmp_path, load_real):
  monkeypatch.delenv(catalog.DATA_DIR_ENV, raising=False)
  served = {name: _path('s3rec/' + name) for name in (
      'LastFM.txt', 'LastFM_item2attributes.json', 'LastFM_sample.txt')}
  served.update({name: _path('amazon-scientific/' + name) for name in (
      'Scientific.inter.json', 'Scientific.item.json')})
  requested = _fake_downloads(monkeypatch, served=served)
  cache = str(tmp_path / 'cache')
  _assert_same(datasets.load('lastfm', cache_dir=cache), load_real('lastfm'))
  _assert_same(datasets.load('scientific', cache_dir=cache),
               load_real('scientific'))
  s3rec_url = ('https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/'
               '2a81540ae18615d88ef88227b0c066e5b74781e5/data/')
  scientific_url = ('https://raw.githubusercontent.com/Nishikata97/'
                    'CollisionGenRec/505d5be3166f7c38ae67957daf8a3b7ec7092577/'
                    'data/Scientific/')
  assert sorted(requested) == sorted(
      [s3rec_url + name for name in ('LastFM.txt',
                                     'LastFM_item2attributes.json',
                                     'LastFM_sample.txt')] +
      [scientific_url + name for name in ('Scientific.inter.json',
                                          'Scientific.item.json')])


@needs_data
def test_download_path_checks_sha256(monkeypatch, tmp_path):
  monkeypatch.delenv(catalog.DATA_DIR_ENV, raising=False)
  tampered = tmp_path / 'LastFM.txt'
  tampered.write_text(open(_path('s3rec/LastFM.txt')).read() + '1091 1 2\n')
  served = {name: _path('s3rec/' + name) for name in (
      'LastFM_item2attributes.json', 'LastFM_sample.txt')}
  served['LastFM.txt'] = str(tampered)
  _fake_downloads(monkeypatch, served=served)
  with pytest.raises(files.DataError, match='sha256'):
    datasets.load('lastfm', cache_dir=str(tmp_path / 'cache'))


@needs_data
def test_download_path_movielens(monkeypatch, tmp_path, load_real):
  monkeypatch.delenv(catalog.DATA_DIR_ENV, raising=False)
  ml100k = tmp_path / 'ml-100k.zip.extracted'
  (ml100k / 'ml-100k').mkdir(parents=True)
  for name in ('u.data', 'u.item'):
    os.symlink(_path('ml-100k/' + name), ml100k / 'ml-100k' / name)
  ml1m = tmp_path / 'ml-1m.zip.extracted'
  (ml1m / 'ml-1m').mkdir(parents=True)
  # Movies 10 and 20 have 5 ratings each, movie 30 one (dropped: < 5).
  (ml1m / 'ml-1m' / 'ratings.dat').write_text(''.join(
      f'{u}::10::5::3\n{u}::30::2::2\n{u}::20::4::1\n' if u == 1 else
      f'{u}::10::5::3\n{u}::20::4::1\n' for u in range(1, 6)))
  shutil.copy(_path('ml-1m/movies.dat'), ml1m / 'ml-1m' / 'movies.dat')
  requested = _fake_downloads(monkeypatch, archives={
      'ml-100k.zip': str(ml100k), 'ml-1m.zip': str(ml1m)})
  cache = str(tmp_path / 'cache')
  _assert_same(datasets.load('ml-100k', cache_dir=cache), load_real('ml-100k'))
  small = datasets.load('ml-1m', cache_dir=cache)
  assert [s.tolist() for s in small.sequences] == [[1, 2]] * 5
  assert [r.tolist() for r in small.ratings] == [[4, 5]] * 5
  assert [t.tolist() for t in small.timestamps] == [[1, 3]] * 5
  movies = movielens.read_movies_dat(_path('ml-1m/movies.dat'))
  assert small.item_text[1].startswith(movies[20][0])
  assert requested == [
      'https://files.grouplens.org/datasets/movielens/ml-100k.zip',
      'https://files.grouplens.org/datasets/movielens/ml-1m.zip']


def test_download_failure_explains_offline_use(monkeypatch, tmp_path,
                                               downloads):
  monkeypatch.delenv(catalog.DATA_DIR_ENV, raising=False)
  with pytest.raises(files.DataError) as info:
    datasets.load('beauty', cache_dir=str(tmp_path / 'cache'))
  assert 'could not download' in str(info.value)
  assert 'REC_JAX_DATA_DIR' in str(info.value)
  assert downloads  # It did try: no data dir means download.
