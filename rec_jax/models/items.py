"""The item table every encoder family shares, tied to the output layer.

Item id layout: 0 is padding, 1..num_items are items, num_items + 1 is the
[MASK] token (used by Cloze objectives); the table is padded to a multiple of
`vocab_multiple` rows so that it splits evenly over the `model` mesh axis.
Rows that are not items never receive probability mass (`item_logits`).

An item's representation is its ID embedding (`item_embed`), plus, with
item text, the adapted text embedding (models.text); a fine-tune with
`model.peft.lora_table_rank` adds a LoRA pair to it. The parameter names
(`encoder/item_embed`, `encoder/lora_item_embed_*`, `encoder/text/...`) are
part of the contract between stages and with saved checkpoints.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from rec_jax.models import layers
from rec_jax.models import text as text_lib

TEXT_MODES = ('transductive', 'inductive')


def vocab_size(num_items: int, multiple: int) -> int:
  """Rows of the item table: pad, items, mask, rounded up to `multiple`."""
  n = num_items + 2
  return -(-n // multiple) * multiple


def mask_non_items(logits, num_items: int):
  """`logits` [..., V] with every row that is not an item at -inf."""
  ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  valid = (ids >= 1) & (ids <= num_items)
  return jnp.where(valid, logits, -jnp.inf)


class ItemEncoder(nnx.Module):
  """Base of every encoder family: the item table and its scores.

  A family's __init__ calls `init_item_table` first and `init_item_extras`
  once its own early parameters exist (the order fixes which random keys
  each parameter draws, so it is kept as the first family had it), and
  sets `self.dtype`, the compute dtype.
  """

  def init_item_table(self, num_items: int, embed_dim: int,
                      vocab_multiple: int, *, rngs: nnx.Rngs):
    self.num_items = num_items
    self.item_embed = layers.param(
        rngs.params(), (vocab_size(num_items, vocab_multiple), embed_dim),
        ('vocab', 'embed'))

  def init_item_extras(self, *, peft: layers.Peft, text_dim: int = 0,
                       text_mode: str = 'transductive',
                       text_experts: int = 4, text_tune_layers: int = 0,
                       text_config: dict | None = None,
                       text_max_tokens: int = 0, rngs: nnx.Rngs):
    """The item table's LoRA pair (peft.lora_table_rank) and text."""
    rows, dim = self.item_embed.shape
    if peft.lora_table_rank:
      # E + s * A B with A [V, r] (zero at start) and B [r, D]: every item
      # can move, at r parameters per item.
      self.lora_scale = peft.lora_scale
      self.lora_item_embed_a = layers.param(
          None, (rows, peft.lora_table_rank), ('vocab', 'lora'),
          nnx.initializers.zeros_init())
      self.lora_item_embed_b = layers.param(
          rngs.params(), (peft.lora_table_rank, dim), ('lora', 'embed'),
          nnx.initializers.normal(peft.lora_table_init))
    if text_mode not in TEXT_MODES:
      raise ValueError(f"model.text_mode={text_mode!r}: expected "
                       "'transductive' (text + ID) or 'inductive' (text)")
    self.text_mode = text_mode
    if text_dim:
      self.text = text_lib.TextAdaptor(
          rows, text_dim, dim, text_experts, rngs=rngs,
          tune_layers=text_tune_layers, text_config=text_config,
          max_tokens=text_max_tokens, peft=peft)

  @property
  def mask_id(self) -> int:
    return self.num_items + 1

  def item_table(self):
    """[V, D] item representations (rows beyond num_items are never
    scored): ID embeddings, plus the adapted text embeddings with text
    (transductive), or the text alone for items (inductive: an item
    unseen in training is represented as well as any other; the ID table
    then only holds [MASK])."""
    ids = layers.lora_weight(self, 'item_embed')
    if not hasattr(self, 'text'):
      return ids
    text = self.text(self.dtype).astype(ids.dtype)
    if self.text_mode == 'transductive':
      return ids + text
    row = jnp.arange(ids.shape[0])[:, None]
    return jnp.where(row == self.mask_id, ids, text)

  def embed(self, items):
    """[B, L, D] item representations of `items` in the compute dtype."""
    return jnp.take(self.item_table().astype(self.dtype), items, axis=0)

  def item_logits(self, hidden):
    """Scores of every table row; non-item rows are set to -inf.

    Args:
      hidden: [..., D] sequence representations.

    Returns:
      [..., V] float32 logits over the whole (padded) table.
    """
    table = self.item_table().astype(hidden.dtype)
    logits = jnp.einsum('...d,vd->...v', hidden, table).astype(jnp.float32)
    return mask_non_items(logits, self.num_items)


def encoder_kwargs(model_cfg, num_items: int, peft: layers.Peft) -> dict:
  """The Encoder arguments every family takes, from a `model` section:
  the catalog, history length, width, direction, dropout, table padding,
  compute dtype, the fine-tune's additions and the item text."""
  m = model_cfg
  return dict(num_items=num_items, max_len=m.max_len, embed_dim=m.embed_dim,
              causal=m.causal, dropout_rate=m.dropout_rate,
              vocab_multiple=m.vocab_multiple, dtype=m.dtype, peft=peft,
              **text_lib.encoder_kwargs(m))
