"""benchmarks/finetune_anatomy.py: where a full fine-tune's gain lives."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import finetune_anatomy  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_table_change_measures_rank_and_shared_maps():
  rng = np.random.default_rng(0)
  e0 = rng.normal(size=(200, 16))
  counts = rng.integers(1, 100, size=200).astype(float)
  u, v = rng.normal(size=(200, 1)), rng.normal(size=(1, 16))
  rank1 = finetune_anatomy.table_change(e0, e0 + u @ v, counts)
  assert rank1['energy_top_rank']['1'] == pytest.approx(1.0)
  assert rank1['relative_change'] == pytest.approx(
      np.linalg.norm(u @ v) / np.linalg.norm(e0))
  mapped = finetune_anatomy.table_change(
      e0, e0 @ rng.normal(size=(16, 16)), counts)
  assert mapped['linear_map_share'] == pytest.approx(1.0)
  shifted = finetune_anatomy.table_change(e0, e0 + v, counts)
  assert shifted['common_shift_share'] == pytest.approx(1.0)
  assert rank1['common_shift_share'] < 0.2
  e1 = e0 + rng.normal(size=e0.shape) + 3.0
  np.testing.assert_allclose(finetune_anatomy.shift_and_rank(e0, e1, 16), e1,
                             atol=1e-9)
  np.testing.assert_allclose(finetune_anatomy.shift_and_rank(e0, e1, 0),
                             e0 + (e1 - e0).mean(0), atol=1e-9)
  top = finetune_anatomy.most_frequent(np.array([3., 9., 9., 1.]), 2)
  np.testing.assert_array_equal(top, [1, 2])
  mixed = finetune_anatomy.frequent_rows(e0[:4], e1[:4], top)
  shift = (e1[:4] - e0[:4]).mean(0)
  np.testing.assert_allclose(mixed[[1, 2]], e1[[1, 2]])
  np.testing.assert_allclose(mixed[[0, 3]], e0[[0, 3]] + shift)
  affine = e0 @ rng.normal(size=(16, 16)) + v
  np.testing.assert_allclose(finetune_anatomy.linear_map(e0, affine), affine,
                             atol=1e-9)
  # What the map leaves (a rank-1 move) is what the rank-1 term adds back.
  np.testing.assert_allclose(
      finetune_anatomy.linear_map(e0, affine + u @ v, 1), affine + u @ v,
      atol=1e-6)
  assert not np.allclose(finetune_anatomy.linear_map(e0, affine + u @ v),
                         affine + u @ v, atol=1e-3)
  noise = finetune_anatomy.table_change(
      e0, e0 + rng.normal(size=e0.shape), counts)
  shares = [noise['energy_top_rank'][str(r)] for r in finetune_anatomy.RANKS]
  assert shares == sorted(shares) and shares[0] < 0.2
  assert noise['linear_map_share'] < 0.2


def test_anatomy_of_a_smoke_fine_tune(tmp_path):
  """The `full` score is the fine-tune's own validation figure, and the
  swapped models are scored. One smoke run pretrains and fine-tunes; the
  benchmark layout (a pretraining run, a full fine-tune from it) points at
  its two stages."""
  run = tmp_path / 'run'
  subprocess.run(
      [sys.executable, '-m', 'rec_jax.main',
       '--config=configs/recommended.py:smoke', f'--workdir={run}'],
      cwd=REPO, check=True, capture_output=True)
  work = tmp_path / 'work'
  work.mkdir()
  (work / 'pre_recommended_synthetic_s0').symlink_to(run)
  (work / 'full_synthetic_s0').symlink_to(run)
  subprocess.run(
      [sys.executable, 'benchmarks/finetune_anatomy.py',
       '--datasets=synthetic', '--arg=smoke', f'--workroot={work}',
       '--top_rows=0,5000',
       f'--out={tmp_path}/anatomy'],
      cwd=REPO, check=True, capture_output=True)
  row = json.loads((tmp_path / 'anatomy.json').read_text())['rows'][0]
  results = json.loads((run / 'results.json').read_text())
  scores = row['valid_ndcg10']
  assert scores['full'] == pytest.approx(results['valid']['ndcg@10'],
                                         abs=1e-6)
  assert all(0 <= x <= 1 for x in scores.values())
  assert row['table']['relative_change'] > 0
  # No rows: the shifted pretrained table; every row: the full fine-tune.
  none, every = row['frequent_rows']
  assert none['valid_ndcg10'] == pytest.approx(
      scores['full_with_pretrained_table_shifted'], abs=1e-6)
  assert every['valid_ndcg10'] == pytest.approx(scores['full'], abs=1e-6)
  assert every['train_share'] == pytest.approx(1.0)
  assert none['train_share'] == 0 and none['params'] == 0
  assert '| synthetic | 0 |' in (tmp_path / 'anatomy.md').read_text()


def test_missing_checkpoint_is_named(tmp_path):
  proc = subprocess.run(
      [sys.executable, 'benchmarks/finetune_anatomy.py',
       '--datasets=synthetic', f'--workroot={tmp_path}'],
      cwd=REPO, capture_output=True, text=True)
  assert proc.returncode != 0
  assert 'pre_recommended_synthetic_s0/pretrain/best: no pretraining' in (
      proc.stderr)
