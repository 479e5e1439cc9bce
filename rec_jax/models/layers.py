"""Shared Transformer blocks. Modules hold parameters only: dropout keys are
passed at call time, so the trainable state is the params tree alone."""

import math

import jax
import jax.numpy as jnp
from flax import nnx

_normal = nnx.initializers.normal(0.02)


def param(key, shape, names, init=_normal, dtype=jnp.float32):
  """A Param annotated with logical axis names (never mesh axis names)."""
  return nnx.Param(nnx.with_partitioning(init, names)(key, shape, dtype))


def dropout(x, rate: float, key):
  """Inverted dropout; identity when key is None or rate is 0."""
  if key is None or rate == 0.0:
    return x
  if not 0.0 < rate < 1.0:
    raise ValueError(
        f'dropout rate {rate}: expected a rate in [0, 1)' + (
            '; -1 means "from the data": trainer.load_data(config) sets it '
            'before training' if rate == -1.0 else ''))
  keep, keep_prob = keep_mask(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / keep_prob, 0.0).astype(x.dtype)


def keep_mask(key, keep_prob: float, shape):
  """(bool mask, its exact keep probability): each entry True with
  probability `keep_prob` rounded to a multiple of 2^-16.

  Two entries per random 32-bit word: on CPU this is 8x faster than
  jax.random.bernoulli, which draws a float per entry, and dropout masks
  were the largest cost of a training step (a 2-layer SASRec on 256 x 32
  items: 125 of 225 ms forward + backward)."""
  n = math.prod(shape)
  words = jax.random.bits(key, (-(-n // 2),), jnp.uint32)
  halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)
  threshold = int(round(keep_prob * 65536))
  return halves[:n].reshape(shape) < threshold, threshold / 65536


def split_key(key, n: int):
  if key is None:
    return [None] * n
  return list(jax.random.split(key, n))


class LayerNorm(nnx.Module):
  """LayerNorm over the embed axis."""

  def __init__(self, dim: int, *, eps: float = 1e-6, rngs: nnx.Rngs):
    del rngs
    self.eps = eps
    self.scale = nnx.Param(nnx.with_partitioning(
        nnx.initializers.ones_init(), ('embed',))(None, (dim,)))
    self.bias = nnx.Param(nnx.with_partitioning(
        nnx.initializers.zeros_init(), ('embed',))(None, (dim,)))

  def __call__(self, x):
    dtype = x.dtype
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...] + self.bias[...]).astype(dtype)


class Peft:
  """The parameter-efficient additions of a fine-tune (`model.peft`; all
  off by default, and always off in pretraining).

  lora_rank: rank-r updates W + (alpha / r) A B on the attention query, key,
    value, output and MLP projections; B starts at zero, so a fresh adapter
    leaves the pretrained function unchanged (rec_jax.peft merges them).
  lora_table_rank: the same on the item table, E + (alpha / r) A B with A
    [V, r] at zero and B [r, D] drawn with std `lora_table_init`.
  prefix_len: learned keys and values prepended in every attention layer
    (prefix tuning); every real query may attend to them.
  adapter_dim: bottleneck adapters after the attention and MLP sublayers
    (up-projection at zero: identity at start).
  """

  def __init__(self, lora_rank: int = 0, lora_alpha: float = 0.0,
               prefix_len: int = 0, adapter_dim: int = 0,
               lora_table_rank: int = 0, lora_table_init: float = 0.02):
    self.lora_rank = lora_rank
    self.lora_scale = (lora_alpha or lora_rank) / max(lora_rank, 1)
    self.prefix_len = prefix_len
    self.adapter_dim = adapter_dim
    self.lora_table_rank = lora_table_rank
    self.lora_table_init = lora_table_init

  @classmethod
  def from_config(cls, peft_cfg) -> 'Peft':
    """From a `model.peft` section."""
    return cls(lora_rank=peft_cfg.lora_rank, lora_alpha=peft_cfg.lora_alpha,
               prefix_len=peft_cfg.prefix_len,
               adapter_dim=peft_cfg.adapter_dim,
               lora_table_rank=peft_cfg.lora_table_rank,
               lora_table_init=peft_cfg.lora_table_init)


