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
  # As main sets it from the data: the recipe's -1 is never compared.
  assert config.model.dropout_rate == 0.5


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


def test_baselines_carries_rows_it_cannot_recompute(tmp_path):
  import baselines  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'table.md'
  row = ('| beauty | sasrec | 3 | 0.0570 ± 0.0006 | 0.0940 | 0.0656 | 0.1283 '
         '| 0.0518 | – | 0.0318 | 45 | 49.6 | 36.8 | cpu (2 cores) |')
  path.write_text(
      '# t\n\n| dataset | model | seeds | test NDCG@10 |\n|---|---|---|---|\n'
      f'{row}\n\nValidation curves: `t.png`.\n')
  rows = baselines.previous_table(str(path))
  assert list(rows) == [('beauty', 'sasrec')]
  assert baselines.seed_count(rows[('beauty', 'sasrec')]) == 3
  once = baselines.carried(row)
  assert once.split('|')[3].strip() == '3 (carried)'
  assert baselines.carried(once) == once
  assert baselines.seed_count(once) == 3
  assert baselines.previous_table(str(tmp_path / 'none.md')) == {}


def test_ablations_carries_rows_with_more_seeds_than_at_hand(tmp_path):
  import ablations  # pylint: disable=g-import-not-at-top

  def row(dataset, recipe, seeds, ndcg, **kw):
    r = dict(dataset=dataset, recipe=recipe, seeds=seeds, pretrain_min=0.0,
             finetune_min=1.0, **kw)
    for m in ablations.METRICS:
      r[m], r[m + '_std'] = ndcg, 0.001
    return r

  out = str(tmp_path / 'ablations')
  assert ablations.previous_rows(out) == {}
  old = [row('beauty', 'scratch', 3, 0.057), row('lastfm', 'cloze', 2, 0.041),
         row('toys', 'scratch', 3, 0.062, carried_from='2026-11-01')]
  with open(out + '.json', 'w', encoding='utf-8') as f:
    json.dump(dict(command='c', date='2026-11-28', rows=old), f)
  previous = ablations.previous_rows(out)
  assert previous[('beauty', 'scratch')]['carried_from'] == '2026-11-28'
  # A row keeps the date it was first computed through later carries.
  assert previous[('toys', 'scratch')]['carried_from'] == '2026-11-01'
  computed = [row('beauty', 'scratch', 1, 0.058),    # fewer: carry the old
              row('lastfm', 'cloze', 3, 0.040),      # more: recompute
              row('lastfm', 'duorec', 1, 0.042)]     # new
  keys = [('beauty', 'scratch'), ('lastfm', 'scratch'), ('lastfm', 'cloze'),
          ('lastfm', 'duorec')]                      # toys not asked for
  rows = ablations.merge(computed, previous, keys)
  assert [(r['dataset'], r['recipe'], r['seeds'], r['ndcg@10'])
          for r in rows] == [('beauty', 'scratch', 3, 0.057),
                             ('lastfm', 'cloze', 3, 0.040),
                             ('lastfm', 'duorec', 1, 0.042)]
  text = ablations.markdown(rows, 'cmd')
  assert '| beauty | scratch | 3 (carried, 2026-11-28) | 0.0570 ± 0.0010 |' \
      in text
  assert '| lastfm | cloze | 3 | 0.0400 ± 0.0010 |' in text
  assert '| lastfm | duorec | 1 | 0.0420 |' in text
  assert '(beauty scratch)' in text
  assert 'carried' not in ablations.markdown(rows[1:], 'cmd')


def test_ablations_plot_labels_each_pretrained_bar_with_its_delta(tmp_path):
  import ablations  # pylint: disable=g-import-not-at-top
  rows = [dict(dataset='toys', recipe='scratch', seeds=3,
               **{'ndcg@10': 0.0620, 'ndcg@10_std': 0.0007}),
          dict(dataset='toys', recipe='cl4srec', seeds=1,
               **{'ndcg@10': 0.0635, 'ndcg@10_std': 0.0,
                  'delta_ndcg@10_pct': 2.42}),
          dict(dataset='other', recipe='cloze', **{'ndcg@10': 0.03,
                                                   'ndcg@10_std': 0.0,
                                                   'delta_ndcg@10_pct': -0.66})]
  path = str(tmp_path / 'abl.png')
  fig = ablations.plot(rows, path)
  assert os.path.getsize(path) > 0
  panels = {ax.get_title(): ax for ax in fig.axes}
  assert sorted(panels) == ['other', 'toys']
  assert [t.get_text() for t in panels['toys'].texts] == ['+2.4%']
  assert [t.get_text() for t in panels['other'].texts] == ['-0.7%']
  # A bar of fewer seeds than the panel's fullest is marked with its count.
  assert [t.get_text() for t in panels['toys'].get_xticklabels()] == [
      'scratch', 'cl4srec (n=1)']
  assert [t.get_text() for t in panels['other'].get_xticklabels()] == [
      'cloze']
  # Toys has a published target line and room above it; 'other' has none.
  assert panels['toys'].get_ylim()[1] > ablations.TARGETS['toys'][1]
  assert panels['toys'].get_legend() is not None
  assert panels['other'].get_legend() is None


