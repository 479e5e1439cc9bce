r"""Real-time top-K recommendation over HTTP.

  python -m rec_jax.serve --workdir=/tmp/rec_beauty --port=8000
  python -m rec_jax.serve --artifact=/tmp/rec_beauty/export --port=8000

  curl -s localhost:8000/recommend -d '{"history": [5, 17, 42], "k": 10}'
  {"items": [...], "scores": [...], "model": "beauty@1234:..."}

Endpoints:
  POST /recommend      {"history": [ids], "k": 10, "exclude_seen": true}
  GET  /healthz        {"status": "ok", "model": version, ...}
  GET  /metrics        Prometheus text: requests by endpoint and status,
                       latency and batch-size histograms, model swaps
  POST /admin/reload   {"artifact": PATH} (default: the served path) loads
                       and compiles the new model beside the old one, then
                       swaps it in; requests keep being answered throughout

The admin endpoint needs `Authorization: Bearer TOKEN`, the token read from
--admin_token_file or $REC_JAX_ADMIN_TOKEN (at least 16 characters, compared
in constant time); a service started without one refuses it (403). It
reloads only artifact directories under --artifact_root (default: the
directory holding the served artifact), resolved through symlinks, and only
artifacts whose files match their manifest's sha256 digests (422 otherwise).
Refusals: 401 no or wrong token, 403 disabled or outside the root, 404 no
artifact, 408 headers or body slower than --request_timeout_s, 409 other
shapes, 413 body over 64 KiB, 422 an artifact that fails verification; none
changes the served model, and /metrics counts each by reason.

Concurrent requests are micro-batched: requests that arrive while the
model is busy, and within --batch_window_ms of the first waiting one (0 by
default: an idle model starts at once), go to the model in one call (up to
64), padded to a fixed batch size and cut to a fixed history width so
nothing compiles while serving. Item ids are the dataset's internal ids 1..num_items (the
artifact's items.json maps them to titles). Bad input gets a 4xx with
{"error": ...}; it never causes a 5xx.
"""

import asyncio
import bisect
import concurrent.futures
import contextlib
import hmac
import json
import math
import os
import pathlib
import stat
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from rec_jax import artifact as artifact_lib

MAX_BODY_BYTES = 1 << 16
MAX_HISTORY = 10_000
ADMIN_TOKEN_ENV = 'REC_JAX_ADMIN_TOKEN'
MIN_TOKEN_CHARS = 16
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = artifact_lib.BUCKETS


class BadRequest(ValueError):
  """A request the service refuses (answered with 4xx), with the reason
  /metrics counts it under."""

  def __init__(self, message: str, status: int = 400,
               reason: str = 'bad_request', headers: dict | None = None):
    super().__init__(message)
    self.status = status
    self.reason = reason
    self.headers = headers


def load_admin_token(token_file: str | None = None) -> str | None:
  """The admin token: the contents of `token_file` when given, else
  $REC_JAX_ADMIN_TOKEN, else None (admin endpoints disabled).

  Raises:
    ValueError: naming the file or variable, when it cannot be read or the
      token is shorter than MIN_TOKEN_CHARS or not printable ASCII.
  """
  if token_file:
    source = token_file
    try:
      with open(token_file, encoding='utf-8') as f:
        token = f.read().strip()
      mode = os.stat(token_file).st_mode
    except (OSError, UnicodeDecodeError) as e:
      raise ValueError(f'admin token file {token_file}: {e}') from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
      logging.warning('Admin token file %s is readable by others; chmod 600 '
                      'it.', token_file)
  elif ADMIN_TOKEN_ENV in os.environ:
    source = f'${ADMIN_TOKEN_ENV}'
    token = os.environ[ADMIN_TOKEN_ENV].strip()
  else:
    return None
  if len(token) < MIN_TOKEN_CHARS or not all(33 <= ord(c) < 127
                                             for c in token):
    raise ValueError(
        f'{source}: the admin token must be at least {MIN_TOKEN_CHARS} '
        f'printable ASCII characters without spaces (got {len(token)}); '
        'make one with python -c "import secrets; '
        'print(secrets.token_urlsafe(32))"')
  return token


