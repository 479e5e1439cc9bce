"""Loads and runs a serving artifact written by `rec_jax.export`.

Needs only jax and numpy: the recommend function comes back from its
`jax.export` serialization, the weights from params.npz. Batches are padded
to a few fixed sizes (`BUCKETS`) and cut to a few history widths (powers of
two from 8, and max_len) so that serving never compiles after `warmup()`.
An artifact whose function is byte-identical to a loaded one's (a model
retrained with the same shapes) reuses its compiled code: a swap then only
loads weights.

Loading verifies the artifact before anything of it is used: every file's
sha256 against the manifest's `files_sha256` (and the content `id`, which
names the function and its weights), and the weights are read with
`allow_pickle=False` from the very bytes that were hashed, so a file changed
between the check and the load is never used.
"""

import hashlib
import io
import json
import os
import time

import jax
from jax import export as jax_export
import numpy as np

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
FORMAT_VERSION = 1


FILES = ('manifest.json', 'recommend.jax', 'params.npz', 'items.json')
# The files the content `id` is the sha256 of, in this order.
ID_FILES = ('recommend.jax', 'params.npz')
_MANIFEST_KEYS = ('format_version', 'id', 'num_arrays', 'num_items',
                  'max_len', 'exclude_len', 'k_max', 'bidirectional',
                  'dataset', 'step')


class ArtifactError(ValueError):
  """The artifact directory is missing, incomplete or of another format."""


class ArtifactNotFound(ArtifactError):
  """No artifact at the path (or some of its files are missing)."""


class ArtifactInvalid(ArtifactError):
  """The files are there but fail verification: a manifest that does not
  parse or lacks a key, another format version, or content whose sha256 is
  not the manifest's."""


def content_digests(blobs: dict[str, bytes]) -> tuple[str, dict[str, str]]:
  """(content id, {file: sha256 hex}) of an artifact's file contents."""
  digest = hashlib.sha256()
  for name in ID_FILES:
    digest.update(blobs[name])
  files = {name: hashlib.sha256(data).hexdigest()
           for name, data in sorted(blobs.items())}
  return digest.hexdigest()[:12], files


