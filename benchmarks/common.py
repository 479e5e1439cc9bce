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


def run_main(args, workdir: str, *, only_finished: bool = False):
  """`python -m rec_jax.main --workdir=workdir *args` unless workdir holds a
  results.json already (an interrupted run resumes); returns that
  results.json, with the run's wall seconds and peak RSS added when it ran
  here, or None when only_finished and the run has not finished."""
  results = os.path.join(workdir, 'results.json')
  if os.path.exists(results):
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
