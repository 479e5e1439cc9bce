r"""Side by side: rec_jax's SASRec and RecBole 1.2.1's SASRec on Beauty.

Same file, same model (2 layers, hidden 64, 2 heads, FFN 256, max length 50),
full-softmax cross-entropy, Adam 1e-3; an epoch is one pass over every
training target (131,413 on Beauty). Both run in this one script, one after
the other, on the same machine; the report is the ratio of training seconds
per epoch (evaluation excluded), plus peak memory.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/speed_vs_recbole.py \
      --epochs=3 --out=benchmarks/results/speed_vs_recbole.md

RecBole runs in its own venv (`bash benchmarks/recbole/setup_recbole.sh`,
made on first use) because it pins numpy<2.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

import common

REPO = common.REPO
RECBOLE_PY = os.path.join(REPO, 'benchmarks', '.venv-recbole', 'bin',
                          'python')


def peak_rss_mb_children():
  return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run_rec_jax(epochs, batch_rows, workroot):
  workdir = os.path.join(workroot, f'rec_jax_b{batch_rows}_e{epochs}')
  cmd = [sys.executable, '-m', 'rec_jax.main',
         '--config=configs/sasrec.py:dataset=beauty', f'--workdir={workdir}',
         f'--config.finetune.num_epochs={epochs}',
         f'--config.finetune.batch_size={batch_rows}',
         '--config.finetune.patience=1000']
  print('+', ' '.join(cmd), flush=True)
  # /usr/bin/time gives this child's own peak RSS.
  proc = subprocess.run(['/usr/bin/time', '-f', '%M'] + cmd, cwd=REPO,
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit('rec_jax run failed')
  peak_kb = int(proc.stderr.strip().splitlines()[-1])
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    res = json.load(f)
  evals = [json.loads(l) for l in open(
      os.path.join(workdir, 'finetune', 'metrics.jsonl'), encoding='utf-8')]
  return dict(seconds_per_epoch=res['seconds_per_epoch'],
              epochs=res['epochs'], test=res['test'],
              peak_rss_mb=peak_kb / 1024, batch_rows=batch_rows,
              steps_per_s=[r['train/steps_per_s'] for r in evals
                           if 'train/steps_per_s' in r][-1])


def run_recbole(epochs, workroot):
  if not os.path.exists(RECBOLE_PY):
    subprocess.run(['bash', os.path.join(REPO, 'benchmarks', 'recbole',
                                         'setup_recbole.sh')], check=True)
  out = os.path.join(workroot, f'recbole_e{epochs}.json')
  cmd = [RECBOLE_PY, os.path.join(REPO, 'benchmarks', 'recbole',
                                  'run_recbole_sasrec.py'),
         f'--epochs={epochs}', f'--work_dir={workroot}/recbole',
         f'--out={out}']
  print('+', ' '.join(cmd), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  with open(out, encoding='utf-8') as f:
    return json.load(f)


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--epochs', type=int, default=3)
  p.add_argument('--batch_rows', type=int, default=16)
  p.add_argument('--workroot', default=os.path.join(REPO, 'benchmarks',
                                                    'work', 'speed'))
  p.add_argument('--out', default=os.path.join(
      REPO, 'benchmarks', 'results', 'speed_vs_recbole.md'))
  p.add_argument('--skip_recbole_json', default='',
                 help='reuse a RecBole result JSON instead of running it')
  args = p.parse_args()
  os.makedirs(args.workroot, exist_ok=True)
  t = time.time()
  ours = run_rec_jax(args.epochs, args.batch_rows, args.workroot)
  if args.skip_recbole_json:
    with open(args.skip_recbole_json, encoding='utf-8') as f:
      theirs = json.load(f)
  else:
    theirs = run_recbole(args.epochs, args.workroot)
  ratio = theirs['median_seconds_per_epoch'] / ours['seconds_per_epoch']
  cmd = ' '.join(['python', 'benchmarks/speed_vs_recbole.py'] + sys.argv[1:])
  text = f"""# SASRec training speed: rec_jax vs RecBole 1.2.1 (Beauty)

Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPU
cores, one run after the other in one script ({time.time() - t:.0f} s):

```
REC_JAX_DATA_DIR=../shared/data {cmd}
```

Same model: 2 layers, hidden 64, 2 heads, FFN 256, max length 50, full
softmax over 12,101 items, Adam 1e-3. One epoch = every training target once
(RecBole: {theirs.get('train_instances', '?')} prefix instances, batch 256;
rec_jax: the same targets packed {ours['batch_rows']} rows x 50 positions
per step).

| | s / epoch (train only) | epochs | peak RSS MB | test NDCG@10 after these epochs (history excluded) |
|---|---|---|---|---|
| RecBole 1.2.1 (torch {theirs.get('torch_version', '?')}) | {theirs['median_seconds_per_epoch']:.1f} | {theirs['epochs']} | {theirs['peak_rss_mb']:.0f} | {theirs['test_history_excluded']['ndcg@10']:.4f} |
| rec_jax | {ours['seconds_per_epoch']:.1f} | {ours['epochs']} | {ours['peak_rss_mb']:.0f} | {ours['test']['ndcg@10']:.4f} |

**rec_jax trains {ratio:.1f}x as many epochs per second as RecBole.**
"""
  with open(args.out, 'w', encoding='utf-8') as f:
    f.write(text)
  with open(args.out.replace('.md', '.json'), 'w', encoding='utf-8') as f:
    json.dump(dict(rec_jax=ours, recbole=theirs, ratio=ratio), f, indent=2)
  print(text)


if __name__ == '__main__':
  main()