class Artifact:
  """A loaded model: `recommend(histories, k, exclude_seen)`."""

  def __init__(self, path: str, reuse: 'Artifact | None' = None):
    self.path = os.path.abspath(path)
    if not os.path.isdir(self.path):
      raise ArtifactNotFound(f'{self.path}: no such artifact directory; '
                             'write one with python -m rec_jax.export '
                             '--workdir=...')
    missing = [f for f in FILES
               if not os.path.isfile(os.path.join(self.path, f))]
    if missing:
      raise ArtifactNotFound(f'{self.path}: not a rec_jax artifact (missing '
                             f'{", ".join(missing)}); write one with '
                             'python -m rec_jax.export --workdir=...')
    self.manifest = self._read_manifest()
    # Everything is read once, verified, then used from memory.
    blobs = {name: self._read(name) for name in sorted(
        set(FILES[1:]) | set(self.manifest.get('files_sha256', {})))}
    self._verify(blobs)
    code = blobs['recommend.jax']
    self.function_digest = hashlib.sha256(code).hexdigest()
    try:
      with np.load(io.BytesIO(blobs['params.npz']), allow_pickle=False) as z:
        leaves = [z[f'p{i}'] for i in range(self.manifest['num_arrays'])]
    except (ValueError, KeyError, OSError) as e:
      raise ArtifactInvalid(f'{self.path}/params.npz: {e}') from None
    self._params = jax.device_put(leaves)
    try:
      self.items = json.loads(blobs['items.json'])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ArtifactInvalid(f'{self.path}/items.json: {e}') from None
    self.num_items = int(self.manifest['num_items'])
    self.max_len = int(self.manifest['max_len'])
    self.exclude_len = int(self.manifest['exclude_len'])
    self.k_max = int(self.manifest['k_max'])
    self.bidirectional = bool(self.manifest['bidirectional'])
    self.widths = tuple(sorted({w for w in (8, 16, 32, 64, 128, 256, 512)
                                if w < self.max_len} | {self.max_len}))
    if reuse is not None and reuse.function_digest == self.function_digest:
      self._call, self.compiled = reuse._call, reuse.compiled
    else:
      try:
        self._call = jax.jit(jax_export.deserialize(bytearray(code)).call)
      except Exception as e:  # pylint: disable=broad-except
        raise ArtifactInvalid(f'{self.path}/recommend.jax: {e}') from None
      self.compiled = set()  # (batch, width) shapes compiled so far.

  def _read(self, name: str) -> bytes:
    try:
      with open(os.path.join(self.path, name), 'rb') as f:
        return f.read()
    except FileNotFoundError:
      raise ArtifactNotFound(f'{self.path}: {name} is listed in the '
                             'manifest but missing') from None

  def _read_manifest(self) -> dict:
    where = f'{self.path}/manifest.json'
    try:
      manifest = json.loads(self._read('manifest.json'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ArtifactInvalid(f'{where}: not JSON: {e}') from None
    if not isinstance(manifest, dict):
      raise ArtifactInvalid(f'{where}: expected a JSON object')
    if manifest.get('format_version') != FORMAT_VERSION:
      raise ArtifactInvalid(
          f'{where}: format_version {manifest.get("format_version")!r}, '
          f'this reader knows {FORMAT_VERSION}')
    missing = [k for k in _MANIFEST_KEYS if k not in manifest]
    if missing:
      raise ArtifactInvalid(f'{where}: missing keys {missing}')
    # Written by every export since files_sha256 exists; older artifacts
    # carry the content id only, which is verified either way.
    files = manifest.get('files_sha256', {})
    if not isinstance(files, dict) or any(
        not isinstance(v, str) or k in ('', '.', '..', 'manifest.json')
        or os.path.basename(k) != k for k, v in files.items()):
      raise ArtifactInvalid(f'{where}: files_sha256 must map the names of '
                            'files beside it to sha256 hex digests')
    return manifest

  def _verify(self, blobs: dict[str, bytes]):
    """Refuses content whose sha256 is not the manifest's."""
    where = f'{self.path}/manifest.json'
    content_id, files = content_digests(blobs)
    for name, want in sorted(self.manifest.get('files_sha256', {}).items()):
      if files[name] != want:
        raise ArtifactInvalid(
            f'{self.path}/{name}: sha256 {files[name][:12]}... is not the '
            f'{want[:12]}... of {where}; the file was changed or damaged '
            'after export')
    if content_id != self.manifest['id']:
      raise ArtifactInvalid(
          f'{self.path}: content id {content_id} (sha256 of '
          f'{" + ".join(ID_FILES)}) is not the id '
          f'{self.manifest["id"]!r} of {where}')

  @property
  def version(self) -> str:
    m = self.manifest
    return f'{m["dataset"]}@{m["step"]}-{m["id"]}'

  def inputs(self, histories, exclude_seen) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded int32 history [n, max_len] and exclusion [n, E] arrays
    (the newest exclude_len distinct items of each history, when asked)."""
    n = len(histories)
    if isinstance(exclude_seen, bool):
      exclude_seen = [exclude_seen] * n
    hist = np.zeros((n, self.max_len), np.int32)
    excl = np.zeros((n, self.exclude_len), np.int32)
    for i, h in enumerate(histories):
      h = np.asarray(h, np.int32)
      tail = h[-self.max_len:]
      if len(tail):
        hist[i, self.max_len - len(tail):] = tail
      if exclude_seen[i] and len(h):
        # Distinct items, newest first, capped at exclude_len.
        _, first = np.unique(h[::-1], return_index=True)
        seen = h[::-1][np.sort(first)][:self.exclude_len]
        excl[i, :len(seen)] = seen
    return hist, excl

  def bucket(self, n: int) -> int:
    for b in BUCKETS:
      if n <= b:
        return b
    return BUCKETS[-1]

  def width(self, hist: np.ndarray) -> int:
    """The narrowest width bucket that holds every row of `hist` (plus the
    [MASK] of a bidirectional model)."""
    need = int((hist != 0).sum(axis=1).max(initial=0)) + self.bidirectional
    for w in self.widths:
      if need <= w:
        return w
    return self.max_len

  def run(self, hist: np.ndarray, excl: np.ndarray):
    """(items [n, k_max], scores [n, k_max]) for n rows prepared by
    `inputs`, padded to the bucket sizes (split when n exceeds the largest)
    and cut to the narrowest width bucket that loses no item."""
    items, scores = [], []
    for start in range(0, len(hist), BUCKETS[-1]):
      h, e = hist[start:start + BUCKETS[-1]], excl[start:start + BUCKETS[-1]]
      n = len(h)
      b = self.bucket(n)
      h = h[:, self.max_len - self.width(h):]
      if b > n:
        h = np.concatenate([h, np.zeros((b - n, h.shape[1]), np.int32)])
        e = np.concatenate([e, np.zeros((b - n, e.shape[1]), np.int32)])
      self.compiled.add((b, h.shape[1]))
      top, s = self._call(self._params, h, e)
      items.append(np.asarray(top)[:n])
      scores.append(np.asarray(s)[:n])
    return np.concatenate(items), np.concatenate(scores)

  def recommend(self, histories, k: int = 10, exclude_seen=True):
    """Top-k item ids and scores after each history: lists of lists
    (shorter than k only when fewer items are left to recommend)."""
    if not 1 <= k <= self.k_max:
      raise ValueError(f'k={k}: expected 1..{self.k_max}')
    items, scores = self.run(*self.inputs(histories, exclude_seen))
    out_items, out_scores = [], []
    for it, sc in zip(items[:, :k], scores[:, :k]):
      keep = np.isfinite(sc)
      out_items.append(it[keep].tolist())
      out_scores.append(sc[keep].tolist())
    return out_items, out_scores

  def warmup(self) -> float:
    """Compiles every (batch, width) bucket; returns the seconds it took."""
    t = time.perf_counter()
    for b in BUCKETS:
      for w in self.widths:
        if (b, w) in self.compiled:
          continue
        h = np.zeros((b, self.max_len), np.int32)
        h[:, self.max_len - w + self.bidirectional:] = 1
        self.run(h, np.zeros((b, self.exclude_len), np.int32))
    return time.perf_counter() - t
