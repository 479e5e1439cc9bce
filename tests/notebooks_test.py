"""Executes the colab notebooks on smoke configs."""

import os

import nbclient
import nbformat

import conftest


def test_quickstart_notebook_runs(tmp_path):
  path = os.path.join(conftest.REPO, 'colab', 'quickstart.ipynb')
  nb = nbformat.read(path, as_version=4)
  env_backup = dict(os.environ)
  os.environ['REC_JAX_REPO'] = conftest.REPO
  os.environ['QUICKSTART_ARG'] = 'smoke'
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}
                            ).execute()
  finally:
    os.environ.clear()
    os.environ.update(env_backup)
  outputs = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                    for o in c.get('outputs', []))
  assert 'ndcg@10' in outputs and 'learning curve:' in outputs


def test_ablations_notebook_runs(tmp_path):
  """benchmarks/ablations.py on a smoke config, then the notebook on it."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'res' / 'ablations'
  proc = subprocess.run(
      [sys.executable, 'benchmarks/ablations.py', '--datasets=synthetic',
       '--recipes=cloze', '--seeds=0', '--arg=smoke',
       f'--workroot={tmp_path / "work"}', f'--out={out}',
       '--override=checkpoint.async_save=false'],
      cwd=conftest.REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  for ext in ('md', 'csv', 'json', 'png'):
    assert os.path.exists(f'{out}.{ext}')
  assert '| synthetic | cloze | 1 |' in open(f'{out}.md').read()
  path = os.path.join(conftest.REPO, 'colab', 'ablations.ipynb')
  nb = nbformat.read(path, as_version=4)
  env_backup = dict(os.environ)
  os.environ['REC_JAX_REPO'] = conftest.REPO
  os.environ['ABLATIONS_JSON'] = f'{out}.json'
  try:
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': str(tmp_path)}}
                            ).execute()
  finally:
    os.environ.clear()
    os.environ.update(env_backup)
  outputs = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                    for o in c.get('outputs', []))
  assert 'synthetic  cloze' in outputs and 'bar plot:' in outputs
  assert (tmp_path / 'ablations_ndcg10.png').exists()