class Histogram:
  """A Prometheus-style cumulative histogram."""

  def __init__(self, buckets):
    self.buckets = tuple(buckets)
    self.counts = [0] * (len(self.buckets) + 1)
    self.sum = 0.0
    self.count = 0

  def observe(self, value: float):
    self.counts[bisect.bisect_left(self.buckets, value)] += 1
    self.sum += value
    self.count += 1

  def render(self, name: str, labels: str = '') -> list[str]:
    out, total = [], 0
    sep = ',' if labels else ''
    for le, c in zip(self.buckets + (math.inf,), self.counts):
      total += c
      le = '+Inf' if le == math.inf else repr(le)
      out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {total}')
    tag = f'{{{labels}}}' if labels else ''
    out.append(f'{name}_sum{tag} {self.sum}')
    out.append(f'{name}_count{tag} {self.count}')
    return out


class Metrics:
  """Request counts, latency and batch-size histograms, model swaps."""

  def __init__(self):
    self.requests = {}  # (path, status) -> count
    self.rejected = {}  # reason -> count
    self.latency = {}   # path -> Histogram (seconds)
    self.batch_size = Histogram(BATCH_BUCKETS)
    self.swaps = 0
    self.started = time.time()

  def record(self, path: str, status: int, seconds: float):
    self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
    if path not in self.latency:
      self.latency[path] = Histogram(LATENCY_BUCKETS)
    self.latency[path].observe(seconds)

  def reject(self, reason: str):
    self.rejected[reason] = self.rejected.get(reason, 0) + 1

  def render(self, model_version: str) -> str:
    lines = ['# HELP rec_jax_requests_total Requests by path and status.',
             '# TYPE rec_jax_requests_total counter']
    for (path, status), n in sorted(self.requests.items()):
      lines.append(f'rec_jax_requests_total{{path="{path}",'
                   f'status="{status}"}} {n}')
    lines += ['# HELP rec_jax_rejected_requests_total Requests refused '
              'with a 4xx, by reason.',
              '# TYPE rec_jax_rejected_requests_total counter']
    for reason, n in sorted(self.rejected.items()):
      lines.append(f'rec_jax_rejected_requests_total{{reason="{reason}"}} '
                   f'{n}')
    lines += ['# HELP rec_jax_request_seconds Request latency in the '
              'service (receive to response).',
              '# TYPE rec_jax_request_seconds histogram']
    for path, hist in sorted(self.latency.items()):
      lines += hist.render('rec_jax_request_seconds', f'path="{path}"')
    lines += ['# HELP rec_jax_batch_size Requests per model call.',
              '# TYPE rec_jax_batch_size histogram']
    lines += self.batch_size.render('rec_jax_batch_size')
    lines += ['# TYPE rec_jax_model_swaps_total counter',
              f'rec_jax_model_swaps_total {self.swaps}',
              '# TYPE rec_jax_model_info gauge',
              f'rec_jax_model_info{{version="{model_version}"}} 1',
              '# TYPE rec_jax_uptime_seconds gauge',
              f'rec_jax_uptime_seconds {time.time() - self.started:.1f}']
    return '\n'.join(lines) + '\n'


def parse_request(body: bytes, num_items: int, k_max: int) -> dict:
  """The validated fields of a /recommend body.

  Raises:
    BadRequest: naming the offending key.
  """
  try:
    req = json.loads(body)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise BadRequest(f'body is not JSON: {e}', reason='not_json') from None
  if not isinstance(req, dict):
    raise BadRequest('body must be a JSON object with a "history" list',
                     reason='not_object')
  unknown = sorted(set(req) - {'history', 'k', 'exclude_seen'})
  if unknown:
    raise BadRequest(f'unknown keys {unknown}; expected history, k, '
                     'exclude_seen', reason='unknown_key')
  if 'history' not in req:
    raise BadRequest('"history" is required: a list of item ids',
                     reason='bad_history')
  hist = req['history']
  if not isinstance(hist, list):
    raise BadRequest(f'"history" must be a list of item ids, got '
                     f'{type(hist).__name__}', reason='bad_history')
  if len(hist) > MAX_HISTORY:
    raise BadRequest(f'"history" has {len(hist)} items; at most '
                     f'{MAX_HISTORY}', reason='history_too_long')
  for i, x in enumerate(hist):
    if type(x) is not int:  # pylint: disable=unidiomatic-typecheck
      raise BadRequest(f'"history"[{i}] = {x!r}: item ids are integers',
                       reason='bad_item')
    if not 1 <= x <= num_items:
      raise BadRequest(f'"history"[{i}] = {x}: item ids are 1..{num_items}',
                       reason='bad_item')
  k = req.get('k', 10)
  if type(k) is not int or not 1 <= k <= k_max:  # pylint: disable=unidiomatic-typecheck
    raise BadRequest(f'"k" = {k!r}: expected an integer in 1..{k_max}',
                     reason='bad_k')
  exclude = req.get('exclude_seen', True)
  if not isinstance(exclude, bool):
    raise BadRequest(f'"exclude_seen" = {exclude!r}: expected true or false',
                     reason='bad_exclude_seen')
  return dict(history=hist, k=k, exclude_seen=exclude)


