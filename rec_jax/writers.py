"""Metric writer with clu's method names: JSON lines + TensorBoard events.

Active on process 0 only. TensorBoard events come from tensorboardX, which
needs no TensorFlow (clu's writers import TensorFlow at import time).
"""

import json
import os
import time

import jax


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    self._jsonl = open(self.path, 'a', encoding='utf-8')

  def write_scalars(self, step: int, scalars: dict):
    if not self._active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps(
        {'step': int(step), 'time': round(time.time(), 3), **scalars}) + '\n')
    for k, v in scalars.items():
      self._tb.add_scalar(k, v, int(step))

  def flush(self):
    if self._active:
      self._jsonl.flush()
      self._tb.flush()

  def close(self):
    if self._active:
      self.flush()
      self._jsonl.close()
      self._tb.close()


def read_jsonl(path: str) -> list[dict]:
  """Reads back a metrics.jsonl file."""
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
