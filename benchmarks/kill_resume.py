r"""SIGKILL at random points of a real run: every resume ends identical.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/kill_resume.py \
      --dataset=lastfm --kills=10 --seed=0

Runs `python -m rec_jax.main` on the SASRec recipe twice, one after the
other: once uninterrupted (the reference), once killed with SIGKILL
`--kills` times and restarted after each kill with the same command, until
it finishes. The kill points are drawn with `--seed`: a few while a start
is still loading data or compiling, most at a drawn share of the
reference's training steps (plus up to a second, so some land inside a
checkpoint save or a validation), one after training, during the test
evaluation. Reports each kill (where it landed, the step the next start
resumed from) and whether the killed run's test metrics and best step equal
the reference's exactly. Writes benchmarks/results/kill_resume.{json,md}.
Workdirs under benchmarks/work/kill_resume/ (deleted first: the runs must
start from nothing).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

import common

REPO = common.REPO


def command(args, workdir):
  smoke = ',smoke' if args.smoke else ''
  return [sys.executable, '-m', 'rec_jax.main',
          f'--config=configs/sasrec.py:dataset={args.dataset}{smoke}',
          f'--config.seed={args.seed}', f'--workdir={workdir}']


def logged_step(workdir) -> int:
  """The newest step in the fine-tune's metrics log (0 before any)."""
  path = os.path.join(workdir, 'finetune', 'metrics.jsonl')
  step = 0
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          step = max(step, int(json.loads(line).get('step', 0)))
        except ValueError:  # a line being written.
          pass
  return step


def kill_plan(rng, kills: int, steps: int) -> list[dict]:
  """`kills` kill points: 2 at start-up, 1 in the final evaluation, the
  rest at drawn training steps (in order)."""
  n_start = min(2, kills)
  n_eval = 1 if kills > n_start else 0
  train = sorted(rng.uniform(0.02, 0.98, kills - n_start - n_eval))
  plan = [dict(kind='training', step=int(f * steps),
               jitter=float(rng.uniform(0, 1))) for f in train]
  for _ in range(n_start):  # start-ups at drawn places in the sequence.
    plan.insert(int(rng.integers(0, len(plan) + 1)),
                dict(kind='start-up', after=float(rng.uniform(1, 8))))
  if n_eval:
    plan.append(dict(kind='evaluation', jitter=float(rng.uniform(0, 1.5))))
  return plan


def attempt(cmd, log_path, workdir, point) -> dict:
  """Runs `cmd` until `point` says to kill it (None: to the end)."""
  t = time.time()
  with open(log_path, 'w', encoding='utf-8') as log:
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT)
    landed = None
    while proc.poll() is None:
      now = time.time() - t
      if point is not None and landed is None:
        if point['kind'] == 'start-up' and now >= point['after']:
          landed = 'start-up'
        elif (point['kind'] == 'training' and
              logged_step(workdir) >= point['step']):
          time.sleep(point['jitter'])
          landed = f'step >= {point["step"]}'
        elif point['kind'] == 'evaluation' and os.path.exists(
            os.path.join(workdir, 'finetune', 'summary.json')):
          time.sleep(point['jitter'])
          landed = 'after training'
        if landed:
          step = logged_step(workdir)
          proc.send_signal(signal.SIGKILL)
          proc.wait()
          return dict(point, landed=landed, seconds=round(now, 1),
                      logged_step=step, returncode=proc.returncode,
                      finished=False)
      time.sleep(0.05)
  return dict(point or {}, seconds=round(time.time() - t, 1),
              returncode=proc.returncode, finished=proc.returncode == 0)


