r"""Soak test of `rec_jax.serve`: mixed valid / invalid traffic for a bounded
time, a model reload every minute.

  REC_JAX_DATA_DIR=../shared/data python benchmarks/serve_soak.py \
      --workdir=benchmarks/work/kill_resume/reference --seconds=600

Starts the service on a free loopback port with an admin token, exporting
the workdir twice (two artifacts of the same model, A and B), and from this
process sends, over --clients keep-alive connections, real test histories
of the workdir's dataset mixed with --bad_share of invalid requests (not
JSON, unknown keys, ids out of the catalog, k out of range, bodies over the
size limit, wrong methods, a reload without the token). Every
--reload_every_s the service is told to swap to the other artifact. Stops
by itself after --seconds. Reports requests served by status (no 5xx is
the pass mark), reloads, p50 / p99 latency of the valid requests per
window, and the service's resident memory at start and end (growth past
10% fails). Writes benchmarks/results/serve_soak.{json,md,png}.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time

import numpy as np

import common
import serve_load

REPO = common.REPO


def rss_mb(pid: int) -> float:
  with open(f'/proc/{pid}/status', encoding='utf-8') as f:
    for line in f:
      if line.startswith('VmRSS:'):
        return int(line.split()[1]) / 1024
  return float('nan')


def bad_requests(num_items: int, k_max: int) -> list[tuple[bytes, bytes]]:
  """(request line + headers, body) of requests the service must refuse."""
  def post(path, body, extra=b''):
    return (b'POST %s HTTP/1.1\r\nHost: loopback\r\n%s'
            b'Content-Length: %d\r\n\r\n' % (path, extra, len(body)), body)
  return [
      post(b'/recommend', b'not json'),
      post(b'/recommend', b'{"history": [1], "user": 3}'),
      post(b'/recommend', json.dumps({'history': [num_items + 5]}).encode()),
      post(b'/recommend', json.dumps({'history': [0, 1]}).encode()),
      post(b'/recommend', json.dumps({'history': [1],
                                      'k': k_max + 1}).encode()),
      post(b'/recommend', b'{"history": [' + b'1, ' * 30000 + b'1]}'),
      post(b'/admin/reload', b'{"artifact": "/etc"}'),  # no token.
      post(b'/nowhere', b'{}'),
      (b'GET /recommend HTTP/1.1\r\nHost: loopback\r\n\r\n', b''),
  ]


async def client(port, good, bad, bad_share, until, rng, log):
  """Sends requests until `until`; logs (time, valid?, status, seconds)."""
  reader, writer = await asyncio.open_connection('127.0.0.1', port)
  try:
    while time.monotonic() < until:
      valid = rng.random() >= bad_share
      if valid:
        body = good[rng.integers(len(good))]
        head = (b'POST /recommend HTTP/1.1\r\nHost: loopback\r\n'
                b'Content-Length: %d\r\n\r\n' % len(body))
      else:
        head, body = bad[rng.integers(len(bad))]
      t = time.perf_counter()
      writer.write(head + body)
      header = await reader.readuntil(b'\r\n\r\n')
      length, close = 0, False
      for line in header.split(b'\r\n'):
        if line.lower().startswith(b'content-length:'):
          length = int(line.split(b':')[1])
        close |= line.lower() == b'connection: close'
      await reader.readexactly(length)
      log.append((time.monotonic(), valid, int(header.split()[1]),
                  time.perf_counter() - t))
      if close:  # the service ends a connection after some refusals.
        writer.close()
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
  finally:
    writer.close()


async def reloader(url, artifacts, token, every, until, reloads):
  """Swaps to the other artifact every `every` seconds."""
  loop = asyncio.get_running_loop()
  i = 1
  while True:
    await asyncio.sleep(every)
    if time.monotonic() >= until - 1:
      return
    t = time.perf_counter()
    status, out = await loop.run_in_executor(None, lambda: post_json(
        url + '/admin/reload', {'artifact': artifacts[i % 2]}, token))
    reloads.append(dict(at=round(time.monotonic(), 1), status=status,
                        seconds=round(time.perf_counter() - t, 2),
                        model=out.get('model'), error=out.get('error')))
    i += 1


def post_json(url, body, token):
  import urllib.error  # pylint: disable=g-import-not-at-top
  import urllib.request  # pylint: disable=g-import-not-at-top
  req = urllib.request.Request(url, data=json.dumps(body).encode(),
                               method='POST', headers={
                                   'Authorization': f'Bearer {token}'})
  try:
    with urllib.request.urlopen(req, timeout=300) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


async def sampler(pid, until, every, samples):
  while time.monotonic() < until:
    samples.append((time.monotonic(), rss_mb(pid)))
    await asyncio.sleep(every)


async def soak(args, port, pid, good, bad, artifacts, token):
  until = time.monotonic() + args.seconds
  log, reloads, rss = [], [], []
  rng = np.random.default_rng(args.seed)
  tasks = [client(port, good, bad, args.bad_share, until,
                  np.random.default_rng(rng.integers(2**31)), log)
           for _ in range(args.clients)]
  tasks.append(reloader(f'http://127.0.0.1:{port}', artifacts, token,
                        args.reload_every_s, until, reloads))
  tasks.append(sampler(pid, until, 5.0, rss))
  start = time.monotonic()
  await asyncio.gather(*tasks)
  return start, log, reloads, rss


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--workdir', default=os.path.join(
      REPO, 'benchmarks/work/kill_resume/reference'))
  parser.add_argument('--seconds', type=float, default=600)
  parser.add_argument('--clients', type=int, default=8)
  parser.add_argument('--bad_share', type=float, default=0.2)
  parser.add_argument('--reload_every_s', type=float, default=60)
  parser.add_argument('--window_s', type=float, default=60)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=os.path.join(REPO, 'benchmarks',
                                                    'results', 'serve_soak'))
  args = parser.parse_args()

  from rec_jax import export  # pylint: disable=g-import-not-at-top
  from rec_jax import trainer  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(args.workdir)
  config = export.load_config(export.stage_dir(workdir))
  _, split = trainer.load_data(config)
  good = [json.dumps({'history': h.tolist(), 'k': 10}).encode()
          for h in split.test_history[:5000]]
  artifacts = [export.export(workdir, os.path.join(workdir, f'soak_{n}'))
               for n in 'ab']
  with open(os.path.join(artifacts[0], 'manifest.json'),
            encoding='utf-8') as f:
    manifest = json.load(f)
  with tempfile.TemporaryDirectory() as secret:
    token_file = os.path.join(secret, 'token')
    token = secrets.token_urlsafe(32)
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), 'w',
              encoding='utf-8') as f:
      f.write(token)
    port = serve_load.free_port()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'rec_jax.serve', f'--artifact={artifacts[0]}',
         f'--port={port}', f'--admin_token_file={token_file}',
         f'--artifact_root={workdir}'], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      health = serve_load.wait_healthy(f'http://127.0.0.1:{port}', proc)
      bad = bad_requests(health['num_items'], health['k_max'])
      try:
        import uvloop  # pylint: disable=g-import-not-at-top
        uvloop.install()
      except ImportError:
        pass
      start, log, reloads, rss = asyncio.run(
          soak(args, port, proc.pid, good, bad, artifacts, token))
      import urllib.request  # pylint: disable=g-import-not-at-top
      with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics') as r:
        rejected = [l for l in r.read().decode().splitlines()
                    if l.startswith('rec_jax_rejected_requests_total{')]
      alive = proc.poll() is None
    finally:
      proc.terminate()
      proc.wait(30)

  t = np.array([r[0] - start for r in log])
  valid = np.array([r[1] for r in log])
  status = np.array([r[2] for r in log])
  seconds = np.array([r[3] for r in log]) * 1000
  windows = []
  for w0 in np.arange(0, args.seconds, args.window_s):
    sel = valid & (t >= w0) & (t < w0 + args.window_s) & (status == 200)
    if sel.any():
      windows.append(dict(
          start_s=float(w0), requests=int(sel.sum()),
          p50_ms=round(float(np.percentile(seconds[sel], 50)), 2),
          p99_ms=round(float(np.percentile(seconds[sel], 99)), 2)))
  by_status = {str(s): int((status == s).sum()) for s in np.unique(status)}
  five = int((status >= 500).sum())
  wrong = int((valid & (status != 200)).sum() +
              (~valid & (status < 400)).sum())
  rss_start, rss_end = rss[0][1], rss[-1][1]
  growth = rss_end / rss_start - 1
  ok_reloads = sum(r['status'] == 200 for r in reloads)
  passed = (five == 0 and wrong == 0 and alive and growth <= 0.10 and
            ok_reloads == len(reloads) > 0)
  out = dict(
      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='minutes'),
      command='python benchmarks/serve_soak.py ' + ' '.join(sys.argv[1:]),
      machine=f'{platform.processor() or platform.machine()}, '
              f'{os.cpu_count()} cores (client and server on the same '
              'machine)',
      model=dict(dataset=manifest['dataset'], version=health['model'],
                 num_items=health['num_items']),
      seconds=args.seconds, clients=args.clients, bad_share=args.bad_share,
      requests=len(log), valid=int(valid.sum()), invalid=int((~valid).sum()),
      by_status=by_status, server_errors=five, wrong_answers=wrong,
      reloads=reloads, windows=windows,
      rss_mb=dict(start=round(rss_start, 1), end=round(rss_end, 1),
                  growth=round(growth, 4),
                  samples=[(round(a - start, 1), round(b, 1))
                           for a, b in rss]),
      rejected_by_reason=rejected, service_alive=alive, passed=passed)
  with open(args.out + '.json', 'w', encoding='utf-8') as f:
    json.dump(out, f, indent=2)

  plt = common.pyplot()
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
  mids = [w['start_s'] / 60 for w in windows]
  ax1.plot(mids, [w['p50_ms'] for w in windows], 'o-', label='p50')
  ax1.plot(mids, [w['p99_ms'] for w in windows], 's-', label='p99')
  for r in reloads:
    ax1.axvline((r['at'] - start) / 60, color='grey', lw=0.5)
  common.finish_panel(ax1, 'valid /recommend latency (reloads: grey)',
                      'minute', 'ms')
  ax2.plot([a - start for a, _ in rss], [b for _, b in rss], label='RSS')
  common.finish_panel(ax2, 'service resident memory', 's', 'MB')
  fig.tight_layout()
  fig.savefig(args.out + '.png', dpi=110)

  rows = '\n'.join(f'| {w["start_s"]:.0f} | {w["requests"]:,} | '
                   f'{w["p50_ms"]} | {w["p99_ms"]} |' for w in windows)
  reload_s = [r['seconds'] for r in reloads]
  text = f"""# Serving soak: {out['model']['dataset']} SASRec

`{out['command']}` ({out['date']}, {out['machine']}).

{args.seconds:.0f} s of traffic over {args.clients} keep-alive connections,
{args.bad_share:.0%} of it invalid, a swap between two artifacts every
{args.reload_every_s:.0f} s: **{len(log):,} requests** ({int(valid.sum()):,}
valid, {int((~valid).sum()):,} invalid), by status {by_status};
**{five} 5xx**, {wrong} answers of the wrong kind (a valid request not
answered 200 or an invalid one not refused). Reloads: {ok_reloads} of
{len(reloads)} succeeded (seconds each: {reload_s}). Service RSS
{rss_start:.0f} MB at the start, {rss_end:.0f} MB at the end
({growth:+.1%}). Result: **{'passed' if passed else 'FAILED'}** (no 5xx,
no wrong answer, every reload, RSS growth <= 10%).

| window from (s) | valid requests | p50 ms | p99 ms |
|---|---|---|---|
{rows}

![latency and memory](serve_soak.png)
"""
  common.write_markdown(args.out + '.md', text)
  print(text)
  if not passed:
    raise SystemExit('soak failed')


if __name__ == '__main__':
  main()
