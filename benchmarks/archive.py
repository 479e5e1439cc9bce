r"""Archives finished runs into benchmarks/results/runs/ (committed).

Runs launched by the benchmark scripts or benchmarks/run_plan.py are
archived when they finish; this archives runs that finished some other way
(by hand, or on another machine whose workdirs were brought back):

  python benchmarks/archive.py                      # all of benchmarks/work
  python benchmarks/archive.py benchmarks/work/ablations/duorec_lastfm_s2

A directory counts as a run when it holds results.json (a finished run) or
pretrain/summary.json (a finished pretraining stage); a directory that is
neither is searched one level down.
"""

import argparse
import os
import sys

import common


def runs_under(path: str):
  """The finished run directories at or one level below `path`."""
  is_run = lambda d: (os.path.exists(os.path.join(d, 'results.json')) or
                      os.path.exists(os.path.join(d, 'pretrain',
                                                  'summary.json')))
  if is_run(path):
    return [path]
  out = []
  for name in sorted(os.listdir(path)):
    d = os.path.join(path, name)
    if os.path.isdir(d):
      out += [d] if is_run(d) else [
          os.path.join(d, n) for n in sorted(os.listdir(d))
          if os.path.isdir(os.path.join(d, n)) and is_run(os.path.join(d, n))]
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  p.add_argument('paths', nargs='*', default=[common.WORK])
  args = p.parse_args(argv)
  n = 0
  for path in args.paths:
    if not os.path.isdir(path):
      raise SystemExit(f'{path}: not a directory')
    for run in runs_under(path):
      dst = common.archive(run)
      if dst is None:
        raise SystemExit(f'{run}: outside {common.WORK}; the archive keeps '
                         'runs of benchmarks/work/ only')
      print(f'{run} -> {os.path.relpath(dst, common.REPO)}')
      n += 1
  print(f'archived {n} runs')
  return 0


if __name__ == '__main__':
  sys.exit(main())
