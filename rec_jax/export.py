r"""Exports a trained run as a self-contained serving artifact.

  python -m rec_jax.export --workdir=/tmp/rec_beauty [--out=DIR] [--k_max=100]

The artifact (default `<workdir>/export`) is a directory:

  recommend.jax   the recommend function serialized with `jax.export`
                  (batch dimension symbolic: one artifact serves any batch)
  params.npz      its weights, `p0..pN` in the function's argument order
  manifest.json   shapes, limits, provenance (workdir, step, dataset, date),
                  the content `id` (sha256 of recommend.jax + params.npz,
                  12 hex digits) and every other file's sha256
                  (`files_sha256`), which the reader verifies on load
  items.json      the item-id mapping: internal id i (1..num_items) is
                  row i of `text` (titles / descriptions where the dataset
                  has them)
  config.json     the recipe the model was trained with

It is read by `rec_jax.artifact.Artifact`, which needs only jax and numpy:
no model code, config or checkpoint library on the serving path.

The function: `(params, history int32 [B, W], exclude int32 [B, E]) ->
(items int32 [B, k_max], scores float32 [B, k_max])`, the top k_max items
by score after each history (left-padded with 0, newest item last; any
width W <= max_len, the newest items at the positions they have in a
full-width row, so short histories cost less), with the `exclude` ids
(0 = none) and every non-item row scored -inf. B and W are symbolic.
"""

import datetime
import io
import json
import os
import shutil

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
from jax import export as jax_export
import jax.numpy as jnp
import ml_collections
import numpy as np

from rec_jax import artifact as artifact_lib
from rec_jax import saved_config
from rec_jax import finetune
from rec_jax import metrics
from rec_jax import sharding
from rec_jax import tasks
from rec_jax import trainer

FORMAT_VERSION = artifact_lib.FORMAT_VERSION


def stage_dir(workdir: str) -> str:
  """The fine-tune stage under a recipe workdir (or the stage itself)."""
  workdir = os.path.abspath(workdir)
  for cand in (os.path.join(workdir, 'finetune'), workdir):
    if os.path.exists(os.path.join(cand, 'config.json')) and os.path.isdir(
        os.path.join(cand, 'best')):
      return cand
  raise FileNotFoundError(
      f'{workdir} holds no trained model: expected finetune/config.json and '
      'finetune/best/ (a rec_jax.main workdir) or config.json and best/.')


def load_config(stage: str) -> ml_collections.ConfigDict:
  """The config a trained stage was run with (saved_config.load_saved)."""
  return saved_config.load_saved(os.path.join(stage, 'config.json'))


def bake_text(config, graphdef, params, num_items: int, mesh):
  """A model whose top text layers were tuned, as the equivalent model with
  frozen text features (their output for every item, computed once): the
  served function then does not rerun text layers over the whole catalog
  for every request. Returns (config, graphdef, params) of that model."""
  feats = nnx.merge(graphdef, params).encoder.text.embeddings(jnp.float32)
  baked = ml_collections.ConfigDict(config.to_dict())
  baked.model.text_tune_layers = 0
  graphdef, abs_params, param_sh = finetune.abstract_model(baked, num_items,
                                                           mesh)
  text = {k: v for k, v in params['encoder']['text'].items()
          if k not in ('hidden', 'token_mask', 'layers')}
  text['features'] = jax.device_put(
      feats.astype(abs_params['encoder']['text']['features'].dtype),
      param_sh['encoder']['text']['features'])
  out = dict(params, encoder=dict(params['encoder'], text=text))
  if jax.tree.structure(out) != jax.tree.structure(abs_params):
    raise ValueError('bake_text: the baked parameters do not match the '
                     'frozen-text model')
  return baked, graphdef, out


def recommend_fn(graphdef, treedef, *, max_len: int, mask_id: int | None,
                 k_max: int):
  """The function that gets exported (see the module docstring)."""

  def recommend(leaves, history, exclude):
    model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))
    inputs = history
    if mask_id is not None:  # bidirectional: score at an appended [MASK].
      mask = jnp.full(history.shape[:1] + (1,), mask_id, history.dtype)
      inputs = jnp.concatenate([history[:, 1:], mask], axis=1)
    # Rows of width l <= max_len hold the newest items right-aligned, at
    # the positions they have in a full-width row: same outputs, less work.
    width = inputs.shape[1]
    positions = jnp.broadcast_to(
        max_len - width + jnp.arange(width, dtype=jnp.int32), inputs.shape)
    segment_ids = (inputs != 0).astype(jnp.int32)
    hidden = model(inputs, positions, segment_ids)[:, -1]
    scores = model.encoder.item_logits(hidden)  # [B, V], non-items -inf.
    # Keep-id 0 is padding (already -inf): every listed item is dropped.
    scores = metrics.exclude(scores, exclude,
                             jnp.zeros(exclude.shape[:1], jnp.int32))
    top_scores, top_items = metrics.top_k(scores, k_max)
    return top_items.astype(jnp.int32), top_scores

  return recommend


