"""TFDS builders for MovieLens-1M and MovieLens-100K.

Offline they read the copies in <data dir>/ml-1m/ and <data dir>/ml-100k/,
online the GroupLens zips; the readers are in
`rec_jax.data.sources.movielens`.
"""

import os

from rec_jax.data import types
from rec_jax.data.builders import base
from rec_jax.data.sources import movielens as movielens_sources

_URL = 'https://files.grouplens.org/datasets/movielens/'

_CITATION = """@article{harper2015movielens,
  title={The MovieLens Datasets: History and Context},
  author={Harper, F. Maxwell and Konstan, Joseph A.},
  journal={ACM Transactions on Interactive Intelligent Systems},
  volume={5}, number={4}, year={2015}}"""


class _MovieLensBuilder(base.Builder, skip_registration=True):
  """A MovieLens set: files in <data dir>/NAME/ offline, NAME.zip online."""

  CITATION = _CITATION
  READER = movielens_sources
  DIRECTORY = ''  # NAME: the local directory, the zip and its top folder.
  LOCAL_FILES = ()  # Read offline by `read_local_files`, in this order.
  ZIP_FILES = ()  # Read online by `read_zip_files`, in this order.

  @staticmethod
  def read_local_files(*paths) -> types.SequenceDataset:
    """Reads the LOCAL_FILES, given by path."""
    raise NotImplementedError

  @staticmethod
  def read_zip_files(*paths) -> types.SequenceDataset:
    """Reads the ZIP_FILES, given by path."""
    raise NotImplementedError

  @classmethod
  def local_files(cls):
    return [f'{cls.DIRECTORY}/{n}' for n in cls.LOCAL_FILES], []

  def _read_local(self, paths):
    return self.read_local_files(
        *(paths[f'{self.DIRECTORY}/{n}'] for n in self.LOCAL_FILES))

  def _read_downloaded(self, dl_manager):
    root = os.path.join(
        base.download_zip(dl_manager, f'{_URL}{self.DIRECTORY}.zip'),
        self.DIRECTORY)
    paths = {n: os.path.join(root, n) for n in self.ZIP_FILES}
    return self.read_zip_files(*(paths[n] for n in self.ZIP_FILES)), paths


class MovieLens1M(_MovieLensBuilder):
  """MovieLens-1M, items with >= 5 ratings (6,040 users, 3,416 items).

  Offline it reads the derived `ml-1m/ml-1m.txt` + `ml-1m_item_map.tsv`
  (no ratings or timestamps); online it derives the same kind of sequences
  from the GroupLens `ratings.dat`, keeping ratings and timestamps. The two
  agree on users, items and counts but break timestamp ties differently
  (shared/data/README.md), so item ids differ.
  """
  name = 'rec_jax_ml_1m'
  DESCRIPTION = 'MovieLens 1M ratings as chronological sequences.'
  HOMEPAGE = 'https://grouplens.org/datasets/movielens/1m/'
  DIRECTORY = 'ml-1m'
  LOCAL_FILES = ('ml-1m.txt', 'ml-1m_item_map.tsv')
  ZIP_FILES = ('ratings.dat', 'movies.dat')
  read_local_files = staticmethod(movielens_sources.read_ml1m_offline)
  read_zip_files = staticmethod(movielens_sources.read_ml1m_ratings)


class MovieLens100K(_MovieLensBuilder):
  """MovieLens-100K, all ratings (943 users, 1,682 items, 100,000 ratings).

  The same two files offline and online.
  """
  name = 'rec_jax_ml_100k'
  DESCRIPTION = 'MovieLens 100K ratings as chronological sequences.'
  HOMEPAGE = 'https://grouplens.org/datasets/movielens/100k/'
  DIRECTORY = 'ml-100k'
  LOCAL_FILES = ZIP_FILES = ('u.data', 'u.item')
  read_local_files = read_zip_files = staticmethod(
      movielens_sources.read_ml100k)
