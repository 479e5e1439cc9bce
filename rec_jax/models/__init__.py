"""Flax NNX models; every parameter carries logical axis names.

Families. `config.model.name` names a module of this package, one family
per file (`sasrec.py`: the causal and bidirectional Transformer;
`gru4rec.py`: a GRU), looked up with importlib; there is no registry. A
family module exposes the same small interface:

  Encoder(*, num_items, max_len, embed_dim, ..., peft, rngs)
      an nnx.Module built from explicit sizes, subclassing
      items.ItemEncoder (the item table tied to the output layer), with
      `__call__(items, positions, segment_ids, *, key=None,
      return_layers=False, causal=None) -> hidden [B, L, D]` (with
      return_layers also the per-layer outputs: [0] the embeddings,
      [1..num_layers] each layer's, [-1] the final output), `num_layers`,
      `max_len`, `causal` and the ItemEncoder methods (`item_table`,
      `item_logits`, `mask_id`, `embed`);
  encoder_kwargs(model_cfg, num_items, peft) -> dict
      the Encoder's arguments from a `model` config section;
  PACKED: bool
      whether the family honours the packed-rows contract below.

Adding a family is one file here plus one recipe in configs/ (gru4rec.py
and configs/gru4rec.py are the example). Parameter paths under `encoder/`
are the contract with the pretrain -> fine-tune bridge and with saved
checkpoints; the item table's names (`item_embed`, `lora_item_embed_*`,
`text/...`) are shared by every family.

The packed-rows contract. Training and evaluation batches are [rows, L]
arrays `inputs`, `positions`, `segment_ids` in which a row may hold several
users' sequences side by side (rec_jax.data.pipeline packs them best-fit:
on Beauty, whose median training sequence has 4 items against L = 50,
packing is what makes training fast). `segment_ids` keeps them apart: 0 is
padding and positions with equal ids belong to one sequence; `positions`
restart per segment and are right-aligned, so a sequence of n items has
positions L - n .. L - 1, the ones it would have alone in a left-padded
row. An encoder honours the contract when the output at every position of
a sequence equals its output for that sequence alone in a left-padded row
(attention masked to the segment, recurrences reset at segment starts).
A family that cannot honour it (an FFT filter over the whole row, a
recurrence without resets) sets PACKED = False: the pipeline then gives it
unpacked rows, one user per row, left-padded, at the cost of the padding.

Parameters are placed by `jax.jit(init, out_shardings=...)` from shardings
computed on the abstract model, so NNX's eager sharding of each new
variable (which needs a mesh context even for a model built in a notebook)
is turned off; the logical axis names stay on the variables as metadata.
"""

import importlib
import pkgutil

import flax

flax.config.update('flax_always_shard_variable', False)

# pylint: disable=g-import-not-at-top,wrong-import-position
from rec_jax.models import heads
from rec_jax.models import layers
# pylint: enable=g-import-not-at-top,wrong-import-position

# Modules of this package that are shared pieces, not families.
_SHARED = ('heads', 'items', 'layers', 'text')


def families() -> list[str]:
  """Names of the family modules of this package."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if m.name not in _SHARED)


def family(name: str):
  """The family module named by `config.model.name`.

  Raises:
    ValueError: when no module of that name exists, or it lacks the
      interface.
  """
  try:
    module = importlib.import_module(f'{__name__}.{name}')
  except ModuleNotFoundError as e:
    if e.name != f'{__name__}.{name}':
      raise
    raise ValueError(f'model.name={name!r}: no file rec_jax/models/{name}.py; '
                     f'families: {families()}') from None
  missing = [a for a in ('Encoder', 'encoder_kwargs', 'PACKED')
             if not hasattr(module, a)]
  if name in _SHARED or missing:
    raise ValueError(f'model.name={name!r}: rec_jax/models/{name}.py is not '
                     f'an encoder family (lacks {missing or "its role"}); '
                     f'families: {families()}')
  return module


def packs_rows(model_cfg) -> bool:
  """Whether batches for this model may pack several users into a row."""
  return bool(family(model_cfg.name).PACKED)


def encoder(model_cfg, num_items: int, *, peft, rngs):
  """The encoder of `model_cfg.name` for a catalog of num_items."""
  fam = family(model_cfg.name)
  return fam.Encoder(rngs=rngs, **fam.encoder_kwargs(model_cfg, num_items,
                                                     peft))


def build(model_cfg, num_items: int, *, rngs):
  """The fine-tune model: the encoder with its fine-tuning additions
  (`model.peft`) and the task heads."""
  enc = encoder(model_cfg, num_items,
                peft=layers.Peft.from_config(model_cfg.peft), rngs=rngs)
  return heads.FinetuneModel(enc, rngs=rngs, head=model_cfg.head,
                             rating_head=model_cfg.rating_head)


def build_pretrain(model_cfg, num_items: int, *, num_attributes: int = 0,
                   s3rec_heads: bool = False, rngs):
  """The pretraining model: the plain encoder (the fine-tune's additions,
  `model.peft` and the task heads, are dropped as a whole) and the S3-Rec
  heads when asked for."""
  enc = encoder(model_cfg, num_items, peft=layers.NO_PEFT, rngs=rngs)
  return heads.PretrainModel(enc, rngs=rngs, num_attributes=num_attributes,
                             s3rec_heads=s3rec_heads)
