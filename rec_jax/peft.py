"""Fine-tuning methods as parameter partitions and optax masks.

One trainer serves every method: the method decides which parameters train
(an optax multi_transform gives the others zero updates and no optimizer
moments) and which parameters the model grows for it (LoRA, prefix,
adapters, a head), which the pretrain -> fine-tune bridge leaves fresh.

  full      every parameter.
  frozen    the encoder (item table included) is frozen; a `linear` or `mlp`
            head on its outputs trains (feature extraction).
  partial   the top `partial_layers` blocks, the final norm (and head).
  lora      rank-r adapters on attention and MLP projections.
  prefix    learned per-layer prefix keys and values.
  adapter   bottleneck adapters after each sublayer.
"""

import fnmatch

import jax
import numpy as np
import optax

from rec_jax import trees
from rec_jax.models import layers

METHODS = ('full', 'frozen', 'partial', 'lora', 'prefix', 'adapter')
# Parameters the methods add; a pretrained checkpoint never has them.
ADDED = ('encoder/*/lora_*', 'encoder/lora_*', 'encoder/*/prefix_*',
         'encoder/*/adapter_*')
# Inputs stored as parameters (checkpointed with the model) that never train:
# the frozen text embeddings of the items, or the token states entering the
# text layers tuned with the recommender (model.text_tune_layers).
CONSTANT = ('encoder/text/features', 'encoder/text/hidden',
            'encoder/text/token_mask')
# Tuned text layers: they start from the text model's weights, so a
# checkpoint without them (frozen text) leaves them to be loaded.
TEXT_LAYERS = 'encoder/text/layers/*'


def overrides(method: str) -> dict:
  """The config edits of fine-tuning `method`, as dotted keys (a recipe
  applies them with config_lib.override): the method itself and the
  additions it trains (`model.peft.*`, or a head for `frozen`)."""
  if method not in METHODS:
    raise ValueError(f'finetune={method!r}: expected one of {METHODS}')
  out = {'finetune.method': method, 'finetune.partial_layers': 1}
  if method == 'frozen':
    out['model.head'] = 'linear'
  elif method == 'lora':
    # Rank 8 on the blocks, rank 2 on the item table (most of a
    # recommender's parameters): about 4.6% of SASRec-on-Beauty's.
    out.update({'model.peft.lora_rank': 8, 'model.peft.lora_alpha': 16.0,
                'model.peft.lora_table_rank': 2})
  elif method == 'prefix':
    out['model.peft.prefix_len'] = 8
  elif method == 'adapter':
    out['model.peft.adapter_dim'] = 16
  return out


def trainable(key: str, method: str, num_layers: int,
              partial_layers: int = 1) -> bool:
  """Whether the parameter at `key` ('encoder/blocks/0/attn/query') trains."""
  if any(fnmatch.fnmatch(key, c) for c in CONSTANT):
    return False
  if method == 'full':
    return True
  if key.startswith('head/'):
    return True
  if method == 'frozen':
    return False
  if method == 'partial':
    top = [f'encoder/blocks/{i}/*' for i in
           range(max(num_layers - partial_layers, 0), num_layers)]
    return any(fnmatch.fnmatch(key, p) for p in top + ['encoder/final_norm/*'])
  marker = {'lora': '/lora_', 'prefix': '/prefix_', 'adapter': '/adapter_'}
  if method in marker:
    return marker[method] in key
  raise ValueError(f'finetune.method={method!r}: expected one of {METHODS}')


def labels(params, method: str, num_layers: int, partial_layers: int = 1):
  """'train' / 'frozen' for every leaf of `params`."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: 'train' if trainable(trees.path_str(p), method, num_layers,
                                        partial_layers) else 'frozen',
      params)


def wrap(tx, params, method: str, num_layers: int, partial_layers: int = 1):
  """`tx` on trainable parameters, zero updates (no state) on the rest."""
  lab = labels(params, method, num_layers, partial_layers)
  if method == 'full' and 'frozen' not in jax.tree.leaves(lab):
    return tx
  if 'train' not in jax.tree.leaves(lab):
    raise ValueError(f'finetune.method={method!r} leaves nothing to train '
                     '(frozen needs model.head, lora model.lora_rank, ...)')
  return optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()},
                               lab)


def count(params, method: str, num_layers: int, partial_layers: int = 1):
  """(trainable, total) parameter counts; constants (item text inputs) are
  data, not parameters, and count in neither."""
  lab = jax.tree.leaves(labels(params, method, num_layers, partial_layers))
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  sizes = [0 if any(fnmatch.fnmatch(trees.path_str(p), c) for c in CONSTANT)
           else int(np.prod(x.shape)) for p, x in flat]
  return sum(s for s, l in zip(sizes, lab) if l == 'train'), sum(sizes)


def merge_lora(params, scale: float):
  """Folds every LoRA pair into its base weight and drops the pair, giving
  the params of the same model built with lora_rank=0 (for serving)."""
  def visit(node):
    if not isinstance(node, dict):
      return node
    out = {k: visit(v) for k, v in node.items()
           if not str(k).startswith('lora_')}
    for k in list(node):
      k = str(k)
      if k.startswith('lora_') and k.endswith('_a'):
        base = k[len('lora_'):-len('_a')]
        if base not in out:
          raise ValueError(f'LoRA pair {k} has no base weight {base}')
        delta = layers.lora_delta(node[k], node[f'lora_{base}_b'], scale)
        out[base] = out[base] + delta.astype(out[base].dtype)
    return out
  return visit(params)