NO_PEFT = Peft()
_zeros = nnx.initializers.zeros_init()


def lora_pair(rngs, a_shape, a_names, b_shape, b_names):
  """(A, B) params of a LoRA pair: A drawn at random, B at zero, so a fresh
  pair leaves its base weight as it is."""
  return (param(rngs.params(), a_shape, a_names),
          param(None, b_shape, b_names, _zeros))


def lora_delta(a, b, scale: float):
  """scale * A B over A's last and B's first axis: the update a LoRA pair
  makes to its base weight (applied here, merged by rec_jax.peft)."""
  return scale * jnp.tensordot(a, b, axes=1)


def lora_weight(module, name: str):
  """`module.<name>` with the update of its LoRA pair `lora_<name>_a` /
  `lora_<name>_b` folded in, when the module has one (scale:
  `module.lora_scale`). The one LoRA implementation: blocks, item table
  and tuned text layers all read their weights through it."""
  w = getattr(module, name)[...]
  if hasattr(module, f'lora_{name}_a'):
    w = w + lora_delta(getattr(module, f'lora_{name}_a')[...],
                       getattr(module, f'lora_{name}_b')[...],
                       module.lora_scale)
  return w


class Attention(nnx.Module):
  """Multi-head self-attention with an explicit boolean mask."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs,
               peft: Peft = NO_PEFT):
    if dim % num_heads:
      raise ValueError(f'embed_dim {dim} is not divisible by {num_heads} heads')
    head = dim // num_heads
    self.lora_scale = peft.lora_scale
    r = peft.lora_rank
    if r:
      for name in ('query', 'key', 'value'):
        a, b = lora_pair(rngs, (dim, r), ('embed', 'lora'),
                         (r, num_heads, head), ('lora', 'heads', 'kv'))
        setattr(self, f'lora_{name}_a', a)
        setattr(self, f'lora_{name}_b', b)
      self.lora_out_a, self.lora_out_b = lora_pair(
          rngs, (num_heads, head, r), ('heads', 'kv', 'lora'), (r, dim),
          ('lora', 'embed'))
    if peft.prefix_len:
      self.prefix_key = param(rngs.params(), (peft.prefix_len, num_heads, head),
                              ('prefix', 'heads', 'kv'))
      self.prefix_value = param(rngs.params(),
                                (peft.prefix_len, num_heads, head),
                                ('prefix', 'heads', 'kv'))
    self.query = param(rngs.params(), (dim, num_heads, head),
                       ('embed', 'heads', 'kv'))
    self.key = param(rngs.params(), (dim, num_heads, head),
                     ('embed', 'heads', 'kv'))
    self.value = param(rngs.params(), (dim, num_heads, head),
                       ('embed', 'heads', 'kv'))
    self.out = param(rngs.params(), (num_heads, head, dim),
                     ('heads', 'kv', 'embed'))
    z = nnx.initializers.zeros_init()
    self.query_bias = param(None, (num_heads, head), ('heads', 'kv'), z)
    self.key_bias = param(None, (num_heads, head), ('heads', 'kv'), z)
    self.value_bias = param(None, (num_heads, head), ('heads', 'kv'), z)
    self.out_bias = param(None, (dim,), ('embed',), z)

  weight = lora_weight

  def __call__(self, x, mask, *, dropout_rate: float = 0.0, key=None,
               bias=None):
    # x: [B, L, D]; mask: [B, 1, L, L] True where a query may attend a key;
    # bias: optional [B, H, L, L] added to the attention logits.
    dtype = x.dtype
    q, k, v = (self._project(x, n) for n in ('query', 'key', 'value'))
    if hasattr(self, 'prefix_key'):
      b = x.shape[0]
      pk = jnp.broadcast_to(self.prefix_key[...].astype(dtype),
                            (b,) + self.prefix_key.shape)
      pv = jnp.broadcast_to(self.prefix_value[...].astype(dtype),
                            (b,) + self.prefix_value.shape)
      k = jnp.concatenate([pk, k], axis=1)
      v = jnp.concatenate([pv, v], axis=1)
      # Real queries (those that may attend anything) also see the prefix.
      real = mask.any(-1, keepdims=True)
      mask = jnp.concatenate([jnp.broadcast_to(
          real, mask.shape[:-1] + (pk.shape[1],)), mask], axis=-1)
      if bias is not None:  # the prefix has no position: no bias.
        bias = jnp.pad(bias, ((0, 0), (0, 0), (0, 0), (pk.shape[1], 0)))
    return self._attend(q, k, v, mask, bias, dropout_rate, key)

  def at(self, x, xq, rows, mask, *, dropout_rate: float = 0.0, key=None,
         bias=None):
    """The attention output of a few queries only: [N, 1, D] for queries
    xq [N, 1, D], query n in row rows[n] of x [B, L, D] (whose keys and
    values it attends); mask [N, 1, 1, L], bias [N, H, 1, L]. Equal to
    __call__'s output at those positions (dropout aside, drawn for these
    shapes)."""
    if hasattr(self, 'prefix_key'):
      raise NotImplementedError('prefix tuning with outputs at a few '
                                'positions only')
    k, v = (jnp.take(self._project(x, n), rows, axis=0)
            for n in ('key', 'value'))
    return self._attend(self._project(xq, 'query'), k, v, mask, bias,
                        dropout_rate, key)

  def _project(self, x, name):
    dtype = x.dtype
    return (jnp.einsum('bld,dhk->blhk', x, self.weight(name).astype(dtype))
            + getattr(self, f'{name}_bias')[...].astype(dtype))

  def _attend(self, q, k, v, mask, bias, dropout_rate, key):
    dtype = q.dtype
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum('bqhk,bshk->bhqs', q * scale, k).astype(jnp.float32)
    if bias is not None:
      logits = logits + bias.astype(jnp.float32)
    # A finite fill keeps fully masked (padding) query rows NaN-free.
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    probs = dropout(probs, dropout_rate, key)
    ctx = jnp.einsum('bhqs,bshk->bqhk', probs, v)
    return (jnp.einsum('bqhk,hkd->bqd', ctx, self.weight('out').astype(dtype))
            + self.out_bias[...].astype(dtype))


class Mlp(nnx.Module):
  """Position-wise feed-forward block with GELU."""

  def __init__(self, dim: int, mlp_dim: int, *, rngs: nnx.Rngs,
               peft: Peft = NO_PEFT):
    z = nnx.initializers.zeros_init()
    self.wi = param(rngs.params(), (dim, mlp_dim), ('embed', 'mlp'))
    self.bi = param(None, (mlp_dim,), ('mlp',), z)
    self.wo = param(rngs.params(), (mlp_dim, dim), ('mlp', 'embed'))
    self.bo = param(None, (dim,), ('embed',), z)
    self.lora_scale = peft.lora_scale
    r = peft.lora_rank
    if r:
      self.lora_wi_a, self.lora_wi_b = lora_pair(
          rngs, (dim, r), ('embed', 'lora'), (r, mlp_dim), ('lora', 'mlp'))
      self.lora_wo_a, self.lora_wo_b = lora_pair(
          rngs, (mlp_dim, r), ('mlp', 'lora'), (r, dim), ('lora', 'embed'))

  weight = lora_weight

  def __call__(self, x, *, dropout_rate: float = 0.0, key=None):
    dtype = x.dtype
    h = jax.nn.gelu(x @ self.weight('wi').astype(dtype) +
                    self.bi[...].astype(dtype))
    h = dropout(h, dropout_rate, key)
    return h @ self.weight('wo').astype(dtype) + self.bo[...].astype(dtype)


class Adapter(nnx.Module):
  """Bottleneck adapter x + up(gelu(down(x))), the identity at start."""

  def __init__(self, dim: int, bottleneck: int, *, rngs: nnx.Rngs):
    self.down = param(rngs.params(), (dim, bottleneck), ('embed', 'lora'))
    self.down_bias = param(None, (bottleneck,), ('lora',), _zeros)
    self.up = param(None, (bottleneck, dim), ('lora', 'embed'), _zeros)
    self.up_bias = param(None, (dim,), ('embed',), _zeros)

  def __call__(self, x):
    dtype = x.dtype
    h = jax.nn.gelu(x @ self.down[...].astype(dtype) +
                    self.down_bias[...].astype(dtype))
    return x + h @ self.up[...].astype(dtype) + self.up_bias[...].astype(dtype)


class Block(nnx.Module):
  """Pre-LayerNorm Transformer block."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, *,
               rngs: nnx.Rngs, peft: Peft = NO_PEFT):
    self.attn_norm = LayerNorm(dim, rngs=rngs)
    self.attn = Attention(dim, num_heads, rngs=rngs, peft=peft)
    self.mlp_norm = LayerNorm(dim, rngs=rngs)
    self.mlp = Mlp(dim, mlp_dim, rngs=rngs, peft=peft)
    if peft.adapter_dim:
      self.adapter_attn = Adapter(dim, peft.adapter_dim, rngs=rngs)
      self.adapter_mlp = Adapter(dim, peft.adapter_dim, rngs=rngs)

  def __call__(self, x, mask, *, dropout_rate: float = 0.0,
               attention_dropout_rate: float = 0.0, key=None, bias=None):
    k1, k2, k3, k4 = split_key(key, 4)
    h = self.attn(self.attn_norm(x), mask,
                  dropout_rate=attention_dropout_rate, key=k1, bias=bias)
    if hasattr(self, 'adapter_attn'):
      h = self.adapter_attn(h)
    x = x + dropout(h, dropout_rate, k2)
    return self._mlp_half(x, dropout_rate, k3, k4)

  def at(self, x, index, mask, *, dropout_rate: float = 0.0,
         attention_dropout_rate: float = 0.0, key=None, bias=None):
    """The block's output at a few positions only: [N, D] at flat
    positions `index` [N] of x [B, L, D]; mask [B, 1, L, L] and bias
    [B, H, L, L] as __call__ takes them. The queries, residuals and MLP run
    at those positions alone, the keys and values over their whole rows
    (a sequence-level objective that reads one position saves most of the
    last block)."""
    k1, k2, k3, k4 = split_key(key, 4)
    b, length, dim = x.shape
    rows, cols = index // length, index % length
    xq = jnp.take(x.reshape(-1, dim), index, axis=0)[:, None]  # [N, 1, D]
    mask_q = mask[rows, :, cols][:, :, None]                    # [N, 1, 1, L]
    bias_q = None if bias is None else bias[rows, :, cols][:, :, None]
    h = self.attn.at(self.attn_norm(x), self.attn_norm(xq), rows, mask_q,
                     dropout_rate=attention_dropout_rate, key=k1, bias=bias_q)
    if hasattr(self, 'adapter_attn'):
      h = self.adapter_attn(h)
    xq = xq + dropout(h, dropout_rate, k2)
    return self._mlp_half(xq, dropout_rate, k3, k4)[:, 0]

  def _mlp_half(self, x, dropout_rate, k3, k4):
    h = self.mlp(self.mlp_norm(x), dropout_rate=dropout_rate, key=k3)
    if hasattr(self, 'adapter_mlp'):
      h = self.adapter_mlp(h)
    return x + dropout(h, dropout_rate, k4)


def attention_mask(segment_ids, *, causal: bool):
  """[B, 1, L, L] mask: same non-padding segment (and key <= query if causal).

  Args:
    segment_ids: int [B, L]; 0 marks padding, equal ids share a sequence.
    causal: whether a position may only attend to itself and the past.
  """
  same = segment_ids[:, :, None] == segment_ids[:, None, :]
  valid = (segment_ids != 0)[:, None, :]
  mask = same & valid
  if causal:
    length = segment_ids.shape[1]
    mask &= jnp.tril(jnp.ones((length, length), bool))[None]
  return mask[:, None]
