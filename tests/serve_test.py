"""Export, the HTTP service, batch scoring and the retrain-and-swap loop."""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from conftest import REPO
import numpy as np
import pytest

from rec_jax import artifact as artifact_lib
from rec_jax import export
from rec_jax import score
from rec_jax import serve
from rec_jax import trainer


def _train(workdir, recipe):
  proc = subprocess.run(
      [sys.executable, '-m', 'rec_jax.main',
       f'--config=configs/{recipe}.py:smoke', f'--workdir={workdir}',
       '--config.checkpoint.async_save=false'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return str(workdir)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  return _train(tmp_path_factory.mktemp('sasrec'), 'sasrec')


def _same_top_k_as_evaluation(workdir):
  """The artifact's lists equal the in-process evaluation's top-k
  (predictions.jsonl) for every test user, the exclusion rule aside: the
  evaluation never removes the target, serving removes every seen item."""
  path = export.export(workdir)
  model = artifact_lib.Artifact(path)
  _, split = trainer.load_data(export.load_config(export.stage_dir(workdir)))
  with open(os.path.join(workdir, 'predictions.jsonl'),
            encoding='utf-8') as f:
    preds = [json.loads(line) for line in f]
  k = len(preds[0]['top'])
  items, scores = model.recommend(split.test_history, k=k)
  compared = 0
  for p, hist, got, s in zip(preds, split.test_history, items, scores):
    assert s == sorted(s, reverse=True)
    assert not set(got) & set(hist.tolist())
    if p['target'] in set(hist.tolist()):
      continue
    assert got == p['top'], p['user']
    compared += 1
  assert compared > 0.8 * len(preds)
  return model, split


def test_exported_top_k_equals_in_process_model(trained):
  model, split = _same_top_k_as_evaluation(trained)
  # Every (batch, width) bucket compiles once; later calls reuse it.
  model.warmup()
  compiled = set(model.compiled)
  assert len(compiled) == len(artifact_lib.BUCKETS) * len(model.widths)
  model.recommend(split.test_history[:37], k=3)
  assert model.compiled == compiled
  # A batch past the largest bucket is split, not recompiled.
  many = split.test_history * 2
  items, _ = model.recommend(many, k=3)
  assert len(items) == len(many) and items[:5] == items[len(many) // 2:][:5]
  # Without exclusion a user's own items may come back, with the same
  # scores the exclusion removes.
  free, _ = model.recommend(split.test_history[:50], k=model.k_max,
                            exclude_seen=False)
  assert any(set(f) & set(h.tolist())
             for f, h in zip(free, split.test_history[:50]))
  with pytest.raises(ValueError, match='k=0'):
    model.recommend([[1]], k=0)


def test_bidirectional_export_matches(tmp_path):
  _same_top_k_as_evaluation(_train(tmp_path, 'bert4rec'))


def test_artifact_errors(tmp_path, trained):
  with pytest.raises(artifact_lib.ArtifactError, match='missing manifest'):
    artifact_lib.Artifact(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='holds no trained model'):
    export.export(str(tmp_path))


def _edit_artifact(src, dest, name, edit, refresh_digests=False):
  """A copy of the artifact `src` at `dest` with file `name` replaced by
  `edit(bytes)`; with refresh_digests, its manifest is rewritten to match
  (a forgery that passes the sha256 checks)."""
  shutil.copytree(src, dest)
  with open(os.path.join(dest, name), 'rb') as f:
    data = f.read()
  with open(os.path.join(dest, name), 'wb') as f:
    f.write(edit(data))
  if refresh_digests:
    manifest = json.loads((dest / 'manifest.json').read_text())
    blobs = {n: (dest / n).read_bytes() for n in manifest['files_sha256']}
    manifest['id'], manifest['files_sha256'] = (
        artifact_lib.content_digests(blobs))
    (dest / 'manifest.json').write_text(json.dumps(manifest))
  return str(dest)


def _flip_last_byte(data):
  return data[:-1] + bytes([data[-1] ^ 1])


def _edit_manifest(**changes):
  def edit(data):
    manifest = json.loads(data)
    for k, v in changes.items():
      if v is None:
        del manifest[k]
      else:
        manifest[k] = v
    return json.dumps(manifest).encode()
  return edit


def _pickled_params(data):
  del data
  import io  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  np.savez(buf, p0=np.array([{'payload': 1}], dtype=object))
  return buf.getvalue()


def test_artifact_is_verified_before_use(trained, tmp_path):
  good = export.export(trained, str(tmp_path / 'good'))
  model = artifact_lib.Artifact(good)
  assert sorted(model.manifest['files_sha256']) == [
      'config.json', 'items.json', 'params.npz', 'recommend.jax']
  cases = [
      ('params.npz', _flip_last_byte, False, r'params.npz: sha256'),
      ('recommend.jax', _flip_last_byte, False, r'recommend.jax: sha256'),
      ('items.json', lambda d: d.replace(b'num_items', b'num_itemz'), False,
       r'items.json: sha256'),
      ('config.json', lambda d: d + b' ', False, r'config.json: sha256'),
      ('manifest.json', _edit_manifest(id='0' * 12), False,
       r"content id [0-9a-f]{12} .* is not the id '000000000000'"),
      ('manifest.json', lambda d: d[:-3], False, 'manifest.json: not JSON'),
      ('manifest.json', _edit_manifest(k_max=None), False,
       r"manifest.json: missing keys \['k_max'\]"),
      ('manifest.json', _edit_manifest(format_version=2), False,
       'format_version 2, this reader knows 1'),
      ('manifest.json', _edit_manifest(files_sha256={'../x': 'ab'}), False,
       'files_sha256 must map'),
      # Digests that match do not let a pickle through.
      ('params.npz', _pickled_params, True, 'params.npz: .*allow_pickle'),
      # An artifact from before files_sha256 is still checked by its id.
      ('manifest.json', _edit_manifest(files_sha256=None), False, None),
  ]
  for i, (name, edit, refresh, message) in enumerate(cases):
    path = _edit_artifact(good, tmp_path / f'case{i}', name, edit, refresh)
    if message is None:
      assert artifact_lib.Artifact(path).version == model.version
      with open(os.path.join(path, 'params.npz'), 'r+b') as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
      message = 'content id'
    with pytest.raises(artifact_lib.ArtifactInvalid, match=message):
      artifact_lib.Artifact(path)


def test_batch_scoring_parquet_and_jsonl(trained, tmp_path):
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  model = artifact_lib.Artifact(export.export(trained))
  config = export.load_config(export.stage_dir(trained))
  hist = score.user_histories(config, 'full')
  score.score(model, hist, str(tmp_path / 'top.parquet'), k=4,
              batch_size=16)
  score.score(model, hist, str(tmp_path / 'top.jsonl'), k=4, batch_size=16)
  table = pq.read_table(tmp_path / 'top.parquet').to_pylist()
  lines = [json.loads(l) for l in open(tmp_path / 'top.jsonl',
                                       encoding='utf-8')]
  assert len(table) == len(lines) == len(hist)
  expect, _ = model.recommend(hist[-3:], k=4)
  assert [r['items'] for r in table[-3:]] == expect
  assert [r['items'] for r in lines[-3:]] == expect
  assert [r['user'] for r in lines] == list(range(1, len(hist) + 1))
  with pytest.raises(ValueError, match="format 'csv'"):
    score.score(model, hist, str(tmp_path / 'top.csv'), k=4)


# ------------------------------------------------------------ service ----


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _post(url, body, timeout=30, token=None, with_headers=False):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  headers = {'Authorization': f'Bearer {token}'} if token else {}
  req = urllib.request.Request(url, data=data, method='POST', headers=headers)
  try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
      out = r.status, json.load(r), r.headers
  except urllib.error.HTTPError as e:
    out = e.code, json.loads(e.read()), e.headers
  return out if with_headers else out[:2]


def _get(url):
  try:
    with urllib.request.urlopen(url, timeout=30) as r:
      return r.status, r.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


TOKEN = 'test-admin-token-0123456789abcdef'
TIMEOUT_S = 2.0  # the service's --request_timeout_s


@pytest.fixture(scope='module')
def service(trained, tmp_path_factory):
  """The service on the trained model, with an admin token and, as its
  artifact root, pytest's temporary directory (the retrain test writes
  there)."""
  path = export.export(trained)
  token_file = tmp_path_factory.mktemp('secret') / 'token'
  token_file.write_text(TOKEN + '\n')
  token_file.chmod(0o600)
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if k != serve.ADMIN_TOKEN_ENV}
  proc = subprocess.Popen(
      [sys.executable, '-m', 'rec_jax.serve', f'--artifact={path}',
       f'--port={port}', f'--admin_token_file={token_file}',
       f'--artifact_root={tmp_path_factory.getbasetemp()}',
       f'--request_timeout_s={TIMEOUT_S}'], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  url = f'http://127.0.0.1:{port}'
  end = time.time() + 300
  while True:
    assert proc.poll() is None, proc.stdout.read()[-3000:]
    try:
      _get(url + '/healthz')
      break
    except OSError:
      assert time.time() < end, 'service did not start'
      time.sleep(0.3)
  yield url, artifact_lib.Artifact(path)
  proc.terminate()
  proc.wait(30)


def test_recommend_answers_like_the_artifact(service):
  url, model = service
  for hist, excl in (([5, 17, 3], True), ([5, 17, 3], False), ([], True)):
    status, out = _post(url + '/recommend',
                        dict(history=hist, k=7, exclude_seen=excl))
    assert status == 200, out
    items, scores = model.recommend([hist], k=7, exclude_seen=excl)
    assert out['items'] == items[0]
    assert np.allclose(out['scores'], scores[0], rtol=1e-6)
    assert out['model'] == model.version
  status, out = _post(url + '/recommend', dict(history=[1, 2]))
  assert status == 200 and len(out['items']) == 10  # k defaults to 10.
  status, health = _get(url + '/healthz')
  assert status == 200 and json.loads(health)['num_items'] == model.num_items


def _bad_requests(num_items, k_max):
  return [
      (b'not json', 400, 'not JSON'),
      (b'\xff\xfe', 400, 'not JSON'),
      (b'[1, 2]', 400, 'JSON object'),
      (b'{}', 400, '"history" is required'),
      ({'history': '1 2 3'}, 400, 'must be a list'),
      ({'history': [1, 2.5]}, 400, '"history"[1] = 2.5'),
      ({'history': [True]}, 400, 'integers'),
      ({'history': ['3']}, 400, 'integers'),
      ({'history': [0]}, 400, f'1..{num_items}'),
      ({'history': [-4]}, 400, f'1..{num_items}'),
      ({'history': [num_items + 1]}, 400, f'1..{num_items}'),
      ({'history': [1] * (serve.MAX_HISTORY + 1)}, 400, 'at most'),
      ({'history': [1], 'k': 0}, 400, f'1..{k_max}'),
      ({'history': [1], 'k': k_max + 1}, 400, f'1..{k_max}'),
      ({'history': [1], 'k': '5'}, 400, '"k"'),
      ({'history': [1], 'k': 2.0}, 400, '"k"'),
      ({'history': [1], 'exclude_seen': 'yes'}, 400, 'true or false'),
      ({'history': [1], 'user': 3}, 400, "unknown keys ['user']"),
      (b'{"history": [' + b'1, ' * 40000 + b'1]}', 413, 'at most'),
  ]


def test_bad_input_gets_4xx_never_5xx(service):
  url, model = service
  for body, status, message in _bad_requests(model.num_items, model.k_max):
    got, out = _post(url + '/recommend', body)
    assert got == status, (body[:80], out)
    assert message in out['error'], (body[:80], out)
  status, body = _get(url + '/recommend')  # wrong method
  assert status == 405 and 'error' in json.loads(body)
  status, body = _get(url + '/nowhere')
  assert status == 404 and 'error' in json.loads(body)
  status, metrics = _get(url + '/metrics')
  assert status == 200
  assert 'status="5' not in metrics
  assert 'rec_jax_requests_total{path="/recommend",status="400"}' in metrics
  assert 'rec_jax_request_seconds_bucket{path="/recommend",le="+Inf"}' in (
      metrics)
  for reason in ('not_json', 'bad_item', 'bad_k', 'history_too_long',
                 'unknown_key', 'body_too_large', 'no_route',
                 'method_not_allowed'):
    assert f'rec_jax_rejected_requests_total{{reason="{reason}"}}' in (
        metrics), reason


def test_concurrent_requests_share_model_calls(service):
  url, _ = service
  errors = []

  def hammer():
    for i in range(20):
      status, out = _post(url + '/recommend', dict(history=[i + 1], k=3))
      if status != 200:
        errors.append(out)

  threads = [threading.Thread(target=hammer) for _ in range(16)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  _, metrics = _get(url + '/metrics')
  count = float([l for l in metrics.splitlines()
                 if l.startswith('rec_jax_batch_size_count')][0].split()[-1])
  total = sum(float(l.split()[-1]) for l in metrics.splitlines()
              if l.startswith('rec_jax_requests_total{path="/recommend",'
                              'status="200"}'))
  assert count < total  # some model calls answered several requests.


def _swaps(url):
  _, metrics = _get(url + '/metrics')
  line, = [l for l in metrics.splitlines()
           if l.startswith('rec_jax_model_swaps_total')]
  return int(line.split()[-1])


def _rejected(url):
  _, metrics = _get(url + '/metrics')
  prefix = 'rec_jax_rejected_requests_total{reason="'
  return {l[len(prefix):].split('"')[0]: int(l.split()[-1])
          for l in metrics.splitlines() if l.startswith(prefix)}


def test_admin_refusals_leave_the_served_model_alone(service, tmp_path):
  url, model = service
  outside = tempfile.mkdtemp(prefix='rec_jax_outside_')
  root = os.path.realpath(tmp_path.parent)  # the service's artifact root.
  assert not os.path.realpath(outside).startswith(root)
  try:
    shutil.copytree(model.path, os.path.join(outside, 'export'))
    escape = tmp_path / 'escape'  # a symlink out of the root.
    os.symlink(os.path.join(outside, 'export'), escape)
    half = tmp_path / 'half'  # inside, but its weights link outside.
    shutil.copytree(model.path, half)
    os.remove(half / 'params.npz')
    os.symlink(os.path.join(outside, 'export', 'params.npz'),
               half / 'params.npz')
    empty = tmp_path / 'empty'
    empty.mkdir()
    tampered = _edit_artifact(model.path, tmp_path / 'tampered',
                              'params.npz', _flip_last_byte)
    cases = [
        (None, tampered, 401, 'Authorization: Bearer'),
        ('wrong-token-of-good-length', tampered, 401, 'wrong admin token'),
        (TOKEN[:-1], tampered, 401, 'wrong admin token'),
        (TOKEN, str(tmp_path / '..' / 'x'), 403, '".." is not allowed'),
        (TOKEN, str(escape), 403, 'outside the artifact root'),
        (TOKEN, str(half), 403, 'outside the artifact root'),
        (TOKEN, os.path.join(outside, 'export'), 403, 'outside the artifact'),
        (TOKEN, '/etc', 403, 'outside the artifact root'),
        (TOKEN, str(tmp_path / 'none'), 404, 'no such artifact directory'),
        (TOKEN, str(empty), 404, 'missing manifest.json'),
        (TOKEN, tampered, 422, 'params.npz: sha256'),
        (TOKEN, 5, 400, 'must be a path'),
        (TOKEN, 'x' * (serve.MAX_BODY_BYTES + 1), 413, 'at most'),
    ]
    before = _swaps(url)
    for token, artifact, status, message in cases:
      got, out, headers = _post(url + '/admin/reload', {'artifact': artifact},
                                token=token, with_headers=True)
      assert got == status and message in out['error'], (artifact, out)
      if status == 401:
        assert headers['WWW-Authenticate'].startswith('Bearer realm=')
      _, health = _get(url + '/healthz')
      assert json.loads(health)['model'] == model.version
    assert _swaps(url) == before
    rejected = _rejected(url)
    for reason in ('no_token', 'wrong_token', 'outside_root', 'no_artifact',
                   'invalid_artifact', 'bad_path', 'body_too_large'):
      assert rejected.get(reason, 0) >= 1, (reason, rejected)
    # With the token, the served artifact itself reloads (nothing to
    # compile): the endpoint refused, it was not broken.
    got, out = _post(url + '/admin/reload', b'', token=TOKEN)
    assert got == 200 and out['model'] == model.version, out
    assert _swaps(url) == before + 1
  finally:
    shutil.rmtree(outside)


def _asgi(app, method, path, body=b'', headers=()):
  """One request through the ASGI app in this process (no server and no
  lifespan: nothing is compiled)."""
  async def run():
    sent, messages = [], [{'type': 'http.request', 'body': body}]

    async def receive():
      return messages.pop(0) if messages else {'type': 'http.disconnect'}

    async def send(message):
      sent.append(message)

    scope = dict(type='http', asgi={'version': '3.0'}, http_version='1.1',
                 method=method, scheme='http', path=path,
                 raw_path=path.encode(), query_string=b'', root_path='',
                 headers=[(k.lower().encode(), v.encode())
                          for k, v in headers],
                 client=('127.0.0.1', 1), server=('127.0.0.1', 80))
    await app(scope, receive, send)
    status = [m for m in sent if m['type'] == 'http.response.start'][0]
    return status['status'], json.loads(b''.join(
        m.get('body', b'') for m in sent if m['type'] == 'http.response.body'))
  return asyncio.run(run())


def test_admin_is_disabled_without_a_token_and_confined_to_the_root(
    service, trained):
  _, model = service
  svc = serve.Service(model.path)
  status, out = _asgi(serve.make_app(svc), 'POST', '/admin/reload', b'',
                      [('Authorization', f'Bearer {TOKEN}')])
  assert status == 403 and 'admin endpoints are disabled' in out['error']
  assert svc.metrics.rejected == {'admin_disabled': 1}
  # The default root is the directory holding the served artifact; a path
  # relative to the root is allowed.
  svc = serve.Service(model.path, admin_token=TOKEN)
  assert svc.root == os.path.realpath(trained)
  assert svc.artifact_path('export') == os.path.realpath(model.path)
  with pytest.raises(serve.BadRequest, match='outside the artifact root'):
    svc.artifact_path(os.path.dirname(trained))
  with pytest.raises(ValueError, match='is not under --artifact_root'):
    serve.Service(model.path, artifact_root=os.path.join(trained, 'x'))


def test_slow_clients_get_408_and_the_connection_closed(service):
  url, _ = service
  port = int(url.rsplit(':', 1)[1])
  before = _rejected(url)

  def exchange(data):
    with socket.create_connection(('127.0.0.1', port),
                                  timeout=TIMEOUT_S * 5) as s:
      t = time.perf_counter()
      s.sendall(data)
      reply = b''
      while chunk := s.recv(4096):  # until the service closes.
        reply += chunk
      return reply, time.perf_counter() - t

  for data, message in (
      (b'', b'headers not received'),  # opens, says nothing.
      (b'POST /recommend HTTP/1.1\r\nHost: x\r\n', b'headers not received'),
      (b'POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n'
       b'\r\n{"history"', b'body not received')):
    reply, waited = exchange(data)
    assert reply.startswith(b'HTTP/1.1 408') and message in reply, reply
    assert 0.8 * TIMEOUT_S <= waited < 4 * TIMEOUT_S, waited
  after = _rejected(url)
  assert after.get('header_timeout', 0) - before.get('header_timeout', 0) == 2
  assert after.get('body_timeout', 0) - before.get('body_timeout', 0) == 1
  status, _ = _post(url + '/recommend', dict(history=[1, 2]))
  assert status == 200


def test_admin_token_sources(tmp_path, monkeypatch):
  monkeypatch.delenv(serve.ADMIN_TOKEN_ENV, raising=False)
  assert serve.load_admin_token(None) is None
  monkeypatch.setenv(serve.ADMIN_TOKEN_ENV, f'  {TOKEN}\n')
  assert serve.load_admin_token(None) == TOKEN
  path = tmp_path / 'token'
  path.write_text('from-the-file-0123456789\n')
  assert serve.load_admin_token(str(path)) == 'from-the-file-0123456789'
  for bad in ('short', 'a token with spaces in it', 'non-ascii-\u00e9-0123456'):
    path.write_text(bad)
    with pytest.raises(ValueError, match=f'{path}: the admin token must'):
      serve.load_admin_token(str(path))
  with pytest.raises(ValueError, match='admin token file .*missing'):
    serve.load_admin_token(str(tmp_path / 'missing'))
  monkeypatch.setenv(serve.ADMIN_TOKEN_ENV, 'short')
  with pytest.raises(ValueError, match=r'\$REC_JAX_ADMIN_TOKEN: the admin'):
    serve.load_admin_token(None)


def test_retrain_with_a_service_needs_the_token(trained, tmp_path):
  env = {k: v for k, v in os.environ.items() if k != serve.ADMIN_TOKEN_ENV}
  proc = subprocess.run(
      [sys.executable, '-m', 'rec_jax.retrain', f'--served={trained}',
       f'--interactions={tmp_path / "new.txt"}', f'--workdir={tmp_path}',
       '--serve_url=http://127.0.0.1:9'], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--serve_url needs the service's admin token" in proc.stderr
  assert not os.path.exists(tmp_path / 'finetune')  # refused before work.


def test_retrain_on_new_interactions_and_hot_swap(service, trained,
                                                  tmp_path):
  url, model = service
  new = tmp_path / 'new.txt'
  n_users = 128  # the smoke synthetic dataset.
  new.write_text(f'1 5 6 7\n3 9\n{n_users + 1} 4 5 6 7\n1 8\n')
  seen, errors, stop = set(), [], threading.Event()

  def hammer():
    while not stop.is_set():
      status, out = _post(url + '/recommend', dict(history=[5, 6], k=5))
      if status == 200:
        seen.add(out['model'])
      else:
        errors.append(out)

  swaps = _swaps(url)
  threads = [threading.Thread(target=hammer) for _ in range(4)]
  for t in threads:
    t.start()
  try:
    proc = subprocess.run(
        [sys.executable, '-m', 'rec_jax.retrain', f'--served={trained}',
         f'--interactions={new}', f'--workdir={tmp_path / "v2"}',
         f'--serve_url={url}', '--set=checkpoint.async_save=false'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, **{serve.ADMIN_TOKEN_ENV: TOKEN}))
    time.sleep(0.5)
  finally:
    stop.set()
    for t in threads:
      t.join()
  assert proc.returncode == 0, proc.stderr[-3000:]
  swap = json.loads(proc.stdout.strip().splitlines()[-1])['reload']
  assert swap['previous'] == model.version != swap['model']
  assert not errors
  assert seen == {model.version, swap['model']}
  status, health = _get(url + '/healthz')
  assert json.loads(health)['model'] == swap['model']
  assert _swaps(url) == swaps + 1
  # The retrained run saw the new interactions: user 1's history grew and
  # a new user exists.
  config = export.load_config(export.stage_dir(str(tmp_path / 'v2')))
  ds, _ = trainer.load_data(config)
  assert ds.num_users == n_users + 1
  assert list(ds.sequences[0][-4:]) == [5, 6, 7, 8]


def test_new_interactions_errors_name_the_line(tmp_path):
  from rec_jax.data.sources import files  # pylint: disable=g-import-not-at-top
  bad = tmp_path / 'bad.txt'
  for text, message in (('1 5\n2 99\n', 'line 2: item id 99'),
                        ('1 5\n12 4\n', 'line 2: new user id 12: expected 11'),
                        ('1 x\n', "line 1: token 'x'")):
    bad.write_text(text)
    with pytest.raises(files.DataError, match=message):
      files.read_new_interactions(str(bad), 10, 50)
  bad.write_text('11 3\n12 4\n11 5\n2 1 2\n')
  got = files.read_new_interactions(str(bad), 10, 50)
  assert {u: v.tolist() for u, v in got.items()} == {
      11: [3, 5], 12: [4], 2: [1, 2]}
