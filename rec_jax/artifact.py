"""Loads and runs a serving artifact written by `rec_jax.export`.

Needs only jax and numpy: the recommend function comes back from its
`jax.export` serialization, the weights from params.npz. Batches are padded
to a few fixed sizes (`BUCKETS`) and cut to a few history widths (powers of
two from 8, and max_len) so that serving never compiles after `warmup()`.
An artifact whose function is byte-identical to a loaded one's (a model
retrained with the same shapes) reuses its compiled code: a swap then only
loads weights.
"""

import hashlib
import json
import os
import time

import jax
from jax import export as jax_export
import numpy as np

BUCKETS = (1, 2, 4, 8, 16, 32, 64)
FORMAT_VERSION = 1


class ArtifactError(ValueError):
  """The artifact directory is missing, incomplete or of another format."""


class Artifact:
  """A loaded model: `recommend(histories, k, exclude_seen)`."""

  def __init__(self, path: str, reuse: 'Artifact | None' = None):
    self.path = os.path.abspath(path)
    files = ('manifest.json', 'recommend.jax', 'params.npz', 'items.json')
    missing = [f for f in files
               if not os.path.exists(os.path.join(self.path, f))]
    if missing:
      raise ArtifactError(f'{self.path}: not a rec_jax artifact (missing '
                          f'{", ".join(missing)}); write one with '
                          'python -m rec_jax.export --workdir=...')
    with open(os.path.join(self.path, 'manifest.json'),
              encoding='utf-8') as f:
      self.manifest = json.load(f)
    if self.manifest.get('format_version') != FORMAT_VERSION:
      raise ArtifactError(
          f'{self.path}/manifest.json: format_version '
          f'{self.manifest.get("format_version")!r}, this reader knows '
          f'{FORMAT_VERSION}')
    with open(os.path.join(self.path, 'recommend.jax'), 'rb') as f:
      code = f.read()
    self.function_digest = hashlib.sha256(code).hexdigest()
    with np.load(os.path.join(self.path, 'params.npz')) as z:
      leaves = [z[f'p{i}'] for i in range(self.manifest['num_arrays'])]
    self._params = jax.device_put(leaves)
    with open(os.path.join(self.path, 'items.json'), encoding='utf-8') as f:
      self.items = json.load(f)
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
      self._call = jax.jit(jax_export.deserialize(bytearray(code)).call)
      self.compiled = set()  # (batch, width) shapes compiled so far.

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
