"""Host memory: keep what XLA frees for its next step.

XLA on CPU allocates each execution's buffers through the C library's
malloc and frees them when the step ends. With glibc's defaults the heaps
give freed blocks of a few tens of MB back to the kernel, so the next step
touches fresh pages and pays a page fault per 4 KB: a Beauty SASRec step
took ~14,000 minor faults, and its [800 x 12,101] logits matmul 15 ms
where the same matmul into warm memory takes a few. Setting glibc's top
pad and trim threshold to `keep` MB makes every heap keep that much freed
memory and grow by as much at a time, so a step reuses the pages of the
one before: no faults per step in steady state
(benchmarks/results/hostmem.md has the side-by-side figures).

`import rec_jax` calls `keep_freed_memory()`, once per process. Import it
before numpy and JAX: the setting reaches only the heaps created after it,
and threads started earlier (numpy's BLAS pool, XLA's workers) leave heaps
that later threads share. Imported first (as `python -m rec_jax.main`
does), a Beauty step faulted 0-4 pages in steady state in 3 of 3 runs;
imported after numpy and JAX, ~6,800 (half of the defaults' ~14,300) in
3 of 5; set after JAX's first computation, it changed nothing. REC_JAX_MALLOC_KEEP_MB sets
the amount (0 leaves the C library as it is); where the C library is not
glibc (macOS, musl) nothing is done. The cost: each heap may hold up to
that much freed memory resident instead of returning it.
"""

import ctypes
import os

from absl import logging

DEFAULT_KEEP_MB = 256
ENV = 'REC_JAX_MALLOC_KEEP_MB'
# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2
_MAX_MB = 2047   # mallopt takes an int of bytes.
_done = None


def keep_mb() -> int:
  """The MB of freed memory asked to be kept: REC_JAX_MALLOC_KEEP_MB, else
  the default."""
  raw = os.environ.get(ENV, '').strip()
  if not raw:
    return DEFAULT_KEEP_MB
  try:
    value = int(raw)
  except ValueError:
    value = -1
  if not 0 <= value <= _MAX_MB:
    raise ValueError(f'{ENV}={raw!r}: expected a whole number of MB from 0 '
                     f'(0 leaves malloc as it is) to {_MAX_MB}')
  return value


def _glibc():
  """The process's C library when it is glibc, else None (its symbols are
  the process's own: no library search at import)."""
  libc = ctypes.CDLL(None)
  return libc if hasattr(libc, 'gnu_get_libc_version') else None


def set_keep(mb: int) -> bool:
  """Sets glibc's malloc top pad and trim threshold to `mb` MB now; False
  where the C library is not glibc or refuses it. (The mmap threshold is
  left alone: fixed at glibc's largest, 32 MB, the Beauty step faulted
  7,000 pages a step again.)"""
  if not 1 <= mb <= _MAX_MB:  # (glibc's dynamic defaults cannot be set back)
    raise ValueError(f'keep {mb} MB: expected 1 to {_MAX_MB}')
  libc = _glibc()
  if libc is None:
    return False
  return all(libc.mallopt(param, ctypes.c_int(mb << 20))
             for param in (_M_TOP_PAD, _M_TRIM_THRESHOLD))


def keep_freed_memory() -> int:
  """Keeps freed memory (REC_JAX_MALLOC_KEEP_MB, else the default) from
  here on, once per process; returns the MB in force (0 when nothing was
  set: not glibc, or 0 asked for)."""
  global _done
  if _done is None:
    mb = keep_mb()
    _done = mb if mb and set_keep(mb) else 0
    if mb and not _done:
      logging.info('malloc keeps glibc defaults (not glibc): XLA steps '
                   'may pay page faults on freshly freed memory')
  return _done