def resumed_from(log_path):
  with open(log_path, encoding='utf-8', errors='replace') as f:
    text = f.read()
  found = re.findall(r'Resumed from \S+/(\w+)/checkpoints/(\d+)', text)
  return [f'{stage} {step}' for stage, step in found]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--dataset', default='lastfm')
  parser.add_argument('--kills', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--smoke', action='store_true',
                      help='the smoke variant (a check of this script)')
  parser.add_argument('--out', default='benchmarks/results/kill_resume.md')
  parser.add_argument('--render', action='store_true',
                      help='only rewrite --out from its JSON record')
  args = parser.parse_args()
  if args.render:
    with open(os.path.splitext(args.out)[0] + '.json', encoding='utf-8') as f:
      print(write_report(json.load(f), args.out))
    return
  base = os.path.join(common.WORK, 'kill_resume')
  shutil.rmtree(base, ignore_errors=True)
  os.makedirs(base)
  ref_dir, run_dir = os.path.join(base, 'reference'), os.path.join(base,
                                                                   'killed')

  print('+ reference run', flush=True)
  t = time.time()
  ref = attempt(command(args, ref_dir), os.path.join(base, 'reference.log'),
                ref_dir, None)
  if not ref['finished']:
    raise SystemExit(f'reference run failed ({ref["returncode"]}); see '
                     f'{base}/reference.log')
  ref_seconds = time.time() - t
  with open(os.path.join(ref_dir, 'results.json'), encoding='utf-8') as f:
    ref_results = json.load(f)
  with open(os.path.join(ref_dir, 'finetune', 'summary.json'),
            encoding='utf-8') as f:
    steps = json.load(f)['steps']

  rng = np.random.default_rng(args.seed)
  plan = kill_plan(rng, args.kills, steps)
  records = []
  t = time.time()
  for i, point in enumerate(plan + [None]):
    log = os.path.join(base, f'attempt{i:02d}.log')
    rec = attempt(command(args, run_dir), log, run_dir, point)
    rec['attempt'] = i
    rec['resumed_from'] = resumed_from(log)
    records.append(rec)
    print(json.dumps(rec), flush=True)
    if point is None and not rec['finished']:
      raise SystemExit(f'the last start failed ({rec["returncode"]}); see '
                       f'{log}')
  killed_seconds = time.time() - t
  with open(os.path.join(run_dir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)

  same_test = results['test'] == ref_results['test']
  same_valid = results['valid'] == ref_results['valid']
  same_best = results['best_step'] == ref_results['best_step']
  out = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='minutes'),
      command='python benchmarks/kill_resume.py ' + ' '.join(sys.argv[1:]),
      machine=f'{platform.processor() or platform.machine()}, '
              f'{os.cpu_count()} cores',
      dataset=args.dataset, seed=args.seed, kills=args.kills,
      reference=dict(seconds=round(ref_seconds, 1), steps=steps,
                     best_step=ref_results['best_step'],
                     test=ref_results['test']),
      killed=dict(seconds=round(killed_seconds, 1),
                  best_step=results['best_step'], test=results['test']),
      identical=dict(test=same_test, valid=same_valid, best_step=same_best),
      attempts=records)
  stem = os.path.splitext(args.out)[0]
  with open(stem + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)
  print(write_report(out, args.out))
  if not all(out['identical'].values()):
    raise SystemExit('the killed run differs from the uninterrupted one')


def write_report(out: dict, path: str) -> str:
  """The markdown table of a kill_resume JSON record, written to `path`."""
  records = out['attempts']
  rows = ['| # | kill point | landed | after (s) | logged step | next start '
          'resumed from |', '|---|---|---|---|---|---|']
  for r, nxt in zip(records, records[1:]):
    where = (f'{r["after"]:.1f} s after launch' if r['kind'] == 'start-up'
             else f'step {r["step"]}' if r['kind'] == 'training'
             else 'test evaluation')
    if nxt['resumed_from']:
      then = ', '.join(nxt['resumed_from'])
    elif nxt.get('kind') == 'start-up':
      then = '(killed in its start-up, before restoring)'
    else:
      then = 'nothing (a fresh start)'
    rows.append(f'| {r["attempt"] + 1} | {r["kind"]}: {where} | '
                f'{r["landed"]} | {r["seconds"]} | {r["logged_step"]} | '
                f'{then} |')
  ref, killed, same = out['reference'], out['killed'], out['identical']
  word = lambda ok: 'identical' if ok else 'DIFFERENT'
  text = f"""# SIGKILL and resume: {out['dataset']} SASRec

`{out['command']}` ({out['date']}, {out['machine']}; one run at a time).

The same command run uninterrupted ({ref['steps']} steps, {ref['seconds']:.0f}
s) and killed with SIGKILL {out['kills']} times, restarted after each kill
({killed['seconds']:.0f} s in all):

{chr(10).join(rows)}

| | best step | test NDCG@10 | test metrics |
|---|---|---|---|
| uninterrupted | {ref['best_step']} | {ref['test']['ndcg@10']:.6f} | |
| killed {out['kills']}x | {killed['best_step']} | {killed['test']['ndcg@10']:.6f} | {word(same['test'])} |

Every value of results.json's `test` and `valid` compared for exact float
equality: test {word(same['test'])}, validation {word(same['valid'])}, best
step {word(same['best_step'])}.
"""
  common.write_markdown(path, text)
  return text


if __name__ == '__main__':
  main()
