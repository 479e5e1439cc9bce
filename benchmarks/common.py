"""Helpers the benchmark scripts share: the repository root, running
rec_jax.main once per workdir, mean ± std formatting and a headless
matplotlib."""

import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mean_std(values, digits: int = 4) -> str:
  """'m' for one value, 'm ± s' (sample std) for several."""
  v = np.asarray(values, np.float64)
  if v.size == 1:
    return f'{v.reshape(-1)[0]:.{digits}f}'
  return f'{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}'


def pyplot():
  """matplotlib.pyplot with the file-only Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


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
  parsed here without starting JAX."""
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
  return fv.config


def check_finished(args, workdir: str, allow=()) -> None:
  """Raises ValueError when the finished run in workdir was made with
  another config than `args` give (a renamed recipe or a changed default
  would otherwise be tabulated under the new name with the old numbers);
  the check main makes before resuming a stage. The fine-tune may take its
  encoder from elsewhere than this command says (a workdir shared through a
  link): what must match is the checkpoint it started from. `allow`: globs
  of further keys that may differ (see main --allow_changed)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  from rec_jax import config_lib  # pylint: disable=g-import-not-at-top
  config = config_of(args)
  pretrains = 'pretrain' in config and bool(config.pretrain.enabled)
  stages = [('finetune', ('pretrain.*', 'init_from.path'))]
  if pretrains:
    stages.append(('pretrain', ()))
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # keys newer code added: expected.
  try:
    for stage, free in stages:
      config_lib.check_resume(os.path.join(workdir, stage), config, stage,
                              (*free, *allow))
  except ValueError as e:
    raise ValueError(f'{workdir}/results.json is from another config '
                     f'than this benchmark asks for: {e}') from None
  finally:
    logging.set_verbosity(verbosity)
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
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
  if want and started and not os.path.exists(started):
    print(f'warning: {workdir} fine-tuned from {started}, which no longer '
          f'exists (a run moved here?); cannot check it is {want}.',
          file=sys.stderr)
  else:
    raise ValueError(f'{workdir}/results.json fine-tuned from {started}; '
                     f'this benchmark asks for {want or "no checkpoint"}.')


def run_main(args, workdir: str, *, only_finished: bool = False,
             allow=()):
  """`python -m rec_jax.main --workdir=workdir *args` unless workdir holds a
  results.json already, made with the same config (an interrupted run
  resumes); returns that results.json, with the run's wall seconds and peak
  RSS added when it ran here, or None when only_finished and the run has not
  finished. `allow`: config keys a finished run may differ in."""
  results = os.path.join(workdir, 'results.json')
  if os.path.exists(results):
    check_finished(args, workdir, allow)
    with open(results, encoding='utf-8') as f:
      return json.load(f)
  if only_finished:
    return None
  cmd = [sys.executable, '-m', 'rec_jax.main', f'--workdir={workdir}',
         *args]
  print('+', ' '.join(cmd), flush=True)
  t = time.time()
  proc = subprocess.Popen(cmd, cwd=REPO)
  peak = 0.0
  while proc.poll() is None:
    peak = max(peak, _peak_rss_mb(proc.pid))
    time.sleep(0.5)
  if proc.returncode:
    raise SystemExit(f'run failed ({proc.returncode}): {" ".join(cmd)}')
  with open(results, encoding='utf-8') as f:
    out = json.load(f)
  out.update(wall_seconds=time.time() - t, peak_rss_mb=peak)
  with open(results, 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  return out
