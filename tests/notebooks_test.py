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

