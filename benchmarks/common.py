"""Helpers the benchmark scripts share: the repository root, running
rec_jax.main once per workdir, the archive of finished runs, mean ± std
formatting and a headless matplotlib.

Workdirs (benchmarks/work/, ignored by git) hold checkpoints and vanish
with the machine. Every run that finishes under benchmarks/work/ is also
archived in benchmarks/results/runs/ (committed): its results.json, the
config and summary of each stage and a thinned metrics log, a few tens of
KB. The tables read a run from its workdir, else from the archive, so a
later session, another machine or a fresh clone extends a table instead of
starting it again; a run's config is checked against the benchmark's
command either way.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
# Before numpy and JAX start their threads: rec_jax.hostmem's malloc
# setting reaches only the heaps created after it (every benchmark script
# imports this module first).
import rec_jax  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

# When set, run_main (and every other launch of rec_jax.main here) appends
# the run to this JSON-lines file instead of running it, for
# benchmarks/run_plan.py to run many at once elsewhere (an accelerator).
PLAN_ENV = 'REC_JAX_BENCH_PLAN'
WORK = os.path.join(REPO, 'benchmarks', 'work')
ARCHIVE = os.path.join(REPO, 'benchmarks', 'results', 'runs')
# What the archive keeps of a finished workdir (no checkpoints, no
# predictions, no event files).
ARCHIVED = ('results.json', 'pretrain/config.json', 'pretrain/summary.json',
            'finetune/config.json', 'finetune/summary.json')
METRIC_LOGS = ('pretrain/metrics.jsonl', 'finetune/metrics.jsonl')
MAX_TRAIN_LINES = 100  # of a metrics log's training lines (all eval lines).


def archive_dir(workdir: str):
  """Where the archive keeps the run in `workdir`: the same path under
  ARCHIVE as the workdir has under WORK; None outside WORK."""
  rel = os.path.relpath(os.path.realpath(workdir), os.path.realpath(WORK))
  if rel == '.' or rel.startswith('..'):
    return None
  return os.path.join(ARCHIVE, rel)


def _thin_metrics(src: str, dst: str) -> None:
  """Copies a metrics.jsonl keeping every evaluation line and at most
  MAX_TRAIN_LINES evenly spaced training lines (the learning curve)."""
  with open(src, encoding='utf-8') as f:
    lines = [l for l in f if l.strip()]
  train = [i for i, l in enumerate(lines) if '"eval/' not in l]
  every = max(1, -(-len(train) // MAX_TRAIN_LINES))
  keep = set(train[::every]) | {train[-1]} if train else set()
  with open(dst, 'w', encoding='utf-8') as f:
    f.writelines(l for i, l in enumerate(lines)
                 if i in keep or '"eval/' in l)


def archive(workdir: str):
  """Copies the small files of a finished run into the archive (replacing
  an earlier copy of that run); returns the archive path, or None when
  the workdir lies outside WORK."""
  dst = archive_dir(workdir)
  if dst is None:
    return None
  if os.path.isdir(dst):
    shutil.rmtree(dst)
  for name in ARCHIVED + METRIC_LOGS:
    src = os.path.join(workdir, name)
    if not os.path.exists(src):
      continue
    os.makedirs(os.path.dirname(os.path.join(dst, name)), exist_ok=True)
    if name in METRIC_LOGS:
      _thin_metrics(src, os.path.join(dst, name))
    else:
      shutil.copyfile(src, os.path.join(dst, name))
  return dst


def finished_dir(workdir: str, name: str = 'results.json'):
  """The directory holding the finished run of `workdir` (its file `name`):
  the workdir itself, else its archived copy; None when neither has it."""
  for d in (workdir, archive_dir(workdir)):
    if d and os.path.exists(os.path.join(d, name)):
      return d
  return None


def _run_path(path):
  """A checkpoint path comparable across clones and machines: the part
  under benchmarks/work/; None for a path elsewhere."""
  if not path:
    return None
  mark = os.sep + os.path.join('benchmarks', 'work') + os.sep
  real = os.path.realpath(path)
  for p in (path, real):
    if mark in p:
      return p.split(mark, 1)[1]
  rel = os.path.relpath(real, os.path.realpath(WORK))
  return None if rel.startswith('..') else rel


def plan(args, workdir: str) -> bool:
  """Appends `rec_jax.main --workdir=workdir *args` to the plan file named by
  $REC_JAX_BENCH_PLAN; False (nothing done) when that is unset."""
  path = os.environ.get(PLAN_ENV)
  if not path:
    return False
  with open(path, 'a', encoding='utf-8') as f:
    f.write(json.dumps(dict(workdir=os.path.abspath(workdir),
                            args=list(args))) + '\n')
  return True


def mean_std(values, digits: int = 4) -> str:
  """'m' for one value, 'm ± s' (sample std) for several."""
  v = np.asarray(values, np.float64)
  if v.size == 1:
    return f'{v.reshape(-1)[0]:.{digits}f}'
  return f'{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}'


def hand_notes(path: str) -> str:
  """The hand-written notes of the markdown table at `path`: from its first
  line that starts with 'Notes' to the end ('' when none, or no file)."""
  if not os.path.exists(path):
    return ''
  with open(path, encoding='utf-8') as f:
    text = f.read()
  m = re.search(r'^Notes', text, re.M)
  return text[m.start():].rstrip() + '\n' if m else ''


def write_markdown(path: str, text: str) -> None:
  """Writes a generated table to `path`, keeping the hand-written notes
  (see hand_notes) the file already has below the new text: a session
  that re-tabulates must not drop what an earlier one wrote about the
  runs. Says so, since the notes may need updating for the new rows."""
  notes = hand_notes(path)
  if notes and not re.search(r'^Notes', text, re.M):
    text = text.rstrip() + '\n\n' + notes
    print(f'{path}: kept its hand-written notes; check them against the '
          'new table.', flush=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def pyplot():
  """matplotlib.pyplot with the file-only Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def dataset_panels(datasets, height: float = 3.0):
  """A figure of one panel per dataset (sorted), side by side: (fig,
  [(axes, dataset), ...])."""
  datasets = sorted(set(datasets))
  fig, axes = pyplot().subplots(1, len(datasets),
                                figsize=(4 * len(datasets), height),
                                squeeze=False)
  return fig, list(zip(axes[0], datasets))


