r"""Batch scoring: the top-K of every user of a dataset, from a serving
artifact (the same function the service runs).

  python -m rec_jax.score --workdir=/tmp/rec_beauty --k=10 \
      --history=full --out=/tmp/rec_beauty/top10.parquet

`--history` picks what each user's list follows: `full` (every known
interaction: tomorrow's recommendations), `test` (all but the held-out
last item, as in evaluation) or `valid`. Writes parquet (columns `user`,
`items`, `scores`) or JSON lines (`{"user", "items", "scores"}`), chosen
by the extension of --out or by --format, in batches with a progress bar.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

from rec_jax import artifact as artifact_lib
from rec_jax import saved_config
from rec_jax import serve
from rec_jax import trainer

FORMATS = ('parquet', 'jsonl')


def user_histories(config, which: str) -> list[np.ndarray]:
  ds, split = trainer.load_data(config)
  if which == 'full':
    return [np.asarray(s, np.int32) for s in ds.sequences]
  if which == 'test':
    return split.test_history
  if which == 'valid':
    return split.valid_history
  raise ValueError(f'history={which!r}: expected full, test or valid')


def score(model: artifact_lib.Artifact, histories, out: str, *, k: int,
          fmt: str = '', exclude_seen: bool = True,
          batch_size: int = artifact_lib.BUCKETS[-1]) -> str:
  """Writes the top-k of every history (user u = row u - 1); returns the
  format written."""
  fmt = fmt or os.path.splitext(out)[1].lstrip('.')
  if fmt not in FORMATS:
    raise ValueError(f'format {fmt!r} (from {out!r}): expected one of '
                     f'{FORMATS}; pass --format')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + '.tmp'
  jsonl = open(tmp, 'w', encoding='utf-8') if fmt == 'jsonl' else None
  parquet = None
  try:
    for start in tqdm.trange(0, len(histories), batch_size, desc='score',
                             unit='batch'):
      chunk = histories[start:start + batch_size]
      items, scores = model.recommend(chunk, k=k, exclude_seen=exclude_seen)
      users = list(range(start + 1, start + 1 + len(chunk)))
      if jsonl is not None:
        for u, it, sc in zip(users, items, scores):
          jsonl.write(json.dumps(dict(user=u, items=it, scores=sc)) + '\n')
        continue
      import pyarrow as pa  # pylint: disable=g-import-not-at-top
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
      table = pa.table({
          'user': pa.array(users, pa.int64()),
          'items': pa.array(items, pa.list_(pa.int32())),
          'scores': pa.array(scores, pa.list_(pa.float32()))})
      if parquet is None:
        parquet = pq.ParquetWriter(tmp, table.schema)
      parquet.write_table(table)
  finally:
    for f in (jsonl, parquet):
      if f is not None:
        f.close()
  os.replace(tmp, out)
  return fmt


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  path = serve.resolve_artifact(_FLAGS['workdir'].value,
                                _FLAGS['artifact'].value)
  model = artifact_lib.Artifact(path)
  config = saved_config.load_saved(os.path.join(path, 'config.json'))
  hist = user_histories(config, _FLAGS['history'].value)
  out = _FLAGS['out'].value or os.path.join(
      path, f'top{_FLAGS["k"].value}_{_FLAGS["history"].value}.parquet')
  fmt = score(model, hist, out, k=_FLAGS['k'].value,
              fmt=_FLAGS['format'].value,
              exclude_seen=_FLAGS['exclude_seen'].value)
  logging.info('Wrote the top-%d of %d users to %s (%s).', _FLAGS['k'].value,
               len(hist), out, fmt)
  print(out)


_FLAGS = {}

if __name__ == '__main__':
  serve.define_artifact_flags(_FLAGS, 'scores with')
  _FLAGS['history'] = flags.DEFINE_enum(
      'history', 'full', ['full', 'test', 'valid'],
      'What each list follows.')
  _FLAGS['k'] = flags.DEFINE_integer('k', 10, 'List length.')
  _FLAGS['exclude_seen'] = flags.DEFINE_bool(
      'exclude_seen', True, "Leave the user's own items out.")
  _FLAGS['out'] = flags.DEFINE_string(
      'out', '', 'Output file (.parquet or .jsonl); default '
      '<artifact>/top<k>_<history>.parquet.')
  _FLAGS['format'] = flags.DEFINE_enum(
      'format', '', ['', 'parquet', 'jsonl'],
      'Output format (default: from the extension of --out).')
  app.run(main)