class Service:
  """The model, its micro-batcher and the hot swap."""

  def __init__(self, artifact_path: str, *, batch_window_ms: float = 0.0,
               admin_token: str | None = None,
               artifact_root: str | None = None,
               request_timeout_s: float = 10.0):
    self.path = os.path.abspath(artifact_path)
    self.root = os.path.realpath(artifact_root or os.path.dirname(
        os.path.realpath(self.path)))
    if not _inside(os.path.realpath(self.path), self.root):
      raise ValueError(f'--artifact {self.path} is not under --artifact_root '
                       f'{self.root}')
    self.admin_token = admin_token
    self.request_timeout_s = request_timeout_s
    self.model = artifact_lib.Artifact(self.path)
    self.window = batch_window_ms / 1000
    self.metrics = Metrics()
    self._queue = None
    self._task = None
    # One thread runs the model (JAX releases the GIL while computing);
    # another loads and compiles a replacement during a swap.
    self._runner = concurrent.futures.ThreadPoolExecutor(1, 'rec_jax-model')
    self._loader = concurrent.futures.ThreadPoolExecutor(1, 'rec_jax-load')
    self._swap_lock = asyncio.Lock()

  async def start(self):
    loop = asyncio.get_running_loop()
    seconds = await loop.run_in_executor(self._loader, self.model.warmup)
    logging.info('Model %s ready (compiled %d shapes in %.1f s).',
                 self.model.version, len(self.model.compiled), seconds)
    self._queue = asyncio.Queue()
    self._task = asyncio.create_task(self._batch_loop())

  async def stop(self):
    if self._task:
      self._task.cancel()
    self._runner.shutdown(wait=False)
    self._loader.shutdown(wait=False)

  async def recommend(self, req: dict):
    model = self.model
    hist, excl = model.inputs([req['history']], req['exclude_seen'])
    fut = asyncio.get_running_loop().create_future()
    await self._queue.put((hist[0], excl[0], fut))
    items, scores, version = await fut
    keep = [i for i in range(req['k']) if math.isfinite(scores[i])]
    return dict(items=[int(items[i]) for i in keep],
                scores=[float(scores[i]) for i in keep], model=version)

  async def _batch_loop(self):
    loop = asyncio.get_running_loop()
    max_batch = artifact_lib.BUCKETS[-1]
    while True:
      batch = [await self._queue.get()]
      deadline = loop.time() + self.window
      while len(batch) < max_batch:
        try:
          batch.append(self._queue.get_nowait())
          continue
        except asyncio.QueueEmpty:
          pass
        left = deadline - loop.time()
        if left <= 0:
          break
        try:
          batch.append(await asyncio.wait_for(self._queue.get(), left))
        except asyncio.TimeoutError:
          break
      model = self.model  # a swap takes effect at the next batch.
      hist = np.stack([b[0] for b in batch])
      excl = np.stack([b[1] for b in batch])
      self.metrics.batch_size.observe(len(batch))
      try:
        items, scores = await loop.run_in_executor(
            self._runner, model.run, hist, excl)
      except Exception as e:  # pylint: disable=broad-except
        logging.exception('Model call failed.')
        for *_, fut in batch:
          if not fut.done():
            fut.set_exception(e)
        continue
      for i, (*_, fut) in enumerate(batch):
        if not fut.done():
          fut.set_result((items[i], scores[i], model.version))

  def check_admin(self, authorization: str | None):
    """Refuses an admin request without the configured bearer token."""
    if self.admin_token is None:
      raise BadRequest('admin endpoints are disabled: start the service '
                       f'with --admin_token_file or ${ADMIN_TOKEN_ENV}', 403,
                       'admin_disabled')
    scheme, _, given = (authorization or '').strip().partition(' ')
    given = given.strip()
    challenge = 'Bearer realm="rec_jax admin"'
    if scheme.lower() != 'bearer' or not given:
      raise BadRequest('admin endpoints need "Authorization: Bearer TOKEN"',
                       401, 'no_token', {'WWW-Authenticate': challenge})
    if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
      raise BadRequest('wrong admin token', 401, 'wrong_token', {
          'WWW-Authenticate': challenge + ', error="invalid_token"'})

  def artifact_path(self, path: str | None) -> str:
    """The real path of a reload's artifact: `path` (relative to the root,
    or absolute) when under the root, symlinks resolved, else a 403."""
    if path is None:
      return self.path
    if '\0' in path or not path.strip():
      raise BadRequest('"artifact" must be a non-empty path without NUL',
                       reason='bad_path')
    if '..' in pathlib.PurePath(path).parts:
      raise BadRequest(f'"artifact" = {path!r}: ".." is not allowed', 403,
                       'outside_root')
    real = os.path.realpath(os.path.join(self.root, path))
    # The directory and each file in it: a symlinked params.npz escapes too.
    inner = os.listdir(real) if os.path.isdir(real) else []
    for p in [real] + [os.path.join(real, f) for f in inner]:
      if not _inside(os.path.realpath(p), self.root):
        raise BadRequest(f'"artifact" = {path!r}: resolves outside the '
                         f'artifact root {self.root}', 403, 'outside_root')
    return real

  async def reload(self, path: str | None = None) -> dict:
    """Loads and compiles the artifact at `path` (checked by
    `artifact_path`), then swaps it in."""
    path = self.artifact_path(path)
    async with self._swap_lock:
      loop = asyncio.get_running_loop()
      t = time.perf_counter()

      def load():
        new = artifact_lib.Artifact(path, reuse=self.model)
        new.warmup()  # nothing to compile when the function is unchanged.
        return new

      new = await loop.run_in_executor(self._loader, load)
      old = self.model
      if (new.max_len, new.exclude_len) != (old.max_len, old.exclude_len):
        # Rows already queued were prepared for the old shapes.
        raise BadRequest(f'{path}: max_len / exclude_len differ from the '
                         'served model; restart the service instead', 409,
                         'other_shapes')
      self.model, self.path = new, path
      self.metrics.swaps += 1
      logging.info('Swapped %s -> %s in %.1f s.', old.version, new.version,
                   time.perf_counter() - t)
      return dict(previous=old.version, model=new.version,
                  seconds=time.perf_counter() - t)


