"""What every dataset builder shares: the stored layout, downloads, reading.

`Builder` is the base of the per-family builders (`s3rec`, `movielens`,
`amazon` in this package, and the synthetic one in `catalog`). It reads the
raw files from a local directory or downloads them, checks the dataset and
writes it; `prepare` runs that once per cache key, and `read_users` reads a
prepared copy back without TensorFlow.

Layout of a prepared dataset:
* split 'users' (TFDS reserves the name 'all'; reading split 'all' gives the
  same records): one example per user, with `user_id` (int64, 1..N), `items`
  (int32 [L]), `ratings` (float32 [L]), `timestamps` (int64 [L]) and
  `sample_negatives` (int32 [99]). One feature schema serves every dataset,
  so fields a dataset lacks are stored as empty arrays and flagged in the
  metadata (`has_ratings`, ...). Records come back in key-hash order, not user
  order.
* `metadata.json` next to the records (`builder.info.metadata`): num_items,
  num_attributes, item_attributes (one list per item 1..M), item_text (or
  None), the has_* flags and the sha256 of every source file.

TFDS writes into a temporary `incomplete.*` directory and renames it when
done, so an interrupted preparation leaves nothing that looks complete.
"""

import dataclasses
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from rec_jax.data import types
from rec_jax.data.sources import files

FILE_FORMAT = 'array_record'
SPLIT = 'users'

# Per-user arrays. Stored as raw bytes (Encoding.BYTES), which `decode_user`
# turns back into arrays with np.frombuffer: TFDS's generic numpy decoding
# costs ~150 us per record, i.e. seconds for Beauty's 22k users.
ARRAY_FEATURES = {
    'items': np.int32,
    'ratings': np.float32,
    'timestamps': np.int64,
    'sample_negatives': np.int32,
}

# Bump when the stored layout changes (also change RELEASE_NOTES).
_VERSION = '1.0.0'
_RELEASE_NOTES = {'1.0.0': 'First release: split "users" + metadata.json.'}


def sha256_file(path) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


@dataclasses.dataclass(eq=False)
class SourceConfig(tfds.core.BuilderConfig):
  """Where one preparation reads from; the name is its cache key.

  Attributes:
    local_dir: directory laid out like shared/data, or None to download.
    synthetic_kwargs: arguments of `synthetic.generate` (synthetic only).
  """
  local_dir: str | None = None
  synthetic_kwargs: dict | None = None


