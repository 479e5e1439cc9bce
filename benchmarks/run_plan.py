r"""Runs a plan of `rec_jax.main` runs, several at once, before a deadline.

A benchmark script run with $REC_JAX_BENCH_PLAN=FILE appends each run it
would start to FILE (JSON lines: workdir, args) instead of starting it. This
script runs those runs on the machine at hand, `--parallel` at a time (an
accelerator has room for many of these small models), in the plan's order:
a run that reads another run's workdir (`--config.init_from.path=` under
it) waits for that run and is skipped if it fails. A run whose workdir
another process holds (rec_jax.run_lock: started by hand, or by another
plan) is not started a second time: the plan waits for that process and
counts the run as finished elsewhere when it leaves its results behind (as
pending again when it does not); while it waits, that run takes one of the
`--parallel` slots, since it shares the machine all the same. Two plans
that share runs may start the same one at the same moment: the one that
loses its run lock waits for the other as above, and counts no failure.
No run starts with less than `--min_left` seconds to the deadline; at the
deadline the runs still going are stopped (each resumes from its last
checkpoint when started again). Afterwards the same benchmark command, with
--only_finished, tabulates what finished.

  REC_JAX_BENCH_PLAN=/tmp/plan.jsonl python benchmarks/baselines.py \
      --datasets=toys --seeds=0,1,2 --out=/tmp/unused
  python benchmarks/run_plan.py --plan=/tmp/plan.jsonl --parallel=8 \
      --deadline=480 --summary=/tmp/plan_summary.json
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position
from rec_jax import run_lock  # pylint: disable=wrong-import-position


def read_plan(paths):
  """The plan's runs in order, each workdir once (its first entry), with
  `after`: the indices of earlier runs whose workdir it reads."""
  jobs, seen = [], {}
  for path in paths:
    with open(path, encoding='utf-8') as f:
      for n, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          job = json.loads(line)
          workdir, args = job['workdir'], list(job['args'])
        except (ValueError, KeyError, TypeError) as e:
          raise SystemExit(f'{path}:{n}: not a plan entry '
                           f'({{"workdir": ..., "args": [...]}}): {e}')
        if workdir in seen:
          continue
        seen[workdir] = len(jobs)
        jobs.append(dict(workdir=workdir, args=args))
  # Flag values as absolute paths (main runs from the repository root, so a
  # relative --config.init_from.path is relative to it).
  value = lambda a: os.path.normpath(os.path.join(common.REPO,
                                                  a.split('=', 1)[-1]))
  for i, job in enumerate(jobs):
    job['after'] = sorted(
        j for j, other in enumerate(jobs[:i])
        if any(value(a) == os.path.normpath(other['workdir']) or
               value(a).startswith(os.path.normpath(other['workdir']) + os.sep)
               for a in job['args']))
  return jobs


def finished(job) -> bool:
  stage_pretrain = '--stage=pretrain' in job['args']
  return os.path.exists(os.path.join(
      job['workdir'], 'pretrain/summary.json' if stage_pretrain
      else 'results.json'))


DONE = ('done', 'finished before', 'finished elsewhere')


def watch_elsewhere(jobs, t0) -> None:
  """Pending runs whose workdir another process holds become 'running
  elsewhere'; when that process lets go they become 'finished elsewhere'
  (their results are there) or pending again."""
  for job in jobs:
    if job['status'] not in ('pending', 'running elsewhere'):
      continue
    busy = run_lock.in_use(job['workdir'])
    if busy and job['status'] == 'pending':
      job['status'] = 'running elsewhere'
      print(f'[{time.time() - t0:6.0f} s] another process is running '
            f'{job["workdir"]}; waiting for it', flush=True)
    elif not busy and job['status'] == 'running elsewhere':
      job['status'] = 'finished elsewhere' if finished(job) else 'pending'
      print(f'[{time.time() - t0:6.0f} s] {job["status"]}: {job["workdir"]}',
            flush=True)


def status_counts(jobs) -> dict:
  counts = {}
  for j in jobs:
    counts[j['status']] = counts.get(j['status'], 0) + 1
  return counts


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
  p.add_argument('--plan', action='append', required=True,
                 help='JSON-lines plan file (repeatable; runs in order)')
  p.add_argument('--parallel', type=int, default=1)
  p.add_argument('--deadline', type=float, default=float('inf'),
                 help='seconds from now after which running runs are stopped')
  p.add_argument('--min_left', type=float, default=60.0,
                 help='start no run with less than this many seconds left')
  p.add_argument('--summary', default='',
                 help='write each run\'s outcome here (JSON)')
  args = p.parse_args()
  if args.parallel < 1:
    raise SystemExit(f'--parallel={args.parallel}: must be >= 1')
  jobs = read_plan(args.plan)
  t0 = time.time()
  lock = threading.Lock()
  procs = {}
  for job in jobs:
    job['status'] = 'finished before' if finished(job) else 'pending'

  def run(i):
    job = jobs[i]
    os.makedirs(os.path.dirname(job['workdir']), exist_ok=True)
    start = time.time()
    with open(job['workdir'] + '.log', 'a', encoding='utf-8') as log:
      rc = common.launch(
          common.main_command(job['args'], job['workdir']), stdout=log,
          on_start=lambda proc: procs.__setitem__(i, proc))
    with lock:
      procs.pop(i, None)
      job['seconds'] = round(time.time() - start, 1)
      job['rc'] = rc
      if rc != 0 and run_lock.in_use(job['workdir']):
        # Another process took the workdir between the check and the start
        # (two plans that share runs): this start lost the lock; wait for
        # the winner as for any run held elsewhere.
        job['status'] = 'running elsewhere'
        print(f'[{time.time() - t0:6.0f} s] another process took '
              f'{job["workdir"]} first; waiting for it', flush=True)
        return
      if job['status'] != 'stopped at deadline':
        job['status'] = 'done' if rc == 0 else 'failed'
      if rc == 0 and os.path.exists(os.path.join(job['workdir'],
                                                 'results.json')):
        with open(os.path.join(job['workdir'], 'results.json'),
                  encoding='utf-8') as f:
          test = json.load(f).get('test', {})
        job['test_ndcg@10'] = test.get('ndcg@10')
    print(f'[{time.time() - t0:6.0f} s] {job["status"]} rc={rc} '
          f'{job["seconds"]:.0f} s {job["workdir"]}'
          + (f' test NDCG@10 {job["test_ndcg@10"]:.4f}'
             if job.get('test_ndcg@10') is not None else ''), flush=True)

  threads = []
  last_report = 0.0
  while True:
    with lock:
      left = args.deadline - (time.time() - t0)
      watch_elsewhere(jobs, t0)
      for job in jobs:
        if job['status'] == 'pending' and any(
            jobs[j]['status'] in ('failed', 'skipped', 'stopped at deadline')
            for j in job['after']):
          job['status'] = 'skipped'
      # A run of this plan that another process holds takes a slot too:
      # it shares the machine all the same.
      busy = sum(j['status'] in ('running', 'running elsewhere')
                 for j in jobs)
      ready = [i for i, j in enumerate(jobs) if j['status'] == 'pending' and
               all(jobs[k]['status'] in DONE for k in j['after'])]
      if left >= args.min_left:
        for i in ready[:max(args.parallel - busy, 0)]:
          jobs[i]['status'] = 'running'
          print(f'[{time.time() - t0:6.0f} s] start '
                f'{" ".join(common.main_command(jobs[i]["args"], jobs[i]["workdir"])[3:])}',
                flush=True)
          threads.append(threading.Thread(target=run, args=(i,)))
          threads[-1].start()
      running = sum(j['status'] == 'running' for j in jobs)
      waiting = sum(j['status'] in ('pending', 'running elsewhere')
                    for j in jobs)
    if not running and (not waiting or left < args.min_left):
      break
    if left <= 0:
      with lock:
        for i, proc in list(procs.items()):
          jobs[i]['status'] = 'stopped at deadline'
          proc.send_signal(signal.SIGTERM)
      for t in threads:
        t.join(timeout=30)
      with lock:
        for proc in procs.values():
          proc.kill()
      break
    if time.time() - last_report > 60:
      last_report = time.time()
      print(f'[{time.time() - t0:6.0f} s] {status_counts(jobs)}' + (
          f'; {max(left, 0):.0f} s to the deadline'
          if left != float('inf') else ''), flush=True)
    time.sleep(1)
  for t in threads:
    t.join(timeout=10)
  print(f'plan over after {time.time() - t0:.0f} s: {status_counts(jobs)}',
        flush=True)
  if args.summary:
    with open(args.summary, 'w', encoding='utf-8') as f:
      json.dump(dict(seconds=time.time() - t0, parallel=args.parallel,
                     runs=jobs), f, indent=2)
  return 0 if not any(j['status'] == 'failed' for j in jobs) else 1


if __name__ == '__main__':
  sys.exit(main())
