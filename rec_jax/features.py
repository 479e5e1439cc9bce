r"""Feature extraction: user (sequence) and item embeddings from any layer of
a pretrained or fine-tuned encoder.

  python -m rec_jax.features --config=configs/recommended.py:dataset=beauty \
      --workdir=/tmp/rec_beauty --from_stage=pretrain --layer=-1 \
      --history=full --out=/tmp/rec_beauty/features --format=parquet

Writes `users.npy` (or `users.parquet`: columns `user`, `embedding`) with one
row per user, the encoder output at the newest position of the user's
history, and `items.npy` / `items.parquet` with the item table rows
1..num_items (row i-1 is item i). `layer` 0 is the embedding layer (after
its LayerNorm), 1..L the Transformer blocks, -1 the final output (after the
final LayerNorm). Users are encoded in packed batches with a progress bar.
"""

import os

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags
import tqdm

from rec_jax import models
from rec_jax import sharding
from rec_jax import trainer
from rec_jax.data import pipeline

HISTORIES = ('train', 'valid', 'test', 'full')


def histories(ds, split, which: str):
  """Each user's history: training part, up to validation, test or all."""
  if which == 'train':
    return split.train
  if which == 'valid':
    return split.valid_history
  if which == 'test':
    return split.test_history
  if which == 'full':
    return [np.asarray(s, np.int32) for s in ds.sequences]
  raise ValueError(f'history={which!r}: expected one of {HISTORIES}')


def user_embeddings(graphdef, params, hist, *, max_len: int, layer: int,
                    batch_size: int = 512, mask_id: int | None = None,
                    packed: bool = True, desc: str = 'users'):
  """float32 [N, D]: the chosen layer's output at each history's newest
  position (with `mask_id`, at an appended [MASK], for bidirectional
  encoders); histories share rows unless `packed` is False (a family that
  does not pack, rec_jax.models)."""

  @jax.jit
  def encode(params, batch, where):
    model = nnx.merge(graphdef, params)
    _, outs = model.encoder(batch['inputs'], batch['positions'],
                            batch['segment_ids'], return_layers=True)
    h = outs[layer]
    return h[where[:, 0], where[:, 1]]

  num_layers = nnx.merge(graphdef, params).encoder.num_layers
  if not -1 <= layer <= num_layers:
    raise ValueError(f'layer={layer}: the encoder has layers 0..{num_layers} '
                     '(0 = embeddings, -1 = final output)')
  out = []
  for start in tqdm.trange(0, len(hist), batch_size, desc=desc, unit='batch'):
    chunk = list(hist[start:start + batch_size])
    n = len(chunk)
    chunk += [np.zeros(0, np.int32)] * (batch_size - n)  # fixed shapes.
    batch, where = pipeline.pack_eval(chunk, max_len, mask_id=mask_id,
                                      packed=packed)
    rows = batch['inputs'].shape[0]
    batch = {k: np.pad(v, ((0, batch_size - rows), (0, 0)))
             for k, v in batch.items()}
    emb = encode(params, batch, jnp.asarray(where, jnp.int32))
    out.append(np.asarray(emb[:n], np.float32))
  return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def item_embeddings(params, num_items: int) -> np.ndarray:
  """float32 [num_items, D]: row i - 1 is item i."""
  return np.asarray(params['encoder']['item_embed'][1:num_items + 1],
                    np.float32)


def write(path_stem: str, ids: np.ndarray, emb: np.ndarray, fmt: str,
          id_name: str):
  """Writes `path_stem.npy` or `.parquet` (id column + embedding list)."""
  if fmt == 'npy':
    np.save(path_stem + '.npy', emb)
    return path_stem + '.npy'
  if fmt == 'parquet':
    import pyarrow as pa  # pylint: disable=g-import-not-at-top
    import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
    table = pa.table({id_name: pa.array(ids, pa.int64()),
                      'embedding': pa.FixedSizeListArray.from_arrays(
                          pa.array(emb.reshape(-1), pa.float32()),
                          emb.shape[1])})
    pq.write_table(table, path_stem + '.parquet')
    return path_stem + '.parquet'
  raise ValueError(f"format={fmt!r}: expected 'npy' or 'parquet'")


def extract(config, path: str, out_dir: str, *, layer: int = -1,
            history: str = 'full', fmt: str = 'npy',
            batch_size: int = 512) -> dict:
  """Writes user and item embeddings; returns {'users': file, 'items': file}."""
  ds, split = trainer.load_data(config)
  config = trainer.resolved(config, (ds, split))
  mesh = sharding.make_mesh(config.mesh)
  graphdef, params, _ = trainer.load_trained(config, path, ds.num_items, mesh,
                                             encoder_only=True)
  params = jax.device_get(params)
  hist = histories(ds, split, history)
  mask_id = None if config.model.causal else ds.num_items + 1
  users = user_embeddings(graphdef, params, hist,
                          max_len=config.model.max_len, layer=layer,
                          batch_size=batch_size, mask_id=mask_id,
                          packed=models.packs_rows(config.model))
  os.makedirs(out_dir, exist_ok=True)
  files = dict(
      users=write(os.path.join(out_dir, 'users'), split.users, users, fmt,
                  'user'),
      items=write(os.path.join(out_dir, 'items'),
                  np.arange(1, ds.num_items + 1), item_embeddings(
                      params, ds.num_items), fmt, 'item'))
  logging.info('Wrote %s', files)
  return files


def define_flags():
  """The CLI's flags (defined on demand: rec_jax.main owns --config in
  processes that import both)."""
  config_flags.DEFINE_config_file('config', None, 'Recipe config.',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'A trained run (or stage).')
  flags.DEFINE_enum('from_stage', 'finetune', ['finetune', 'pretrain'],
                    'Which stage of the run to read the encoder from.')
  flags.DEFINE_integer('layer', -1, '0 embeddings, 1..L blocks, -1 final '
                       'output.')
  flags.DEFINE_enum('history', 'full', list(HISTORIES),
                    'Which part of each user sequence to encode.')
  flags.DEFINE_string('out', None, 'Output directory (default '
                      'WORKDIR/features).')
  flags.DEFINE_enum('format', 'npy', ['npy', 'parquet'], 'File format.')
  flags.DEFINE_integer('batch_size', 512, 'Users per batch.')
  flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  f = flags.FLAGS
  workdir = os.path.abspath(f.workdir)
  stage_dir = os.path.join(workdir, f.from_stage)
  path = stage_dir if os.path.isdir(stage_dir) else workdir
  files = extract(f.config, path, f.out or os.path.join(workdir, 'features'),
                  layer=f.layer, history=f.history, fmt=f.format,
                  batch_size=f.batch_size)
  for k, v in files.items():
    print(f'{k}: {v}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
