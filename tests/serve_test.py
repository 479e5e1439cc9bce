"""Export, the HTTP service, batch scoring and the retrain-and-swap loop."""

import json
import os
import socket
import subprocess
import sys
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


def _post(url, body, timeout=30):
  data = body if isinstance(body, bytes) else json.dumps(body).encode()
  req = urllib.request.Request(url, data=data, method='POST')
  try:
    with urllib.request.urlopen(req, timeout=timeout) as r:
      return r.status, json.load(r)
  except urllib.error.HTTPError as e:
    return e.code, json.loads(e.read())


def _get(url):
  try:
    with urllib.request.urlopen(url, timeout=30) as r:
      return r.status, r.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


@pytest.fixture(scope='module')
def service(trained):
  path = export.export(trained)
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, '-m', 'rec_jax.serve', f'--artifact={path}',
       f'--port={port}'], cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
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
  status, out = _post(url + '/admin/reload', {'artifact': '/nonexistent'})
  assert status == 404 and 'not a rec_jax artifact' in out['error']
  status, metrics = _get(url + '/metrics')
  assert status == 200
  assert 'status="5' not in metrics
  assert 'rec_jax_requests_total{path="/recommend",status="400"}' in metrics
  assert 'rec_jax_request_seconds_bucket{path="/recommend",le="+Inf"}' in (
      metrics)


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

  threads = [threading.Thread(target=hammer) for _ in range(4)]
  for t in threads:
    t.start()
  try:
    proc = subprocess.run(
        [sys.executable, '-m', 'rec_jax.retrain', f'--served={trained}',
         f'--interactions={new}', f'--workdir={tmp_path / "v2"}',
         f'--serve_url={url}', '--set=checkpoint.async_save=false'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
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
  _, metrics = _get(url + '/metrics')
  assert 'rec_jax_model_swaps_total 1' in metrics
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
