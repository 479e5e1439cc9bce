"""TFDS builders for the S3-Rec benchmarks: Beauty, Toys, Sports, Yelp, LastFM.

All five are the same three files, `NAME.txt`, `NAME_item2attributes.json`
and `NAME_sample.txt`, read by `rec_jax.data.sources.s3rec`: offline from
<data dir>/s3rec/ (where the sample file is optional: shared/data has
LastFM's only), online from RUCAIBox/CIKM2020-S3Rec at a pinned commit. So
one builder class serves them all, specialised per benchmark by the table
`_BENCHMARKS`; `BUILDERS` maps each dataset name to its class.
"""

from rec_jax.data.builders import base
from rec_jax.data.sources import s3rec as s3rec_sources

_URL = ('https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/'
        '2a81540ae18615d88ef88227b0c066e5b74781e5/data/')

# sha256 of the upstream files that shared/data/README.md verified; a download
# that does not match is rejected. Files not listed are recorded, not checked.
KNOWN_SHA256 = {
    'Beauty.txt':
        '226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8',
    'Beauty_item2attributes.json':
        '129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4',
    'Toys_and_Games.txt':
        '176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f',
    'Toys_and_Games_item2attributes.json':
        'd371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0',
    'LastFM.txt':
        '9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802',
    'LastFM_sample.txt':
        '60194cc2e4fd1aa8b5dc8872e1f3af9c6abd09c39d478d3df9337cb97e6e2f0d',
    'LastFM_item2attributes.json':
        'a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef',
}

_CITATION = """@inproceedings{zhou2020s3rec,
  title={S3-Rec: Self-Supervised Learning for Sequential Recommendation with
         Mutual Information Maximization},
  author={Zhou, Kun and Wang, Hui and Zhao, Wayne Xin and Zhu, Yutao and
          Wang, Sirui and Zhang, Fuzheng and Wang, Zhongyuan and
          Wen, Ji-Rong},
  booktitle={CIKM}, pages={1893--1902}, year={2020}}"""


class _S3RecBuilder(base.Builder, skip_registration=True):
  """An S3-Rec benchmark: NAME.txt, NAME_item2attributes.json, NAME_sample.txt.

  The sample file is optional offline (shared/data has LastFM's only) and
  downloaded online.
  """

  FILE_STEM = ''
  DATASET = ''
  HOMEPAGE = 'https://github.com/RUCAIBox/CIKM2020-S3Rec'
  CITATION = _CITATION
  READER = s3rec_sources

  @classmethod
  def _file_names(cls):
    stem = cls.FILE_STEM
    return stem + '.txt', stem + '_item2attributes.json', stem + '_sample.txt'

  @classmethod
  def local_files(cls):
    txt, attrs, sample = cls._file_names()
    return ['s3rec/' + txt, 's3rec/' + attrs], ['s3rec/' + sample]

  def _read_local(self, paths):
    txt, attrs, sample = ('s3rec/' + n for n in self._file_names())
    return s3rec_sources.read_s3rec(self.DATASET, paths[txt], paths[attrs],
                                    paths.get(sample))

  def _read_downloaded(self, dl_manager):
    names = self._file_names()
    paths = base.download(dl_manager, {n: _URL + n for n in names},
                          KNOWN_SHA256)
    txt, attrs, sample = (paths[n] for n in names)
    return s3rec_sources.read_s3rec(self.DATASET, txt, attrs, sample), paths


# One row per benchmark: dataset name (the TFDS name is rec_jax_<name>),
# class name, file stem, class docstring, TFDS description.
_BENCHMARKS = (
    ('beauty', 'Beauty', 'Beauty',
     'S3-Rec Amazon Beauty (22,363 users, 12,101 items).',
     'Amazon Beauty reviews as preprocessed by S3-Rec (CIKM 2020).'),
    ('toys', 'Toys', 'Toys_and_Games',
     'S3-Rec Amazon Toys_and_Games (19,412 users, 11,924 items).',
     'Amazon Toys and Games as preprocessed by S3-Rec (CIKM 2020).'),
    ('sports', 'Sports', 'Sports_and_Outdoors',
     'S3-Rec Amazon Sports_and_Outdoors (not in shared/data; download only).',
     'Amazon Sports and Outdoors as preprocessed by S3-Rec (CIKM 2020).'),
    ('yelp', 'Yelp', 'Yelp',
     'S3-Rec Yelp (not in shared/data; download only).',
     'Yelp Open Dataset as preprocessed by S3-Rec (CIKM 2020).'),
    ('lastfm', 'LastFM', 'LastFM',
     'S3-Rec LastFM (1,090 users, 3,646 items, 99 sample negatives each).',
     'HetRec 2011 LastFM as preprocessed by S3-Rec (CIKM 2020).'),
)


def _builder_class(dataset, class_name, stem, doc, description):
  """The builder of one benchmark; defining it registers it with TFDS."""
  return type(class_name, (_S3RecBuilder,), {
      '__module__': __name__,
      '__qualname__': class_name,
      '__doc__': doc,
      'name': f'rec_jax_{dataset}',
      'DATASET': dataset,
      'FILE_STEM': stem,
      'DESCRIPTION': description,
  })


# Dataset name -> builder class, in the order of `_BENCHMARKS`.
BUILDERS = {row[0]: _builder_class(*row) for row in _BENCHMARKS}
