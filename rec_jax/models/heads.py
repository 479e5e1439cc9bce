"""What sits beside the encoder: the models the two stages train.

`FinetuneModel` is an `encoder` (any family, models package) plus the task
heads of the fine-tune: a `head` on its outputs (feature-extraction
fine-tuning) and a `rating_head` (task=rating). `PretrainModel` is the
`encoder` that fine-tuning inherits plus the heads of the S3-Rec
mutual-information objectives, dropped after pretraining. Parameter paths
(`encoder/...`, `head/...`, `rating_head/...`, `attr_embed`, `w_aap`, ...)
are the contract with the bridge and with saved checkpoints.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rec_jax.models import layers

S3REC_HEADS = ('aap', 'mip', 'map', 'sp')


class Head(nnx.Module):
  """A head on frozen features: `linear` (D x D, identity at start) or
  `mlp` (residual two-layer MLP, zero output at start), so that training
  starts from the pretrained encoder's own scores."""

  def __init__(self, kind: str, dim: int, *, rngs: nnx.Rngs):
    if kind not in ('linear', 'mlp'):
      raise ValueError(f"model.head={kind!r}: expected 'none', 'linear' or "
                       "'mlp'")
    self.kind = kind
    eye = lambda key, shape, dtype: jnp.eye(shape[0], dtype=dtype)
    if kind == 'linear':
      self.w = layers.param(None, (dim, dim), ('embed', 'embed_out'), eye)
    else:
      self.w1 = layers.param(rngs.params(), (dim, 2 * dim), ('embed', 'mlp'))
      self.w2 = layers.param(None, (2 * dim, dim), ('mlp', 'embed'),
                             nnx.initializers.zeros_init())
    self.b = layers.param(None, (dim,), ('embed',),
                          nnx.initializers.zeros_init())

  def __call__(self, h):
    if self.kind == 'linear':
      return h @ self.w[...].astype(h.dtype) + self.b[...].astype(h.dtype)
    return h + jax.nn.gelu(h @ self.w1[...].astype(h.dtype)) @ self.w2[
        ...].astype(h.dtype) + self.b[...].astype(h.dtype)


class RatingHead(nnx.Module):
  """Rating of item e after a history encoded as h, whose own ratings sum to
  `history_sum` over `history_count` items:

    mean + b + b_item + a * (shrunk user mean - mean) + (h W) . e,

  the shrunk user mean being (history_sum + k * mean) / (history_count + k)
  with a learned k > 0 (a user with few ratings stays near the global mean).
  The user term reads the ratings of the history, which the item-only
  encoder cannot see; it needs no user id, so new users need no retraining.
  """

  def __init__(self, dim: int, vocab: int, *, rngs: nnx.Rngs):
    z = nnx.initializers.zeros_init()
    const = lambda v: (lambda key, shape, dtype: jnp.full(shape, v, dtype))
    self.w = layers.param(rngs.params(), (dim, dim), ('embed', 'embed_out'))
    self.item_bias = layers.param(None, (vocab,), ('vocab',), z)
    self.bias = layers.param(None, (), (), z)
    self.user_weight = layers.param(None, (), (), const(1.0))
    self.log_shrink = layers.param(None, (), (), const(float(np.log(5.0))))

  def __call__(self, h, items, table, mean: float, history_sum=None,
               history_count=None):
    e = jnp.take(table, items, axis=0).astype(h.dtype)
    inter = jnp.sum((h @ self.w[...].astype(h.dtype)) * e, -1)
    out = (mean + self.bias[...] + jnp.take(self.item_bias[...], items)
           + inter).astype(jnp.float32)
    if history_sum is not None:
      k = jnp.exp(self.log_shrink[...])
      user = (history_sum + k * mean) / (history_count + k)
      out = out + self.user_weight[...] * (user - mean)
    return out



class FinetuneModel(nnx.Module):
  """The fine-tune model: an `encoder` (whose item table is the output
  layer) and, for feature-extraction fine-tuning, an optional `head` on its
  outputs; `rating_head` for the rating task."""

  def __init__(self, encoder: nnx.Module, *, rngs: nnx.Rngs,
               head: str = 'none', rating_head: bool = False):
    self.encoder = encoder
    dim, rows = encoder.item_embed.shape[1], encoder.item_embed.shape[0]
    if head != 'none':
      self.head = Head(head, dim, rngs=rngs)
    if rating_head:
      self.rating_head = RatingHead(dim, rows, rngs=rngs)

  def __call__(self, items, positions, segment_ids, *, key=None):
    """User representations [B, L, D] (encoder, then the head if any)."""
    h = self.encoder(items, positions, segment_ids, key=key)
    return self.head(h) if hasattr(self, 'head') else h


class PretrainModel(nnx.Module):
  """The pretraining model: the `encoder` that fine-tuning inherits, plus
  the heads of the S3-Rec mutual-information objectives (dropped after
  pretraining): attribute embeddings and one bilinear map per objective
  (associated attribute, masked item, masked attribute, segment)."""

  def __init__(self, encoder: nnx.Module, *, rngs: nnx.Rngs,
               num_attributes: int = 0, s3rec_heads: bool = False):
    self.encoder = encoder
    if s3rec_heads:
      if num_attributes <= 0:
        raise ValueError('S3-Rec objectives need item attributes; this '
                         'dataset has none.')
      dim = encoder.item_embed.shape[1]
      self.attr_embed = layers.param(rngs.params(), (num_attributes + 1, dim),
                                     ('attr', 'embed'))
      for name in S3REC_HEADS:
        setattr(self, f'w_{name}', layers.param(
            rngs.params(), (dim, dim), ('embed', 'embed_out')))