def test_ablations_rows_count_seeds_above_scratch_and_average_valid():
  import ablations  # pylint: disable=g-import-not-at-top

  def run(seed, test, valid):
    return dict(seed=seed, test={m: test for m in ablations.METRICS},
                valid={'ndcg@10': valid}, train_seconds=60.0, epochs=10,
                hardware='cpu')

  runs = {('toys', 'scratch'): [run(0, 0.060, 0.070), run(1, 0.064, 0.072),
                                run(2, 0.062, 0.074)],
          # Above scratch on seeds 0 and 2, below on 1; seed 3 has no
          # scratch run to compare with and counts in neither.
          ('toys', 'cl4srec'): [run(0, 0.061, 0.071), run(1, 0.063, 0.070),
                                run(2, 0.065, 0.072), run(3, 0.070, 0.080)]}
  rows = {r['recipe']: r for r in ablations.aggregate(runs)}
  assert 'seeds_above_scratch' not in rows['scratch']
  assert rows['cl4srec']['seeds_above_scratch'] == (2, 3)
  assert rows['scratch']['valid_ndcg@10'] == pytest.approx(0.072)
  assert rows['cl4srec']['valid_ndcg@10'] == pytest.approx(0.07325)
  # Seed-matched delta: (0.061 + 0.063 + 0.065) / 3 against 0.062.
  assert rows['cl4srec']['delta_ndcg@10_pct'] == pytest.approx(
      100 * (0.063 / 0.062 - 1))
  text = ablations.markdown(list(rows.values()), 'cmd')
  line = next(l for l in text.splitlines() if '| cl4srec |' in l)
  cells = [c.strip() for c in line.strip('|').split('|')]
  head = next(l for l in text.splitlines() if l.startswith('| dataset'))
  names = [c.strip() for c in head.strip('|').split('|')]
  assert len(cells) == len(names)
  got = dict(zip(names, cells))
  assert got['valid NDCG@10'] == '0.0733'
  assert got['seeds above scratch'] == '2/3'
  assert got['Δ NDCG@10 vs scratch'] == '+1.6%'
  scratch = dict(zip(names, [c.strip() for c in next(
      l for l in text.splitlines() if '| scratch |' in l).strip('|').split(
          '|')]))
  assert scratch['seeds above scratch'] == '–'


def test_rewritten_table_keeps_its_hand_notes(tmp_path):
  path = str(tmp_path / 'table.md')
  common.write_markdown(path, '# t\n\n| a |\n|---|\n| 1 |\n')
  assert common.hand_notes(path) == ''
  with open(path, 'a', encoding='utf-8') as f:
    f.write('\nNotes (today): row 1 ran on a GPU.\n- and more.\n')
  common.write_markdown(path, '# t\n\n| a |\n|---|\n| 2 |\n')
  text = open(path, encoding='utf-8').read()
  assert '| 2 |' in text and '| 1 |' not in text
  assert text.endswith('\nNotes (today): row 1 ran on a GPU.\n- and more.\n')
  # New text with notes of its own replaces the old ones.
  common.write_markdown(path, '# t\n\nNotes: fresh.\n')
  assert common.hand_notes(path) == 'Notes: fresh.\n'


def test_variants_table_pairs_seeds_with_default():
  import variants  # pylint: disable=g-import-not-at-top

  def res(valid, test):
    return {'valid': {'ndcg@10': valid}, 'test': {'ndcg@10': test,
                                                  'hr@10': 0.1},
            'best_epoch': 10, 'seconds_per_epoch': 30.0}

  base = {0: res(0.070, 0.056), 1: res(0.072, 0.058)}
  runs = {1: res(0.0756, 0.0551), 2: res(0.5, 0.5)}
  # Only seed 1 is in both: +5.0% on valid, -5.0% on test.
  valid = lambda r: r['valid']['ndcg@10']
  assert variants.paired_change(runs, base, valid) == '+5.0% (seeds 1)'
  assert variants.paired_change({3: res(1, 1)}, base, valid) == '–'
  cells = [c.strip() for c in variants.row('beauty', 'd128', runs,
                                           base).strip('|').split('|')]
  assert cells[:4] == ['beauty', 'd128',
                       'model.embed_dim=128 model.mlp_dim=512', '2']
  assert cells[8:10] == ['+5.0% (seeds 1)', '-5.0% (seeds 1)']
  assert len(cells) == variants.HEADER.splitlines()[0].count('|') - 1
  with pytest.raises(SystemExit, match='unknown variant'):
    variants.run('d100', 'beauty', 0, None)