def _inside(path: str, root: str) -> bool:
  return os.path.commonpath([path, root]) == root


async def _read_body(request: Request, timeout_s: float) -> bytes:
  """The body, refused when over MAX_BODY_BYTES (413) or not received
  within `timeout_s` (408)."""
  size = request.headers.get('content-length')
  if size is not None:
    try:
      size = int(size)
    except ValueError:
      raise BadRequest('bad Content-Length header',
                       reason='bad_header') from None
    if size > MAX_BODY_BYTES:
      raise BadRequest(f'body of {size} bytes; at most {MAX_BODY_BYTES}',
                       413, 'body_too_large')
  chunks, total = [], 0
  try:
    async with asyncio.timeout(timeout_s):
      async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY_BYTES:
          raise BadRequest(f'body over {MAX_BODY_BYTES} bytes', 413,
                           'body_too_large')
        chunks.append(chunk)
  except TimeoutError:
    # The rest of the body may still arrive: close the connection after.
    raise BadRequest(f'body not received within {timeout_s:g} s', 408,
                     'body_timeout', {'Connection': 'close'}) from None
  return b''.join(chunks)


def protocol_class(timeout_s: float, on_timeout):
  """uvicorn's httptools protocol with a deadline on each request's headers.

  uvicorn times out only idle keep-alive connections: one that opens and
  sends nothing, or sends its headers a byte at a time, would hold a slot
  forever. Here the headers must be complete within `timeout_s` of the
  connection opening (or, on a kept-alive connection, of the request's
  first byte); otherwise the connection is answered 408 and closed, and
  `on_timeout()` is called. The body has its own deadline (`_read_body`).
  """
  from uvicorn.protocols.http import httptools_impl  # pylint: disable=g-import-not-at-top
  body = json.dumps({'error': f'request headers not received within '
                              f'{timeout_s:g} s'}).encode()
  response = (b'HTTP/1.1 408 Request Timeout\r\n'
              b'content-type: application/json\r\n'
              b'content-length: ' + str(len(body)).encode() + b'\r\n'
              b'connection: close\r\n\r\n' + body)

  class Protocol(httptools_impl.HttpToolsProtocol):
    """See `protocol_class`."""

    _head_timer = None

    def _arm(self):
      if self._head_timer is None:
        self._head_timer = self.loop.call_later(timeout_s, self._expire)

    def _disarm(self):
      if self._head_timer is not None:
        self._head_timer.cancel()
        self._head_timer = None

    def _expire(self):
      self._head_timer = None
      if not self.transport.is_closing():
        on_timeout()
        self.transport.write(response)
        self.transport.close()

    def connection_made(self, transport):
      super().connection_made(transport)
      self._arm()

    def on_message_begin(self):
      super().on_message_begin()
      self._arm()

    def on_headers_complete(self):
      self._disarm()
      super().on_headers_complete()

    def connection_lost(self, exc):
      self._disarm()
      super().connection_lost(exc)

  return Protocol