def export(workdir: str, out: str | None = None, *, k_max: int = 0,
           exclude_len: int = 0) -> str:
  """Writes the artifact of `workdir`'s best fine-tuned params; returns its
  directory. `k_max` (default min(100, num_items)) is the longest list a
  request may ask for; `exclude_len` (default max(200, 4 * max_len)) is how
  many of the newest distinct history items a request can exclude."""
  stage = stage_dir(workdir)
  config = load_config(stage)
  if not tasks.get(config.finetune.task).SERVED:
    raise ValueError(f'{stage}: task={config.finetune.task!r}; only '
                     'next-item models are served for top-K.')
  ds, _ = trainer.load_data(config)
  mesh = sharding.make_mesh(ml_collections.ConfigDict(
      dict(data=1, fsdp=1, model=1)))
  graphdef, params, meta = trainer.load_trained(config, stage, ds.num_items,
                                                mesh)
  if config.model.text_tune_layers:
    config, graphdef, params = bake_text(config, graphdef, params,
                                         ds.num_items, mesh)
  params = jax.device_get(params)
  leaves, treedef = jax.tree.flatten(params)
  max_len = int(config.model.max_len)
  mask_id = None if config.model.causal else ds.num_items + 1
  k_max = k_max or min(100, ds.num_items)
  if not 1 <= k_max <= ds.num_items:
    raise ValueError(f'k_max={k_max}: expected 1..{ds.num_items} (the '
                     'catalog size)')
  exclude_len = exclude_len or max(200, 4 * max_len)
  fn = recommend_fn(graphdef, treedef, max_len=max_len, mask_id=mask_id,
                    k_max=k_max)
  b, width = jax_export.symbolic_shape('b, l')
  exported = jax_export.export(jax.jit(fn))(
      [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
      jax.ShapeDtypeStruct((b, width), jnp.int32),
      jax.ShapeDtypeStruct((b, exclude_len), jnp.int32))
  run_dir = os.path.dirname(stage) if stage.endswith('finetune') else stage
  manifest = dict(
      format_version=FORMAT_VERSION, dataset=ds.name, num_items=ds.num_items,
      table_rows=int(nnx.merge(graphdef, params).encoder.item_table(
      ).shape[0]), max_len=max_len, exclude_len=exclude_len, k_max=k_max,
      bidirectional=mask_id is not None,
      num_params=int(sum(np.size(x) for x in leaves)),
      num_arrays=len(leaves), workdir=run_dir, step=int(meta['step']),
      platforms=list(exported.platforms), jax_version=jax.__version__,
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'))
  out = os.path.abspath(out or os.path.join(run_dir, 'export'))
  write_artifact(out, exported, leaves, manifest, ds, config)
  logging.info('Exported %s (step %d, %d items) to %s.', stage,
               manifest['step'], ds.num_items, out)
  return out


def write_artifact(out: str, exported, leaves, manifest: dict, ds, config):
  """Writes the artifact directory (module docstring) at once: readers
  never see a half-written one. The manifest's `id` is the sha256 of the
  function and its weights; `files_sha256` holds every other file's."""
  tmp = out + '.tmp'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  blobs = {'recommend.jax': exported.serialize()}
  buf = io.BytesIO()
  np.savez(buf, **{f'p{i}': np.asarray(x) for i, x in enumerate(leaves)})
  blobs['params.npz'] = buf.getvalue()
  blobs['items.json'] = json.dumps(dict(
      num_items=ds.num_items,
      text=list(ds.item_text) if ds.item_text is not None else None),
      indent=2, sort_keys=True).encode()
  blobs['config.json'] = config.to_json_best_effort(
      indent=2, sort_keys=True).encode()
  content_id, files = artifact_lib.content_digests(blobs)
  for name, data in blobs.items():
    with open(os.path.join(tmp, name), 'wb') as f:
      f.write(data)
  trainer.save_json(os.path.join(tmp, 'manifest.json'), dict(
      manifest, id=content_id, files_sha256=files))
  if os.path.exists(out):
    old = out + '.old'
    shutil.rmtree(old, ignore_errors=True)
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(tmp, out)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  out = export(_FLAGS['workdir'].value, _FLAGS['out'].value or None,
               k_max=_FLAGS['k_max'].value,
               exclude_len=_FLAGS['exclude_len'].value)
  print(out)


_FLAGS = {}

if __name__ == '__main__':
  _FLAGS['workdir'] = flags.DEFINE_string(
      'workdir', None, 'A trained rec_jax.main workdir (or its finetune/).')
  _FLAGS['out'] = flags.DEFINE_string(
      'out', '', 'Artifact directory (default <workdir>/export).')
  _FLAGS['k_max'] = flags.DEFINE_integer(
      'k_max', 0, 'Longest top-K list a request may ask for (0 = '
      'min(100, num_items)).')
  _FLAGS['exclude_len'] = flags.DEFINE_integer(
      'exclude_len', 0, 'History items a request can exclude (0 = '
      'max(200, 4 * max_len)).')
  flags.mark_flag_as_required('workdir')
  app.run(main)
