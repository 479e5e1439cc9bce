"""Test set-up: 8 fake CPU devices before any JAX use, fast compiles."""

import atexit
import os
import shutil
import tempfile

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Fast compiles here and in every subprocess the tests start (the recipes run
# through `python -m rec_jax.main` inherit the environment): XLA's slow
# optimisation passes off (halves a smoke run), and one compilation cache for
# the session, so the many smoke runs of the same recipe compile once.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', 'true')
if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
  _compile_cache = tempfile.mkdtemp(prefix='rec_jax_xla_cache_')
  atexit.register(shutil.rmtree, _compile_cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _compile_cache
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# config_flags reads absl flags; tests do not go through app.run.
flags.FLAGS.mark_as_parsed()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True, scope='session')
def _cache_dir(tmp_path_factory):
  """Prepared datasets go to a writable temp dir (the data dir is read-only)."""
  if not os.environ.get('REC_JAX_CACHE_DIR'):
    os.environ['REC_JAX_CACHE_DIR'] = str(tmp_path_factory.mktemp('tfds'))
  yield


def data_dir_or_skip():
  d = os.environ.get('REC_JAX_DATA_DIR')
  if not d:
    pytest.skip('REC_JAX_DATA_DIR is not set: real-data test skipped')
  return d


def load_config(name: str, arg: str | None = None):
  """get_config of configs/<name>.py (configs is not a package)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(REPO, 'configs', name + '.py')
  spec = importlib.util.spec_from_file_location(f'configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def execute_notebook(name: str, cwd, timeout: int = 600, **env) -> str:
  """Runs colab/<name> in `cwd` with extra environment; returns the text
  of every code cell's outputs."""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  nb = nbformat.read(os.path.join(REPO, 'colab', name), as_version=4)
  backup = dict(os.environ)
  os.environ.update(REC_JAX_REPO=REPO, **env)
  try:
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name='python3',
                            resources={'metadata': {'path': str(cwd)}}
                            ).execute()
  finally:
    os.environ.clear()
    os.environ.update(backup)
  return ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                 for o in c.get('outputs', []))