def make_app(service: Service) -> Starlette:
  """The ASGI application around `service`."""

  def timed(path):
    def wrap(handler):
      async def endpoint(request):
        t = time.perf_counter()
        try:
          response = await handler(request)
        except BadRequest as e:
          service.metrics.reject(e.reason)
          response = JSONResponse({'error': str(e)}, status_code=e.status,
                                  headers=e.headers)
        except Exception:  # pylint: disable=broad-except
          logging.exception('Error answering %s', path)
          response = JSONResponse({'error': 'internal error'},
                                  status_code=500)
        service.metrics.record(path, response.status_code,
                               time.perf_counter() - t)
        return response
      return endpoint
    return wrap

  @timed('/recommend')
  async def recommend(request):
    body = await _read_body(request, service.request_timeout_s)
    model = service.model
    req = parse_request(body, model.num_items, model.k_max)
    return JSONResponse(await service.recommend(req))

  @timed('/healthz')
  async def healthz(request):
    del request
    m = service.model
    return JSONResponse(dict(status='ok', model=m.version,
                             num_items=m.num_items, k_max=m.k_max,
                             max_len=m.max_len))

  async def metrics(request):
    del request
    return PlainTextResponse(service.metrics.render(service.model.version),
                             media_type='text/plain; version=0.0.4')

  @timed('/admin/reload')
  async def reload(request):
    service.check_admin(request.headers.get('authorization'))
    body = await _read_body(request, service.request_timeout_s)
    path = None
    if body.strip():
      try:
        req = json.loads(body)
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f'body is not JSON: {e}', reason='not_json') from None
      if not isinstance(req, dict) or set(req) - {'artifact'}:
        raise BadRequest('expected {"artifact": PATH} or an empty body',
                         reason='unknown_key')
      path = req.get('artifact')
      if path is not None and not isinstance(path, str):
        raise BadRequest('"artifact" must be a path', reason='bad_path')
    try:
      return JSONResponse(await service.reload(path))
    except artifact_lib.ArtifactNotFound as e:
      raise BadRequest(str(e), 404, 'no_artifact') from None
    except artifact_lib.ArtifactError as e:
      raise BadRequest(str(e), 422, 'invalid_artifact') from None

  async def http_error(request, exc):
    del request
    service.metrics.reject({404: 'no_route', 405: 'method_not_allowed'}.get(
        exc.status_code, f'http_{exc.status_code}'))
    return JSONResponse({'error': exc.detail}, status_code=exc.status_code)

  async def lifespan(app_):
    del app_
    await service.start()
    yield
    await service.stop()

  return Starlette(
      routes=[Route('/recommend', recommend, methods=['POST']),
              Route('/healthz', healthz, methods=['GET']),
              Route('/metrics', metrics, methods=['GET']),
              Route('/admin/reload', reload, methods=['POST'])],
      exception_handlers={HTTPException: http_error},
      lifespan=contextlib.asynccontextmanager(lifespan))


