"""Dataset name -> TFDS builder, and the cache key of each preparation.

`BUILDERS` lists every dataset `datasets.load` knows; `make_builder` gives
the builder of one, configured for where its raw files come from:
* `local_dir` (the `data_dir` argument of `make_builder`, else the env var
  REC_JAX_DATA_DIR): a directory laid out like shared/data. Nothing is
  downloaded; a missing file raises `files.MissingFileError`.
* neither set: the files are downloaded from their public source (pinned
  commits on GitHub, GroupLens zips) with the TFDS download manager.

Caching: prepared data goes to `cache_dir` (else REC_JAX_CACHE_DIR, else
~/.cache/rec_jax/tfds) as <cache>/<builder name>/<config>/<version>. The config
name carries a fingerprint of the source files' and the preparing code's
sha256 (the dataset's reader module, the shared readers and the builder
modules), so changed inputs or readers prepare a fresh copy instead of
reusing a stale one. `base.prepare` then prepares it once.
"""

import hashlib
import inspect
import os
import sys

import tensorflow_datasets as tfds

from rec_jax.data import synthetic
from rec_jax.data import types
from rec_jax.data.builders import amazon
from rec_jax.data.builders import base
from rec_jax.data.builders import movielens
from rec_jax.data.builders import s3rec
from rec_jax.data.sources import files

DATA_DIR_ENV = 'REC_JAX_DATA_DIR'
CACHE_DIR_ENV = 'REC_JAX_CACHE_DIR'
DEFAULT_CACHE_DIR = '~/.cache/rec_jax/tfds'


class Synthetic(base.Builder):
  """`synthetic.generate` output; the config name holds its arguments."""
  name = 'rec_jax_synthetic'
  DESCRIPTION = 'Deterministic synthetic sequences (rec_jax.data.synthetic).'
  READER = synthetic

  @classmethod
  def local_files(cls):
    return [], []

  def _read_dataset(self, dl_manager):
    del dl_manager  # Nothing to read.
    return synthetic.generate(**self.builder_config.synthetic_kwargs), {}


# User-facing name -> builder class. TFDS names must be identifiers.
BUILDERS = {
    **s3rec.BUILDERS,  # beauty, toys, sports, yelp, lastfm
    'ml-1m': movielens.MovieLens1M,
    'ml-100k': movielens.MovieLens100K,
    'scientific': amazon.Scientific,
    'synthetic': Synthetic,
}


def _code_fingerprint(builder_cls) -> str:
  """sha256 of the code that prepares `builder_cls`'s dataset.

  That is its reader (`READER`), the shared readers and dataset type, and
  the builder modules (the shared one, its family's and this one), so an
  edited reader invalidates the caches it made and leaves the others.

  Args:
    builder_cls: a value of BUILDERS.

  Returns:
    The hex digest.
  """
  modules = (builder_cls.READER, files, types, base,
             sys.modules[builder_cls.__module__], sys.modules[__name__])
  digest = hashlib.sha256()
  for module in dict.fromkeys(modules):
    digest.update(inspect.getsource(module).encode())
  return digest.hexdigest()


def resolve_local_dir(data_dir: str | None) -> str | None:
  """The raw-data directory: `data_dir` if given, else $REC_JAX_DATA_DIR."""
  local_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
  if local_dir is None:
    return None
  local_dir = os.path.abspath(os.path.expanduser(local_dir))
  if not os.path.isdir(local_dir):
    raise files.MissingFileError(
        f'data directory {local_dir} does not exist. {files.DATA_DIR_HINT}')
  return local_dir


def resolve_cache_dir(cache_dir: str | None) -> str:
  """Prepared-data directory: `cache_dir`, $REC_JAX_CACHE_DIR or default."""
  cache_dir = (cache_dir or os.environ.get(CACHE_DIR_ENV) or
               DEFAULT_CACHE_DIR)
  return os.path.abspath(os.path.expanduser(cache_dir))


def make_config(name: str, *, data_dir: str | None = None,
                **synthetic_kwargs) -> base.SourceConfig:
  """The `SourceConfig` (and so the cache key) for one dataset and source.

  Args:
    name: a key of BUILDERS.
    data_dir: local raw-data directory; overrides $REC_JAX_DATA_DIR.
    **synthetic_kwargs: arguments of `synthetic.generate` (synthetic only).

  Returns:
    A config named 'local-<fingerprint>', 'download-<fingerprint>' or, for
    synthetic, after its arguments plus a fingerprint of the generator code.

  Raises:
    files.DataError: unknown name, arguments for the wrong dataset, or a
      local data directory that lacks a required file.
  """
  if name not in BUILDERS:
    raise files.DataError(
        f'unknown dataset {name!r}; known: {", ".join(BUILDERS)}')
  builder_cls = BUILDERS[name]
  code = _code_fingerprint(builder_cls)
  if name == 'synthetic':
    kwargs = dict(inspect.signature(synthetic.generate).bind(
        **synthetic_kwargs).arguments)
    kwargs = {**_synthetic_defaults(), **kwargs}
    label = '-'.join(f'{k}{v}' for k, v in sorted(kwargs.items()))
    return base.SourceConfig(
        name=f'{label}-{code[:8]}',
        description='synthetic.generate(**synthetic_kwargs)',
        synthetic_kwargs=kwargs)
  if synthetic_kwargs:
    raise files.DataError(f'{name!r} takes no generator arguments, got '
                          f'{sorted(synthetic_kwargs)}')
  local_dir = resolve_local_dir(data_dir)
  if local_dir is None:
    return base.SourceConfig(name=f'download-{code[:16]}',
                             description='downloaded from the public source')
  required, optional = builder_cls.local_files()
  digest = hashlib.sha256(code.encode())
  for relative in required + optional:
    path = os.path.join(local_dir, relative)
    if relative in required:
      files.check_exists(path)
    if os.path.isfile(path):
      digest.update(f'{relative}={base.sha256_file(path)};'.encode())
  return base.SourceConfig(name=f'local-{digest.hexdigest()[:16]}',
                           description=f'read from {local_dir}',
                           local_dir=local_dir)


def _synthetic_defaults() -> dict:
  return {k: p.default for k, p in
          inspect.signature(synthetic.generate).parameters.items()}


def make_builder(name: str, *, data_dir: str | None = None,
                 cache_dir: str | None = None,
                 **synthetic_kwargs) -> tfds.core.DatasetBuilder:
  """The TFDS builder for a dataset, not yet prepared.

  Args:
    name: a key of BUILDERS, e.g. 'beauty' or 'ml-1m'.
    data_dir: local raw-data directory; overrides $REC_JAX_DATA_DIR. With
      neither, preparation downloads the files.
    cache_dir: where prepared datasets live; overrides $REC_JAX_CACHE_DIR
      (default ~/.cache/rec_jax/tfds).
    **synthetic_kwargs: arguments of `synthetic.generate` (synthetic only).

  Returns:
    The builder; call `base.prepare(builder)` before reading.

  Raises:
    files.DataError: see `make_config`.
  """
  config = make_config(name, data_dir=data_dir, **synthetic_kwargs)
  return BUILDERS[name](data_dir=resolve_cache_dir(cache_dir), config=config,
                        file_format=base.FILE_FORMAT)