def finish_panel(ax, title: str, xlabel: str, ylabel: str) -> None:
  """Axis labels, title and a small legend of one dataset panel."""
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)


def _peak_rss_mb(pid: int) -> float:
  try:
    with open(f'/proc/{pid}/status', encoding='utf-8') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return 0.0


def config_of(args):
  """The config `rec_jax.main` would build from these command-line args
  (`--config=FILE:ARG` and `--config.KEY=VALUE`; other flags are ignored),
  parsed here without starting JAX; values set from the training data are
  set as main sets them (the dataset is loaded once per process)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  if REPO not in sys.path:
    sys.path.insert(0, REPO)  # configs import rec_jax.config_lib.
  argv = []
  for a in args:
    if a.startswith('--config='):
      path = a[len('--config='):]
      argv.append('--config=' + (path if os.path.isabs(path) else
                                 os.path.join(REPO, path)))
    elif a.startswith('--config.'):
      argv.append(a)
  argv = ['main', *argv]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  fv(argv)
  return _resolve_from_data(fv.config)


_RESOLVED = {}  # data section (JSON) + seed -> (train, num_items).


def _resolve_from_data(config):
  """The config with the values main sets from the training data
  (config_lib.FROM_DATA: dropout, pretraining length), loading each
  dataset once per process."""
  from rec_jax import config_lib  # pylint: disable=g-import-not-at-top
  if not config_lib.from_data_keys(config):
    return config
  key = config.data.to_json_best_effort(sort_keys=True) + (
      f'seed={config.seed}' if config.data.cold_fraction else '')
  if key not in _RESOLVED:
    from rec_jax import trainer  # pylint: disable=g-import-not-at-top
    ds, split = trainer.load_data(config)
    _RESOLVED[key] = (split.train, ds.num_items)
  return config_lib.resolve_from_data(config, *_RESOLVED[key])


def check_finished(args, workdir: str, allow=()) -> None:
  """Raises ValueError when the finished run in workdir (or its archived
  copy, see finished_dir) was made with
  another config than `args` give (a renamed recipe or a changed default
  would otherwise be tabulated under the new name with the old numbers);
  the check main makes before resuming a stage. The fine-tune may take its
  encoder from elsewhere than this command says (a workdir shared through a
  link): what must match is the checkpoint it started from. `allow`: globs
  of further keys that may differ (see main --allow_changed)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rec_jax import saved_config  # pylint: disable=g-import-not-at-top
  config = config_of(args)
  run_dir = finished_dir(workdir)
  if run_dir is None:
    raise FileNotFoundError(f'{workdir}: no finished run there or in the '
                            f'archive ({archive_dir(workdir)})')
  pretrains = 'pretrain' in config and bool(config.pretrain.enabled)
  stages = [('finetune', ('pretrain.*', 'init_from.path'))]
  if pretrains:
    stages.append(('pretrain', ()))
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # keys newer code added: expected.
  try:
    for stage, free in stages:
      saved_config.check_resume(os.path.join(run_dir, stage), config, stage,
                              (*free, *allow), finished=True)
  except ValueError as e:
    raise ValueError(f'{run_dir}/results.json is from another config '
                     f'than this benchmark asks for: {e}') from None
  finally:
    logging.set_verbosity(verbosity)
  with open(os.path.join(run_dir, 'results.json'), encoding='utf-8') as f:
    started = json.load(f).get('init_from')
  if config.init_from.path:
    want = config.init_from.path
  elif pretrains:
    want = os.path.join(workdir, 'pretrain')
  else:
    want = None
  real = lambda p: os.path.realpath(p) if p else None
  if real(want) == real(started) or (
      want and started and real(started).startswith(real(want) + os.sep)):
    return
  # Archived runs (or runs made in another clone) name their checkpoint
  # where it was: compare the part under benchmarks/work/.
  want_run, started_run = _run_path(want), _run_path(started)
  if want_run and started_run:
    if (want_run == started_run or
        started_run.startswith(want_run + os.sep)):
      return
  elif want and started and not os.path.exists(started):
    print(f'warning: {workdir} fine-tuned from {started}, which no longer '
          f'exists (a run moved here?); cannot check it is {want}.',
          file=sys.stderr)
    return
  raise ValueError(f'{run_dir}/results.json fine-tuned from {started}; '
                   f'this benchmark asks for {want or "no checkpoint"}.')