def define_artifact_flags(registry: dict, use: str) -> None:
  """--workdir / --artifact (exactly one is given; see resolve_artifact),
  stored in `registry`; `use` says what the workdir's export is for."""
  registry['workdir'] = flags.DEFINE_string(
      'workdir', None, f'A trained rec_jax.main workdir ({use} its '
      'export/, written first when missing).')
  registry['artifact'] = flags.DEFINE_string(
      'artifact', None, 'An artifact directory from rec_jax.export.')


def resolve_artifact(workdir: str | None, artifact: str | None) -> str:
  """The artifact to serve: --artifact, or <workdir>/export (exported from
  the workdir's best checkpoint when missing)."""
  if bool(workdir) == bool(artifact):
    raise app.UsageError('Give exactly one of --workdir and --artifact.')
  if artifact:
    return artifact
  path = os.path.join(os.path.abspath(workdir), 'export')
  if not os.path.exists(os.path.join(path, 'manifest.json')):
    from rec_jax import export  # pylint: disable=g-import-not-at-top
    logging.info('No artifact under %s: exporting the workdir.', workdir)
    path = export.export(workdir)
  return path


def serve(artifact_path: str, *, host: str, port: int,
          batch_window_ms: float, admin_token: str | None = None,
          artifact_root: str | None = None, request_timeout_s: float = 10.0,
          max_connections: int = 512):
  import uvicorn  # pylint: disable=g-import-not-at-top
  try:
    service = Service(artifact_path, batch_window_ms=batch_window_ms,
                      admin_token=admin_token, artifact_root=artifact_root,
                      request_timeout_s=request_timeout_s)
  except ValueError as e:  # a bad root, an artifact that fails its checks.
    raise app.UsageError(str(e)) from None
  http = protocol_class(request_timeout_s,
                        lambda: service.metrics.reject('header_timeout'))
  config = uvicorn.Config(make_app(service), host=host, port=port,
                          log_level='warning', access_log=False,
                          http=http, loop='uvloop', lifespan='on',
                          limit_concurrency=max_connections)
  server = uvicorn.Server(config)
  admin = (f'admin reloads from {service.root}' if admin_token else
           'admin endpoints disabled (no token)')
  print(f'Serving {service.model.version} on http://{host}:{port}; {admin}',
        flush=True)
  server.run()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  path = resolve_artifact(_FLAGS['workdir'].value, _FLAGS['artifact'].value)
  try:
    token = load_admin_token(_FLAGS['admin_token_file'].value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _FLAGS['request_timeout_s'].value <= 0:
    raise app.UsageError('--request_timeout_s must be positive')
  if _FLAGS['max_connections'].value < 1:
    raise app.UsageError('--max_connections must be at least 1')
  serve(path, host=_FLAGS['host'].value, port=_FLAGS['port'].value,
        batch_window_ms=_FLAGS['batch_window_ms'].value, admin_token=token,
        artifact_root=_FLAGS['artifact_root'].value,
        request_timeout_s=_FLAGS['request_timeout_s'].value,
        max_connections=_FLAGS['max_connections'].value)


_FLAGS = {}

if __name__ == '__main__':
  define_artifact_flags(_FLAGS, 'served from')
  _FLAGS['host'] = flags.DEFINE_string('host', '127.0.0.1', 'Bind address.')
  _FLAGS['port'] = flags.DEFINE_integer('port', 8000, 'Port.')
  _FLAGS['batch_window_ms'] = flags.DEFINE_float(
      'batch_window_ms', 0.0, 'How long the first waiting request waits '
      'for others to share its model call (0: none; requests that arrive '
      'while the model runs share the next call anyway).')
  _FLAGS['admin_token_file'] = flags.DEFINE_string(
      'admin_token_file', None, 'A file holding the admin bearer token (else '
      f'${ADMIN_TOKEN_ENV}; with neither, /admin/reload is disabled).')
  _FLAGS['artifact_root'] = flags.DEFINE_string(
      'artifact_root', None, '/admin/reload loads only artifacts under this '
      'directory (default: the directory holding the served artifact).')
  _FLAGS['request_timeout_s'] = flags.DEFINE_float(
      'request_timeout_s', 10.0, 'Seconds a connection may take to send a '
      "request's headers, and again its body (408 after).")
  _FLAGS['max_connections'] = flags.DEFINE_integer(
      'max_connections', 512, 'Concurrent connections / requests before '
      'the service answers 503.')
  app.run(main)
