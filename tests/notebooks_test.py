"""Executes the colab notebooks on smoke configs."""

import conftest


def test_quickstart_notebook_runs(tmp_path):
  outputs = conftest.execute_notebook('quickstart.ipynb', tmp_path,
                                      QUICKSTART_ARG='smoke')
  assert 'ndcg@10' in outputs and 'learning curve:' in outputs
