r"""Bounded load test of `rec_jax.serve` on loopback.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/serve_load.py \
      --workdir=benchmarks/work/baselines/sasrec_beauty_s0

Starts the service on a free loopback port (exporting the workdir first
when it has no artifact), then, from this process, with keep-alive HTTP/1.1
connections and real test histories of the workdir's dataset:
  1. batch 1: one client, one request at a time: p50 / p99 latency;
  2. 32 concurrent clients for --seconds: throughput and latency.
Latency is measured by the client, request written to response read.
Writes benchmarks/results/serve_load.{json,md}.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

import common

REPO = common.REPO
sys.path.insert(0, REPO)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def wait_healthy(url: str, proc, timeout: float = 300) -> dict:
  end = time.time() + timeout
  while time.time() < end:
    if proc.poll() is not None:
      raise SystemExit(f'service exited with {proc.returncode}')
    try:
      with urllib.request.urlopen(url + '/healthz', timeout=2) as r:
        return json.load(r)
    except OSError:
      time.sleep(0.5)
  raise SystemExit('service did not become healthy')


async def client(port: int, bodies, latencies, *, until=None, count=None,
                 errors=None):
  """Sends bodies in turn over one connection until `until` (monotonic
  time) or `count` requests; appends each latency in seconds."""
  reader, writer = await asyncio.open_connection('127.0.0.1', port)
  i = 0
  try:
    while True:
      if count is not None and i >= count:
        break
      if until is not None and time.monotonic() >= until:
        break
      body = bodies[i % len(bodies)]
      i += 1
      head = (b'POST /recommend HTTP/1.1\r\nHost: loopback\r\n'
              b'Content-Type: application/json\r\n'
              b'Content-Length: %d\r\n\r\n' % len(body))
      t = time.perf_counter()
      writer.write(head + body)
      header = await reader.readuntil(b'\r\n\r\n')
      length = 0
      for line in header.split(b'\r\n'):
        if line.lower().startswith(b'content-length:'):
          length = int(line.split(b':')[1])
      await reader.readexactly(length)
      latencies.append(time.perf_counter() - t)
      if errors is not None and not header.startswith(b'HTTP/1.1 200'):
        errors.append(header.split(b'\r\n')[0].decode())
  finally:
    writer.close()


def summary(lat, seconds=None) -> dict:
  lat = np.asarray(lat) * 1000
  out = dict(requests=int(len(lat)), p50_ms=float(np.percentile(lat, 50)),
             p90_ms=float(np.percentile(lat, 90)),
             p99_ms=float(np.percentile(lat, 99)),
             mean_ms=float(lat.mean()), max_ms=float(lat.max()))
  if seconds:
    out['requests_per_s'] = len(lat) / seconds
  return out


async def run_load(port, bodies, args):
  # Warm the connection path (the model is compiled at start-up).
  await client(port, bodies, [], count=200)
  lat = []
  errors = []
  await client(port, bodies, lat, count=args.single_requests, errors=errors)
  single = summary(lat)
  out = {'batch_1': single}
  for clients in args.clients:
    lat = []
    t = time.perf_counter()
    until = time.monotonic() + args.seconds
    await asyncio.gather(*[
        client(port, bodies[c::clients] or bodies, lat, until=until,
               errors=errors)
        for c in range(clients)])
    out[f'clients_{clients}'] = summary(lat, time.perf_counter() - t)
  out['errors'] = len(errors)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join(
      REPO, 'benchmarks/work/baselines/sasrec_beauty_s0'))
  parser.add_argument('--single_requests', type=int, default=3000)
  parser.add_argument('--clients', default='32',
                      type=lambda s: [int(x) for x in s.split(',')])
  parser.add_argument('--seconds', type=float, default=15.0)
  parser.add_argument('--k', type=int, default=10)
  parser.add_argument('--batch_window_ms', type=float, default=0.0)
  parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks',
                                                    'results', 'serve_load'))
  args = parser.parse_args()

  from rec_jax import export  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top
  config = export.load_config(export.stage_dir(args.workdir))
  _, split = trainer.load_data(config)
  rng = np.random.default_rng(0)
  users = rng.permutation(len(split.test_history))[:5000]
  bodies = [json.dumps({'history': split.test_history[u].tolist(),
                        'k': args.k, 'exclude_seen': True}).encode()
            for u in users]
  path = os.path.join(os.path.abspath(args.workdir), 'export')
  if not os.path.exists(os.path.join(path, 'manifest.json')):
    path = export.export(args.workdir)
  port = free_port()
  proc = subprocess.Popen(
      [sys.executable, '-m', 'rec_jax.serve', f'--artifact={path}',
       f'--port={port}', f'--batch_window_ms={args.batch_window_ms}'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    health = wait_healthy(f'http://127.0.0.1:{port}', proc)
    try:
      import uvloop  # pylint: disable=g-import-not-at-top
      uvloop.install()
    except ImportError:
      pass
    results = asyncio.run(run_load(port, bodies, args))
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics') as r:
      batch_lines = [l for l in r.read().decode().splitlines()
                     if l.startswith('rec_jax_batch_size_')]
  finally:
    proc.terminate()
    proc.wait(30)
  with open(os.path.join(path, 'manifest.json'), encoding='utf-8') as f:
    manifest = json.load(f)
  record = dict(
      date=datetime.date.today().isoformat(),
      command='python benchmarks/serve_load.py ' + ' '.join(sys.argv[1:]),
      machine=f'{platform.processor() or platform.machine()}, '
              f'{os.cpu_count()} cores (client and server on the same '
              'machine)',
      model=dict(dataset=manifest['dataset'], num_items=manifest['num_items'],
                 max_len=manifest['max_len'],
                 num_params=manifest['num_params'], version=health['model']),
      k=args.k, batch_window_ms=args.batch_window_ms, **results,
      batch_size_histogram=batch_lines)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=2)
  rows = [('batch 1 (one client)', results['batch_1'])] + [
      (f'{c} concurrent clients', results[f'clients_{c}'])
      for c in args.clients]
  lines = [f'# Serving load test ({record["date"]})', '',
           f'`{record["command"]}` on {record["machine"]}.', '',
           f'Model: {manifest["dataset"]} SASRec, {manifest["num_items"]} '
           f'items, {manifest["num_params"]:,} parameters, top-{args.k} with '
           f'history exclusion; batching window {args.batch_window_ms} ms.',
           '', '| load | requests | req/s | p50 ms | p90 ms | p99 ms |',
           '|---|---:|---:|---:|---:|---:|']
  for name, r in rows:
    rps = f'{r["requests_per_s"]:.0f}' if 'requests_per_s' in r else '-'
    lines.append(f'| {name} | {r["requests"]} | {rps} | {r["p50_ms"]:.2f} '
                 f'| {r["p90_ms"]:.2f} | {r["p99_ms"]:.2f} |')
  lines += ['', f'Non-200 answers: {results["errors"]}.', '']
  with open(args.out + '.md', 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines))
  print('\n'.join(lines))


if __name__ == '__main__':
  main()
