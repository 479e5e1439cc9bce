"""Transformer sequence encoder over item ids: SASRec (causal attention) and
BERT4Rec (bidirectional attention) share it; the item table is tied to the
output layer.

Item id layout: 0 is padding, 1..num_items are items, num_items + 1 is the
[MASK] token (used by Cloze objectives); the table is padded to a multiple of
`vocab_multiple` rows so that it splits evenly over the `model` mesh axis.
Rows that are not items never receive probability mass (see `item_logits`).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rec_jax import text_encoder
from rec_jax.models import layers


# How the encoder sees order: learned absolute position embeddings added to
# the inputs (SASRec / BERT4Rec), none (causal attention alone orders the
# items), or relative: a learned per-head attention bias by query-key
# distance, the same for a query wherever its sequence sits in the window.
POSITIONS = ('absolute', 'none', 'relative')


def vocab_size(num_items: int, multiple: int) -> int:
  """Rows of the item table: pad, items, mask, rounded up to `multiple`."""
  n = num_items + 2
  return -(-n // multiple) * multiple


class TextAdaptor(nnx.Module):
  """Item text -> item representations (UniSRec-style): a mixture of
  `experts` parametric whitening maps (x - b_k) W_k, mixed by a softmax gate
  on the text embedding x.

  Frozen text (`tune_layers=0`): x is `features` [V, text_dim], the items'
  text embeddings, a parameter that never trains (rec_jax.peft.CONSTANT):
  filled from the text encoder, saved with the model.

  Tuned text (`tune_layers=k`): the top k layers of the text encoder run
  inside the recommender on every item's token states entering them
  (`hidden` [V, T, text_dim] and `token_mask` [V, T], constants computed
  once by the frozen lower layers), followed by the encoder's mean pooling
  and L2 normalisation, so the k layers train end to end with the
  recommendation loss. At initialisation (pretrained layer weights) x equals
  the frozen features. `text_config` is the text model's config.json.
  `peft.lora_rank` > 0 puts LoRA adapters on the tuned layers' projections
  (finetune=lora then trains those, not the layers' weights).
  """

  def __init__(self, vocab: int, text_dim: int, dim: int, experts: int, *,
               rngs: nnx.Rngs, tune_layers: int = 0,
               text_config: dict | None = None, max_tokens: int = 0,
               peft: layers.Peft = layers.NO_PEFT):
    z = nnx.initializers.zeros_init()
    self.tune_layers = tune_layers
    if tune_layers:
      if not text_config or max_tokens <= 0:
        raise ValueError('model.text_tune_layers needs the text model config '
                         'and model.text_max_length > 0')
      if text_config['hidden_size'] != text_dim:
        raise ValueError(f'model.text_dim={text_dim} but the text model is '
                         f'{text_config["hidden_size"]}-d')
      self.hidden = layers.param(None, (vocab, max_tokens, text_dim),
                                 ('vocab', None, None), z)
      self.token_mask = layers.param(None, (vocab, max_tokens),
                                     ('vocab', None), z)
      self.layers = nnx.List([
          text_encoder.Layer(text_config, rngs=rngs,
                             lora_rank=peft.lora_rank,
                             lora_scale=peft.lora_scale)
          for _ in range(tune_layers)])
    else:
      self.features = layers.param(None, (vocab, text_dim), ('vocab', None),
                                   z)
    self.bias = layers.param(None, (experts, text_dim), (None, None), z)
    self.proj = layers.param(rngs.params(), (experts, text_dim, dim),
                             (None, None, 'embed'))
    self.gate = layers.param(None, (text_dim, experts), (None, None), z)

  def embeddings(self, dtype):
    """[V, text_dim] text embeddings of every table row."""
    if not self.tune_layers:
      return self.features[...].astype(dtype)
    mask = self.token_mask[...] > 0
    x = self.hidden[...].astype(dtype)
    for layer in self.layers:
      x = layer(x, mask)
    return text_encoder.mean_pool(x, mask).astype(dtype)

  def __call__(self, dtype):
    x = self.embeddings(dtype)
    gate = jax.nn.softmax((x @ self.gate[...].astype(dtype)).astype(
        jnp.float32), -1).astype(dtype)                       # [V, K]
    xw = jnp.einsum('vt,ktd->vkd', x, self.proj[...].astype(dtype))
    bw = jnp.einsum('kt,ktd->kd', self.bias[...].astype(dtype),
                    self.proj[...].astype(dtype))
    return jnp.einsum('vk,vkd->vd', gate, xw - bw[None])


class SequenceEncoder(nnx.Module):
  """Item + position embeddings, Transformer blocks, final LayerNorm."""

  def __init__(self, *, num_items: int, max_len: int, embed_dim: int,
               num_layers: int, num_heads: int, mlp_dim: int, causal: bool,
               dropout_rate: float = 0.0, attention_dropout_rate: float = 0.0,
               vocab_multiple: int = 128, dtype: str = 'float32',
               remat: bool = False, text_dim: int = 0,
               lora_table_rank: int = 0, lora_table_init: float = 0.02,
               text_mode: str = 'transductive', text_experts: int = 4,
               text_tune_layers: int = 0, text_config: dict | None = None,
               text_max_tokens: int = 0, positions: str = 'absolute',
               peft: layers.Peft = layers.NO_PEFT, rngs: nnx.Rngs):
    for name, rate in (('dropout_rate', dropout_rate),
                       ('attention_dropout_rate', attention_dropout_rate)):
      # -1: set from the data when they are loaded; a model built before
      # that evaluates and has shapes, and refuses to train (layers.dropout).
      if not (0.0 <= rate < 1.0 or rate == -1.0):
        raise ValueError(f'model.{name}={rate}: expected a rate in [0, 1)')
    if positions not in POSITIONS:
      raise ValueError(f'model.positions={positions!r}: expected one of '
                       f'{POSITIONS}')
    self.positions = positions
    self.num_items = num_items
    self.max_len = max_len
    self.causal = causal
    self.dropout_rate = dropout_rate
    self.attention_dropout_rate = attention_dropout_rate
    self.dtype = jnp.dtype(dtype)
    self.remat = remat
    self.item_embed = layers.param(
        rngs.params(), (vocab_size(num_items, vocab_multiple), embed_dim),
        ('vocab', 'embed'))
    if positions == 'absolute':
      self.pos_embed = layers.param(rngs.params(), (max_len, embed_dim),
                                    ('seq', 'embed'))
    elif positions == 'relative':
      # One learned attention bias per head and query-key distance
      # (-(max_len - 1) .. max_len - 1), shared by the blocks.
      self.rel_bias = layers.param(None, (num_heads, 2 * max_len - 1),
                                   ('heads', None),
                                   nnx.initializers.zeros_init())
    if lora_table_rank:
      # LoRA on the item table: E + s * A B with A [V, r] (zero at start)
      # and B [r, D]: every item can move, at r parameters per item.
      self.lora_scale = peft.lora_scale
      self.lora_item_embed_a = layers.param(
          None, (self.item_embed.shape[0], lora_table_rank),
          ('vocab', 'lora'), nnx.initializers.zeros_init())
      self.lora_item_embed_b = layers.param(
          rngs.params(), (lora_table_rank, embed_dim), ('lora', 'embed'),
          nnx.initializers.normal(lora_table_init))
    if text_mode not in ('transductive', 'inductive'):
      raise ValueError(f"model.text_mode={text_mode!r}: expected "
                       "'transductive' (text + ID) or 'inductive' (text)")
    self.text_mode = text_mode
    if text_dim:
      self.text = TextAdaptor(self.item_embed.shape[0], text_dim, embed_dim,
                              text_experts, rngs=rngs,
                              tune_layers=text_tune_layers,
                              text_config=text_config,
                              max_tokens=text_max_tokens, peft=peft)
    self.embed_norm = layers.LayerNorm(embed_dim, rngs=rngs)
    self.blocks = nnx.List([
        layers.Block(embed_dim, num_heads, mlp_dim, rngs=rngs, peft=peft)
        for _ in range(num_layers)])
    self.final_norm = layers.LayerNorm(embed_dim, rngs=rngs)

  @property
  def mask_id(self) -> int:
    return self.num_items + 1

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
    keys = layers.split_key(key, len(self.blocks) + 1)
    table = self.item_table().astype(self.dtype)
    x = jnp.take(table, items, axis=0)
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
    outs = [x]
    def run(block, x, mask, k, bias):
      return block(x, mask, dropout_rate=self.dropout_rate,
                   attention_dropout_rate=self.attention_dropout_rate, key=k,
                   bias=bias)

    if self.remat:
      run = nnx.remat(run)
    for block, k in zip(self.blocks, keys[1:]):
      x = run(block, x, mask, k, bias)
      outs.append(x)
    x = self.final_norm(x)
    outs[-1] = x
    return (x, outs) if return_layers else x

  def item_table(self):
    """[V, D] item representations (rows beyond num_items are never
    scored): ID embeddings, plus the adapted text embeddings with text
    (transductive), or the text alone for items (inductive: an item
    unseen in training is represented as well as any other; the ID table
    then only holds [MASK])."""
    ids = self.item_embed[...]
    if hasattr(self, 'lora_item_embed_a'):
      ids = ids + self.lora_scale * (self.lora_item_embed_a[...]
                                     @ self.lora_item_embed_b[...])
    if not hasattr(self, 'text'):
      return ids
    text = self.text(self.dtype).astype(ids.dtype)
    if self.text_mode == 'transductive':
      return ids + text
    row = jnp.arange(ids.shape[0])[:, None]
    return jnp.where(row == self.mask_id, ids, text)

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


def mask_non_items(logits, num_items: int):
  ids = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
  valid = (ids >= 1) & (ids <= num_items)
  return jnp.where(valid, logits, -jnp.inf)


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


class NextItemModel(nnx.Module):
  """The fine-tune model for next-item ranking: an `encoder` (whose item
  table is the output layer) and, for feature-extraction fine-tuning, an
  optional `head` on its outputs."""

  def __init__(self, *, rngs: nnx.Rngs, head: str = 'none',
               rating_head: bool = False, **encoder_kwargs):
    self.encoder = SequenceEncoder(rngs=rngs, **encoder_kwargs)
    if head != 'none':
      self.head = Head(head, encoder_kwargs['embed_dim'], rngs=rngs)
    if rating_head:
      self.rating_head = RatingHead(
          encoder_kwargs['embed_dim'], self.encoder.item_embed.shape[0],
          rngs=rngs)

  def __call__(self, items, positions, segment_ids, *, key=None):
    """User representations [B, L, D] (encoder, then the head if any)."""
    h = self.encoder(items, positions, segment_ids, key=key)
    return self.head(h) if hasattr(self, 'head') else h


class PretrainModel(nnx.Module):
  """The pretraining model: the `encoder` that fine-tuning inherits, plus
  the heads of the S3-Rec mutual-information objectives (dropped after
  pretraining): attribute embeddings and one bilinear map per objective
  (associated attribute, masked item, masked attribute, segment)."""

  def __init__(self, *, rngs: nnx.Rngs, num_attributes: int = 0,
               s3rec_heads: bool = False, **encoder_kwargs):
    self.encoder = SequenceEncoder(rngs=rngs, **encoder_kwargs)
    if s3rec_heads:
      if num_attributes <= 0:
        raise ValueError('S3-Rec objectives need item attributes; this '
                         'dataset has none.')
      dim = encoder_kwargs['embed_dim']
      self.attr_embed = layers.param(rngs.params(), (num_attributes + 1, dim),
                                     ('attr', 'embed'))
      for name in ('aap', 'mip', 'map', 'sp'):
        setattr(self, f'w_{name}', layers.param(
            rngs.params(), (dim, dim), ('embed', 'embed_out')))


def text_layers_in_use(model_cfg, text_config: dict | None = None) -> int:
  """How many text-encoder blocks the model reads (model.text_layers, or
  all of the text model's)."""
  if model_cfg.get('text_layers', 0):
    return model_cfg.text_layers
  text_config = text_config or text_encoder.model_config(
      model_cfg.get('text_model', ''))
  return text_config['num_hidden_layers']


def text_tuning_kwargs(model_cfg) -> dict:
  """Model arguments of `model.text_tune_layers` (none when 0)."""
  k = model_cfg.get('text_tune_layers', 0)
  if not k or not model_cfg.get('text_dim', 0):
    return {}
  text_config = text_encoder.model_config(model_cfg.get('text_model', ''))
  used = text_layers_in_use(model_cfg, text_config)
  if not 0 < k <= used:
    raise ValueError(f'model.text_tune_layers={k}: expected 1..{used} (the '
                     'text encoder layers in use)')
  return dict(text_tune_layers=k, text_config=text_config,
              text_max_tokens=model_cfg.get('text_max_length', 128))


def encoder_kwargs(model_cfg, num_items: int) -> dict:
  return dict(
      num_items=num_items, max_len=model_cfg.max_len,
      embed_dim=model_cfg.embed_dim, num_layers=model_cfg.num_layers,
      num_heads=model_cfg.num_heads, mlp_dim=model_cfg.mlp_dim,
      causal=model_cfg.causal, dropout_rate=model_cfg.dropout_rate,
      attention_dropout_rate=model_cfg.attention_dropout_rate,
      vocab_multiple=model_cfg.vocab_multiple, dtype=model_cfg.dtype,
      remat=model_cfg.get('remat', False),
      text_dim=model_cfg.get('text_dim', 0),
      lora_table_rank=model_cfg.get('lora_table_rank', 0),
      lora_table_init=model_cfg.get('lora_table_init', 0.02),
      text_mode=model_cfg.get('text_mode', 'transductive'),
      text_experts=model_cfg.get('text_experts', 4),
      positions=model_cfg.get('positions', 'absolute'),
      **text_tuning_kwargs(model_cfg),
      peft=layers.Peft(
          lora_rank=model_cfg.get('lora_rank', 0),
          lora_alpha=model_cfg.get('lora_alpha', 0.0),
          prefix_len=model_cfg.get('prefix_len', 0),
          adapter_dim=model_cfg.get('adapter_dim', 0)))


def build(model_cfg, num_items: int, *, rngs: nnx.Rngs) -> NextItemModel:
  """Builds the model named by `config.model` for a catalog of num_items."""
  return NextItemModel(rngs=rngs, head=model_cfg.get('head', 'none'),
                       rating_head=model_cfg.get('rating_head', False),
                       **encoder_kwargs(model_cfg, num_items))


def build_pretrain(model_cfg, num_items: int, *, num_attributes: int = 0,
                   s3rec_heads: bool = False,
                   rngs: nnx.Rngs) -> PretrainModel:
  kwargs = encoder_kwargs(model_cfg, num_items)
  kwargs['peft'] = layers.NO_PEFT  # adapters belong to fine-tuning.
  return PretrainModel(rngs=rngs, num_attributes=num_attributes,
                       s3rec_heads=s3rec_heads, **kwargs)
