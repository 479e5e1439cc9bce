"""One run at a time per workdir.

Two processes in one workdir (a plan that starts a run that is already
running, a command typed twice) would both write its checkpoints and
metrics: the second restores the first's latest checkpoint, then the two
overwrite each other's steps, and neither's results can be trusted.
`acquire` takes an exclusive `flock` on `<workdir>/.lock` for the life of
the process and refuses, naming the holder, when another process has it.
The lock is released by the kernel when the process ends, however it ends,
so a crashed run leaves nothing to clean up. Local file systems only
(flock does not reach object stores); in a multi-process run only process
0 takes it, since all processes share the workdir by design.
"""

import datetime
import fcntl
import os
import socket

LOCK_NAME = '.lock'


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir."""


def acquire(workdir: str):
  """Locks `workdir` for this process; returns the open lock file (keep a
  reference: closing it releases the lock). Raises WorkdirInUse."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_NAME)
  f = open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or 'a process that wrote no details'
    f.close()
    raise WorkdirInUse(
        f'{workdir} is in use by another run ({holder}; lock file {path}). '
        'Wait for it to end, or choose another --workdir.') from None
  f.seek(0)
  f.truncate()
  f.write(f'pid {os.getpid()} on {socket.gethostname()} since '
          f'{datetime.datetime.now().isoformat(timespec="seconds")}\n')
  f.flush()
  return f


def in_use(workdir: str) -> bool:
  """Whether a live process holds `workdir`'s lock (without taking it)."""
  path = os.path.join(workdir, LOCK_NAME)
  if not os.path.exists(path):
    return False
  with open(path, encoding='utf-8') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return True
  return False
