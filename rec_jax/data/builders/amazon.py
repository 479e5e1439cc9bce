"""TFDS builder for Amazon Industrial & Scientific, with item text.

Offline it reads <data dir>/amazon-scientific/, online the files of
Nishikata97/CollisionGenRec at a pinned commit; the readers are in
`rec_jax.data.sources.amazon`.
"""

from rec_jax.data.builders import base
from rec_jax.data.sources import amazon as amazon_sources

_URL = ('https://raw.githubusercontent.com/Nishikata97/'
        'CollisionGenRec/505d5be3166f7c38ae67957daf8a3b7ec7092577/'
        'data/Scientific/')

# sha256 of the upstream files that shared/data/README.md verified; a download
# that does not match is rejected.
KNOWN_SHA256 = {
    'Scientific.inter.json':
        '32c6c01876ebecebdfabd2dbd358594be36655e9e7b168772a7a3aa3624ee1b4',
    'Scientific.item.json':
        'ad24200106868dac2b544d812305d61a11bf07fed78b2f7cdca41d66f3418e71',
}


class Scientific(base.Builder):
  """Amazon Industrial & Scientific with item text (8,317 users, 4,344 items).

  Offline it reads the derived `Scientific.txt`; online the upstream
  0-based `Scientific.inter.json`, shifted by +1 to the same numbering.
  """
  name = 'rec_jax_scientific'
  DESCRIPTION = ('Amazon Industrial & Scientific sequences with item title, '
                 'brand, categories and description (CollisionGenRec).')
  HOMEPAGE = 'https://github.com/Nishikata97/CollisionGenRec'
  READER = amazon_sources

  @classmethod
  def local_files(cls):
    return ['amazon-scientific/Scientific.txt',
            'amazon-scientific/Scientific.item.json'], []

  def _read_local(self, paths):
    return amazon_sources.read_scientific(
        paths['amazon-scientific/Scientific.item.json'],
        sequences_path=paths['amazon-scientific/Scientific.txt'])

  def _read_downloaded(self, dl_manager):
    names = ('Scientific.inter.json', 'Scientific.item.json')
    paths = base.download(dl_manager, {n: _URL + n for n in names},
                          KNOWN_SHA256)
    return amazon_sources.read_scientific(
        paths['Scientific.item.json'],
        inter_json_path=paths['Scientific.inter.json']), paths