# Runs from before results.json recorded its machine all ran on the 2-core
# x86_64 CPU machine of this repository's first tables.
EARLY_HARDWARE = '1x cpu (2 cores)'


def hardware(results) -> str:
  """The machines a group of runs trained on (results.json's `hardware`),
  'cpu (2 cores)' or 'NVIDIA H200' style, with ' + ' between kinds."""
  kinds = sorted({r.get('hardware') or EARLY_HARDWARE for r in results})
  return ' + '.join(k.split('x ', 1)[-1] if k.startswith('1x ') else k
                    for k in kinds)


def planning() -> bool:
  return bool(os.environ.get(PLAN_ENV))


def exit_if_planning() -> None:
  """Ends a benchmark script that only planned its runs (nothing to
  tabulate yet)."""
  if planning():
    print(f'planned the unfinished runs into ${PLAN_ENV}='
          f'{os.environ[PLAN_ENV]}; run them with benchmarks/run_plan.py, '
          'then tabulate with --only_finished.')
    sys.exit(0)


def run_main(args, workdir: str, *, only_finished: bool = False,
             allow=()):
  """`python -m rec_jax.main --workdir=workdir *args` unless workdir holds a
  results.json already, made with the same config (an interrupted run
  resumes); returns that results.json, with the run's wall seconds and peak
  RSS added when it ran here, or None when only_finished and the run has not
  finished. `allow`: config keys a finished run may differ in."""
  results = os.path.join(workdir, 'results.json')
  if (run_dir := finished_dir(workdir)) is not None:
    check_finished(args, workdir, allow)
    with open(os.path.join(run_dir, 'results.json'), encoding='utf-8') as f:
      return json.load(f)
  if only_finished or plan(args, workdir):
    return None
  cmd = main_command(args, workdir)
  print('+', ' '.join(cmd), flush=True)
  rc = launch(cmd)
  if rc:
    raise SystemExit(f'run failed ({rc}): {" ".join(cmd)}')
  with open(results, encoding='utf-8') as f:
    return json.load(f)


def main_command(args, workdir: str) -> list[str]:
  return [sys.executable, '-m', 'rec_jax.main', f'--workdir={workdir}',
          *args]


def launch(cmd, *, stdout=None, on_start=None) -> int:
  """Runs `cmd` (a main_command) from the repository root; returns its exit
  status. When it wrote a results.json (a finished run), adds the run's
  wall seconds and peak resident memory to it; a run that finished (or a
  pretraining stage) is archived (see archive). `on_start(proc)` is called
  with the started process (to stop it from elsewhere)."""
  workdir = next(a.split('=', 1)[1] for a in cmd
                 if a.startswith('--workdir='))
  results = os.path.join(workdir, 'results.json')
  t = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=stdout,
                          stderr=subprocess.STDOUT if stdout else None)
  if on_start:
    on_start(proc)
  peak = 0.0
  while proc.poll() is None:
    peak = max(peak, _peak_rss_mb(proc.pid))
    time.sleep(0.5)
  if proc.returncode == 0 and os.path.exists(results):
    with open(results, encoding='utf-8') as f:
      out = json.load(f)
    out.update(wall_seconds=time.time() - t, peak_rss_mb=peak)
    with open(results, 'w', encoding='utf-8') as f:
      json.dump(out, f, indent=2)
  if proc.returncode == 0 and (
      os.path.exists(results) or
      os.path.exists(os.path.join(workdir, 'pretrain', 'summary.json'))):
    archive(workdir)
  return proc.returncode
