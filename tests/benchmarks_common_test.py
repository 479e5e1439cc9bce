"""benchmarks/common.py: a finished run is reused only for the config the
benchmark asks for."""

import json
import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'benchmarks'))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

ARGS = ['--config=configs/recommended.py:smoke,pretrain=false',
        '--config.finetune.patience=3']


def _finished(workdir, args, init_from=None):
  """A workdir as main leaves it: finetune/{config.json,best/..} and
  results.json."""
  stage = workdir / 'finetune'
  (stage / 'best' / '7').mkdir(parents=True)
  (stage / 'config.json').write_text(
      common.config_of(args).to_json_best_effort())
  results = {'test': {'ndcg@10': 0.5}, 'init_from': init_from}
  (workdir / 'results.json').write_text(json.dumps(results))
  return results


def test_config_of_applies_overrides_in_process():
  config = common.config_of([*ARGS, '--stage=eval',
                             '--config.model.embed_dim=24'])
  assert config.finetune.patience == 3 and config.model.embed_dim == 24
  assert not config.pretrain.enabled


def test_finished_run_reused_only_with_its_config(tmp_path):
  want = _finished(tmp_path, ARGS)
  assert common.run_main(ARGS, str(tmp_path)) == want
  with pytest.raises(ValueError, match=r'finetune.patience: 3 \(saved\) != '
                     r'4 \(now\)'):
    common.run_main([ARGS[0], '--config.finetune.patience=4'], str(tmp_path))
  # Keys a finished run may differ in, named by the benchmark.
  assert common.run_main([ARGS[0], '--config.finetune.patience=4'],
                         str(tmp_path), allow=('finetune.patience',)) == want
  # Evaluation-only and placement keys never block reuse.
  assert common.run_main([*ARGS, '--config.eval.batch_size=64',
                          '--config.mesh.data=2'], str(tmp_path)) == want


def test_finished_run_must_start_from_the_asked_checkpoint(tmp_path):
  pre = tmp_path / 'pre' / 'pretrain'
  (pre / 'best' / '300' / 'params').mkdir(parents=True)
  work = tmp_path / 'run'
  args = [*ARGS, f'--config.init_from.path={pre}']
  want = _finished(work, args, init_from=str(pre / 'best' / '300' / 'params'))
  assert common.run_main(args, str(work)) == want
  other = tmp_path / 'other' / 'pretrain'
  other.mkdir(parents=True)
  with pytest.raises(ValueError, match='fine-tuned from .*pre/pretrain'):
    common.run_main([*ARGS, f'--config.init_from.path={other}'], str(work))
  # A run from scratch is not a fine-tune of a pretrained encoder.
  with pytest.raises(ValueError, match='this benchmark asks for no '
                     'checkpoint'):
    common.run_main(ARGS, str(work))
