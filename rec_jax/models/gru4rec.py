"""GRU4Rec: a recurrent encoder over item ids (Hidasi et al., ICLR 2016, in
its next-item form with the item table tied to the output layer), the
classic baseline of sequential-recommendation tables.

  config.model.name = 'gru4rec'

Item embeddings (dropout) -> `num_layers` GRU layers of width `hidden_dim`,
run over the sequence with `jax.lax.scan` -> a projection back to
`embed_dim`, scored against the item table. Keys it reads besides the
shared ones (models package docstring): num_layers, hidden_dim. Causal by
construction: `causal` must be true, and objectives that need
bidirectional attention (Cloze, the S3-Rec masked objectives) are refused.
Positions are not used: the recurrence orders the items.

Packed rows: the recurrence restarts (state zero) wherever a new segment
begins, so a user's outputs do not depend on who shares the row (PACKED).
LoRA (`model.peft.lora_rank`) adapts the input and recurrent weights;
prefixes and adapters need attention blocks and are refused.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from rec_jax.models import items as items_lib
from rec_jax.models import layers

PACKED = True


class GRULayer(nnx.Module):
  """One GRU layer: update, reset and candidate gates from the input
  (`w` [D, 3, H]) and the previous state (`u` [H, 3, H])."""

  def __init__(self, in_dim: int, hidden: int, *, rngs: nnx.Rngs,
               peft: layers.Peft = layers.NO_PEFT):
    z = nnx.initializers.zeros_init()
    self.w = layers.param(rngs.params(), (in_dim, 3, hidden),
                          ('embed', None, 'mlp'))
    self.u = layers.param(rngs.params(), (hidden, 3, hidden),
                          (None, None, 'mlp'),
                          nnx.initializers.orthogonal(column_axis=-1))
    self.b = layers.param(None, (3, hidden), (None, 'mlp'), z)
    self.b_hidden = layers.param(None, (hidden,), ('mlp',), z)
    self.lora_scale = peft.lora_scale
    r = peft.lora_rank
    if r:
      self.lora_w_a, self.lora_w_b = layers.lora_pair(
          rngs, (in_dim, r), ('embed', 'lora'), (r, 3, hidden),
          ('lora', None, 'mlp'))
      self.lora_u_a, self.lora_u_b = layers.lora_pair(
          rngs, (hidden, r), (None, 'lora'), (r, 3, hidden),
          ('lora', None, 'mlp'))

  def __call__(self, x, starts):
    """x [B, L, D], starts bool [B, L] (a segment begins: the state
    resets) -> states [B, L, H]."""
    dtype = x.dtype
    xw = jnp.einsum('bld,dgh->lbgh', x, layers.lora_weight(self, 'w').astype(
        dtype)) + self.b[...].astype(dtype)                 # [L, B, 3, H]
    u = layers.lora_weight(self, 'u').astype(dtype)
    b_hidden = self.b_hidden[...].astype(dtype)

    def cell(h, inputs):
      xw_t, start = inputs
      h = jnp.where(start[:, None], jnp.zeros_like(h), h)
      hu = jnp.einsum('bh,hgk->bgk', h, u)
      update = jax.nn.sigmoid(xw_t[:, 0] + hu[:, 0])
      reset = jax.nn.sigmoid(xw_t[:, 1] + hu[:, 1])
      cand = jnp.tanh(xw_t[:, 2] + reset * (hu[:, 2] + b_hidden))
      h = (1.0 - update) * cand + update * h
      return h, h

    h0 = jnp.zeros((x.shape[0], u.shape[0]), dtype)
    _, states = jax.lax.scan(cell, h0, (xw, starts.T))
    return jnp.swapaxes(states, 0, 1)


class Encoder(items_lib.ItemEncoder):
  """Item embeddings, GRU layers, a projection to the item space."""

  def __init__(self, *, num_items: int, max_len: int, embed_dim: int,
               num_layers: int, hidden_dim: int, causal: bool = True,
               dropout_rate: float = 0.0, vocab_multiple: int = 128,
               dtype: str = 'float32', peft: layers.Peft = layers.NO_PEFT,
               rngs: nnx.Rngs, **text_kwargs):
    if not causal:
      raise ValueError('model.name=gru4rec is causal: model.causal must be '
                       'true')
    if peft.prefix_len or peft.adapter_dim:
      raise ValueError('model.name=gru4rec: prefix tuning and adapters need '
                       'attention blocks (finetune=lora, partial, frozen or '
                       'full work)')
    if not (0.0 <= dropout_rate < 1.0 or dropout_rate == -1.0):
      raise ValueError(f'model.dropout_rate={dropout_rate}: expected a rate '
                       'in [0, 1)')
    self.max_len = max_len
    self.causal = True
    self.dropout_rate = dropout_rate
    self.dtype = jnp.dtype(dtype)
    self.init_item_table(num_items, embed_dim, vocab_multiple, rngs=rngs)
    self.init_item_extras(peft=peft, rngs=rngs, **text_kwargs)
    self.blocks = nnx.List([
        GRULayer(embed_dim if i == 0 else hidden_dim, hidden_dim, rngs=rngs,
                 peft=peft) for i in range(num_layers)])
    self.proj = layers.param(rngs.params(), (hidden_dim, embed_dim),
                             ('mlp', 'embed'))

  @property
  def num_layers(self) -> int:
    return len(self.blocks)

  def __call__(self, items, positions, segment_ids, *, key=None,
               return_layers: bool = False, causal: bool | None = None):
    """Encodes item sequences (arguments as in models.sasrec.Encoder;
    `positions` are not read). Returns hidden [B, L, D] (and the per-layer
    outputs: the embeddings, then each GRU layer's states)."""
    del positions
    if causal is False:
      raise ValueError('model.name=gru4rec is causal; this objective needs '
                       'a bidirectional encoder')
    keys = layers.split_key(key, len(self.blocks) + 1)
    real = (segment_ids != 0)[..., None]
    previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
    starts = segment_ids != previous
    x = layers.dropout(self.embed(items), self.dropout_rate, keys[0])
    x = x * real.astype(x.dtype)
    outs = [x]
    for block, k in zip(self.blocks, keys[1:]):
      x = layers.dropout(block(x, starts), self.dropout_rate, k)
      outs.append(x)
    x = (x @ self.proj[...].astype(x.dtype)) * real.astype(x.dtype)
    outs.append(x)
    return (x, outs) if return_layers else x


def encoder_kwargs(model_cfg, num_items: int, peft: layers.Peft) -> dict:
  """Encoder arguments from a `model` section (explicit sizes)."""
  return dict(items_lib.encoder_kwargs(model_cfg, num_items, peft),
              num_layers=model_cfg.num_layers,
              hidden_dim=model_cfg.hidden_dim)
