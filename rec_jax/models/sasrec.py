"""The Transformer family: SASRec (causal attention) and BERT4Rec
(bidirectional attention, `model.causal=False`) over item ids, the item
table tied to the output layer (models.items).

  config.model.name = 'sasrec'

Keys it reads besides the shared ones (models package docstring):
num_layers, num_heads, mlp_dim, attention_dropout_rate, positions
(absolute | none | relative), remat.
"""

import jax.numpy as jnp
from flax import nnx

from rec_jax.models import items as items_lib
from rec_jax.models import layers

# Segment-masked attention and per-segment positions honour the packed-rows
# contract (models package docstring).
PACKED = True

# How the encoder sees order: learned absolute position embeddings added to
# the inputs (SASRec / BERT4Rec), none (causal attention alone orders the
# items), or relative: a learned per-head attention bias by query-key
# distance, the same for a query wherever its sequence sits in the window.
POSITIONS = ('absolute', 'none', 'relative')


def check_rate(name: str, rate: float):
  """A dropout rate in [0, 1), or -1: set from the data when they are
  loaded (a model built before that evaluates and has shapes, and refuses
  to train: layers.dropout)."""
  if not (0.0 <= rate < 1.0 or rate == -1.0):
    raise ValueError(f'model.{name}={rate}: expected a rate in [0, 1)')


class Encoder(items_lib.ItemEncoder):
  """Item + position embeddings, Transformer blocks, final LayerNorm."""

  def __init__(self, *, num_items: int, max_len: int, embed_dim: int,
               num_layers: int, num_heads: int, mlp_dim: int, causal: bool,
               dropout_rate: float = 0.0, attention_dropout_rate: float = 0.0,
               vocab_multiple: int = 128, dtype: str = 'float32',
               remat: bool = False, positions: str = 'absolute',
               peft: layers.Peft = layers.NO_PEFT, rngs: nnx.Rngs,
               **text_kwargs):
    check_rate('dropout_rate', dropout_rate)
    check_rate('attention_dropout_rate', attention_dropout_rate)
    if positions not in POSITIONS:
      raise ValueError(f'model.positions={positions!r}: expected one of '
                       f'{POSITIONS}')
    self.positions = positions
    self.max_len = max_len
    self.causal = causal
    self.dropout_rate = dropout_rate
    self.attention_dropout_rate = attention_dropout_rate
    self.dtype = jnp.dtype(dtype)
    self.remat = remat
    self.init_item_table(num_items, embed_dim, vocab_multiple, rngs=rngs)
    if positions == 'absolute':
      self.pos_embed = layers.param(rngs.params(), (max_len, embed_dim),
                                    ('seq', 'embed'))
    elif positions == 'relative':
      # One learned attention bias per head and query-key distance
      # (-(max_len - 1) .. max_len - 1), shared by the blocks.
      self.rel_bias = layers.param(None, (num_heads, 2 * max_len - 1),
                                   ('heads', None),
                                   nnx.initializers.zeros_init())
    self.init_item_extras(peft=peft, rngs=rngs, **text_kwargs)
    self.embed_norm = layers.LayerNorm(embed_dim, rngs=rngs)
    self.blocks = nnx.List([
        layers.Block(embed_dim, num_heads, mlp_dim, rngs=rngs, peft=peft)
        for _ in range(num_layers)])
    self.final_norm = layers.LayerNorm(embed_dim, rngs=rngs)

  @property
  def num_layers(self) -> int:
    return len(self.blocks)

  def __call__(self, items, positions, segment_ids, *, key=None,
               return_layers: bool = False, causal: bool | None = None):
    """Encodes item sequences.

    Args:
      items: int [B, L] item ids (0 = padding).
      positions: int [B, L] position ids in [0, max_len); sequences are
        right-aligned, so the newest item of a sequence sits at max_len - 1.
      segment_ids: int [B, L]; 0 is padding and positions with equal ids
        belong to the same sequence (several sequences may share a row).
      key: dropout key; None means deterministic (evaluation).
      return_layers: also return every layer's output (feature extraction).
      causal: overrides the encoder's attention direction for this call
        (pretraining objectives mix directions over the same parameters).

    Returns:
      hidden [B, L, D] (and a list of per-layer [B, L, D] if requested).
    """
    x, mask, bias, keys = self._inputs(items, positions, segment_ids, key,
                                       causal)
    outs = [x]
    run = self._block_fn()
    for block, k in zip(self.blocks, keys[1:]):
      x = run(block, x, mask, k, bias)
      outs.append(x)
    x = self.final_norm(x)
    outs[-1] = x
    return (x, outs) if return_layers else x

  def at(self, items, positions, segment_ids, index, *, key=None,
         causal: bool | None = None):
    """The encoder's output at a few positions only: [N, D] at flat
    positions `index` [N] of the [B, L] inputs, equal to
    `__call__(...).reshape(-1, D)[index]` (dropout aside: the last block's
    masks are drawn for its smaller shapes). The last block computes its
    queries, residuals and MLP at those positions alone; a sequence-level
    view (contrastive learning reads each view's newest position) costs
    about one block less."""
    x, mask, bias, keys = self._inputs(items, positions, segment_ids, key,
                                       causal)
    run = self._block_fn()
    for block, k in zip(self.blocks[:-1], keys[1:-1]):
      x = run(block, x, mask, k, bias)
    x = self.blocks[-1].at(
        x, index, mask, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, key=keys[-1],
        bias=bias)
    return self.final_norm(x)

  def _inputs(self, items, positions, segment_ids, key, causal):
    """(embedded inputs [B, L, D], attention mask, relative bias or None,
    dropout keys: the embedding's, then one per block)."""
    keys = layers.split_key(key, len(self.blocks) + 1)
    x = self.embed(items)
    bias = None
    if self.positions == 'absolute':
      x = x + jnp.take(self.pos_embed[...].astype(self.dtype), positions,
                       axis=0)
    elif self.positions == 'relative':
      dist = positions[:, :, None] - positions[:, None, :] + self.max_len - 1
      bias = jnp.moveaxis(self.rel_bias[...][:, jnp.clip(
          dist, 0, 2 * self.max_len - 2)], 0, 1)          # [B, H, L, L]
    x = layers.dropout(self.embed_norm(x), self.dropout_rate, keys[0])
    x = x * (segment_ids != 0)[..., None].astype(x.dtype)
    mask = layers.attention_mask(
        segment_ids, causal=self.causal if causal is None else causal)
    return x, mask, bias, keys

  def _block_fn(self):
    def run(block, x, mask, k, bias):
      return block(x, mask, dropout_rate=self.dropout_rate,
                   attention_dropout_rate=self.attention_dropout_rate, key=k,
                   bias=bias)
    return nnx.remat(run) if self.remat else run


def encoder_kwargs(model_cfg, num_items: int, peft: layers.Peft) -> dict:
  """Encoder arguments from a `model` section (explicit sizes)."""
  m = model_cfg
  return dict(items_lib.encoder_kwargs(m, num_items, peft),
              num_layers=m.num_layers, num_heads=m.num_heads,
              mlp_dim=m.mlp_dim,
              attention_dropout_rate=m.attention_dropout_rate,
              remat=m.remat, positions=m.positions)