class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: features, metadata, local-or-download dispatch.

  A family's builder sets the class attributes below and implements
  `local_files`, `_read_local` and `_read_downloaded`.
  """

  VERSION = tfds.core.Version(_VERSION)
  RELEASE_NOTES = _RELEASE_NOTES
  # TFDS looks for a checksums.tsv next to the builder's code, and for a
  # builder inside a package that lookup imports the `importlib_resources`
  # backport, which is not installed. We check sha256s ourselves instead.
  code_path = None
  DESCRIPTION = ''
  HOMEPAGE = ''
  CITATION = ''
  # The module that parses this dataset's raw files (or generates it); its
  # source is part of the cache key (`catalog.make_config`), so an edited
  # reader prepares a fresh copy.
  READER = None

  @classmethod
  def local_files(cls) -> tuple[list[str], list[str]]:
    """(required, optional) paths relative to the local data directory."""
    raise NotImplementedError

  def _read_local(self, paths: dict[str, str]) -> types.SequenceDataset:
    """Reads the files of `local_files` (optional ones may be absent)."""
    raise NotImplementedError

  def _read_downloaded(self, dl_manager) -> tuple[types.SequenceDataset,
                                                  dict[str, str]]:
    """Downloads and reads; returns the dataset and {file name: path}."""
    raise NotImplementedError

  def _create_builder_config(self, builder_config, version):
    # Configs are made per call by `catalog.make_config` (the name is a
    # fingerprint of the inputs), so there is no fixed list to look them up
    # in, and TFDS's "custom configuration" warning would fire on every load.
    # A bare name (e.g. from tfds.data_source) can still open a prepared copy.
    del version  # Only VERSION exists.
    if builder_config is None:
      raise ValueError(f'{self.name} has no default config; build it with '
                       'rec_jax.data.builders.catalog.make_builder')
    if isinstance(builder_config, str):
      return SourceConfig(name=builder_config.split(':')[0])
    return builder_config

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            'user_id': np.int64,
            **{key: tfds.features.Tensor(
                shape=(None,), dtype=dtype,
                encoding=tfds.features.Encoding.BYTES)
               for key, dtype in ARRAY_FEATURES.items()},
        }),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(),
    )

  def _read_dataset(self, dl_manager) -> tuple[types.SequenceDataset,
                                                 dict[str, str]]:
    """The dataset and {file name: path} of the files it was read from."""
    local_dir = self.builder_config.local_dir
    if local_dir is None:
      return self._read_downloaded(dl_manager)
    required, optional = self.local_files()
    paths = {}
    for relative in required + optional:
      path = os.path.join(local_dir, relative)
      if relative in required:
        files.check_exists(path)
      if os.path.isfile(path):
        paths[relative] = path
    return self._read_local(paths), paths

  def _split_generators(self, dl_manager):
    ds, paths = self._read_dataset(dl_manager)
    _check_dataset(ds)
    self.info.metadata.update(_metadata(ds, paths))
    return {SPLIT: self._generate_examples(ds)}

  def _generate_examples(self, ds: types.SequenceDataset):
    empty_f = np.zeros(0, np.float32)
    empty_t = np.zeros(0, np.int64)
    empty_i = np.zeros(0, np.int32)
    for u, items in enumerate(ds.sequences):
      yield u + 1, {
          'user_id': u + 1,
          'items': items,
          'ratings': empty_f if ds.ratings is None else ds.ratings[u],
          'timestamps': empty_t if ds.timestamps is None else ds.timestamps[u],
          'sample_negatives': (empty_i if ds.sample_negatives is None else
                               ds.sample_negatives[u]),
      }


def _check_dataset(ds: types.SequenceDataset) -> None:
  """Invariants every reader must meet before anything is written."""
  if not ds.sequences:
    raise files.DataError(f'{ds.name}: no users')
  for u, seq in enumerate(ds.sequences):
    if seq.size == 0 or seq.min() < 1 or seq.max() > ds.num_items:
      raise files.DataError(
          f'{ds.name}: user {u + 1} has an empty sequence or ids outside '
          f'1..{ds.num_items}')
    for field in ('ratings', 'timestamps'):
      values = getattr(ds, field)
      if values is not None and len(values[u]) != len(seq):
        raise files.DataError(f'{ds.name}: user {u + 1} has {len(seq)} '
                              f'items but {len(values[u])} {field}')


def _metadata(ds: types.SequenceDataset, paths: dict[str, str]) -> dict:
  """The item-level data and provenance stored as metadata.json."""
  attributes = None
  if ds.item_attributes is not None:
    attributes = [[int(a) for a in row if a] for row in ds.item_attributes[1:]]
  return {
      'name': ds.name,
      'num_items': ds.num_items,
      'num_attributes': ds.num_attributes,
      'item_attributes': attributes,
      'item_text': None if ds.item_text is None else list(ds.item_text[1:]),
      'has_ratings': ds.ratings is not None,
      'has_timestamps': ds.timestamps is not None,
      'has_sample_negatives': ds.sample_negatives is not None,
      'source_sha256': {os.path.basename(name): sha256_file(path)
                        for name, path in sorted(paths.items())},
  }


def download(dl_manager, urls: dict[str, str],
             known_sha256: dict[str, str]) -> dict[str, str]:
  """Downloads {file name: url}; returns {file name: path}.

  Args:
    dl_manager: the TFDS download manager.
    urls: {file name: url}.
    known_sha256: {file name: expected sha256}; a download that does not
      match is rejected. Files not listed are recorded, not checked.

  Returns:
    {file name: local path}.

  Raises:
    files.DataError: a download failed or has the wrong sha256.
  """
  try:
    paths = dl_manager.download(urls)
  except Exception as e:  # Any network failure: say how to avoid the network.
    raise files.DataError(
        f'could not download {sorted(urls.values())}: {e}. '
        f'{files.DATA_DIR_HINT}') from e
  paths = {name: os.fspath(path) for name, path in paths.items()}
  for name, path in paths.items():
    expected = known_sha256.get(name)
    if expected is not None and sha256_file(path) != expected:
      raise files.DataError(
          f'{path} (downloaded from {urls[name]}): sha256 '
          f'{sha256_file(path)} != expected {expected}')
  return paths


def download_zip(dl_manager, url: str) -> str:
  """Downloads and extracts a zip archive; returns the extracted directory."""
  try:
    return os.fspath(dl_manager.download_and_extract(url))
  except Exception as e:  # Any network failure: say how to avoid the network.
    raise files.DataError(
        f'could not download {url}: {e}. {files.DATA_DIR_HINT}') from e


def prepare(builder: tfds.core.DatasetBuilder) -> None:
  """Prepares the builder's dataset unless a complete copy exists.

  Args:
    builder: from `catalog.make_builder`.

  Raises:
    files.DataError: a raw file is missing or malformed, or a download
      failed.
  """
  if builder.data_path.exists():
    return
  try:
    builder.download_and_prepare(
        file_format=FILE_FORMAT,
        # Never fetch a "prepared copy" from TFDS's public bucket: ours are
        # not there, and asking needs the network.
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  except OSError:
    # Another process may have finished the same preparation first: its
    # rename wins and ours fails on the existing directory. Anything else
    # is a real error.
    if not builder.data_path.exists():
      raise
    builder.info.read_from_directory(builder.data_path)


def decode_user(record: bytes) -> dict:
  """Decodes one raw record of split 'users' (see ARRAY_FEATURES).

  Equivalent to `features.deserialize_example_np` for this schema, about 20x
  faster; `read_users` checks the equivalence on the first record.

  Args:
    record: serialized tf.train.Example bytes from the ArrayRecord file.

  Returns:
    {'user_id': int, 'items': int32 [L], 'ratings': float32 [L or 0],
    'timestamps': int64 [L or 0], 'sample_negatives': int32 [99 or 0]}.
  """
  feature = tf_example_pb2.Example.FromString(record).features.feature
  example = {'user_id': int(feature['user_id'].int64_list.value[0])}
  for key, dtype in ARRAY_FEATURES.items():
    # Copied: frombuffer views are read-only, which callers would not expect.
    example[key] = np.frombuffer(feature[key].bytes_list.value[0],
                                 dtype).copy()
  return example


def read_users(builder: tfds.core.DatasetBuilder) -> list[dict]:
  """All records of a prepared builder's split, in storage order.

  Args:
    builder: a prepared builder from `catalog.make_builder`.

  Returns:
    One dict per user as from `decode_user` (storage order is key-hash
    order, not user order).

  Raises:
    files.DataError: the fast decoder disagrees with TFDS's decoder.
  """
  source = builder.as_data_source(
      split=SPLIT, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  raw = source.__getitems__(list(range(len(source))))
  users = [decode_user(r) for r in raw]
  if raw:
    reference = builder.info.features.deserialize_example_np(raw[0])
    if not all(np.array_equal(reference[k], users[0][k]) for k in reference):
      raise files.DataError(
          f'{builder.data_path}: decode_user disagrees with TFDS on the first '
          'record; has the TFDS serialization changed?')
  return users
