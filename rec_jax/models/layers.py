"""Shared Transformer blocks. Modules hold parameters only: dropout keys are
passed at call time, so the trainable state is the params tree alone."""

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
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


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


class Attention(nnx.Module):
  """Multi-head self-attention with an explicit boolean mask."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f'embed_dim {dim} is not divisible by {num_heads} heads')
    head = dim // num_heads
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

  def __call__(self, x, mask, *, dropout_rate: float = 0.0, key=None):
    # x: [B, L, D]; mask: [B, 1, L, L] True where a query may attend a key.
    dtype = x.dtype
    q = jnp.einsum('bld,dhk->blhk', x, self.query[...].astype(dtype))
    k = jnp.einsum('bld,dhk->blhk', x, self.key[...].astype(dtype))
    v = jnp.einsum('bld,dhk->blhk', x, self.value[...].astype(dtype))
    q = q + self.query_bias[...].astype(dtype)
    k = k + self.key_bias[...].astype(dtype)
    v = v + self.value_bias[...].astype(dtype)
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum('bqhk,bshk->bhqs', q * scale, k).astype(jnp.float32)
    # A finite fill keeps fully masked (padding) query rows NaN-free.
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
    probs = dropout(probs, dropout_rate, key)
    ctx = jnp.einsum('bhqs,bshk->bqhk', probs, v)
    return (jnp.einsum('bqhk,hkd->bqd', ctx, self.out[...].astype(dtype))
            + self.out_bias[...].astype(dtype))


class Mlp(nnx.Module):
  """Position-wise feed-forward block with GELU."""

  def __init__(self, dim: int, mlp_dim: int, *, rngs: nnx.Rngs):
    z = nnx.initializers.zeros_init()
    self.wi = param(rngs.params(), (dim, mlp_dim), ('embed', 'mlp'))
    self.bi = param(None, (mlp_dim,), ('mlp',), z)
    self.wo = param(rngs.params(), (mlp_dim, dim), ('mlp', 'embed'))
    self.bo = param(None, (dim,), ('embed',), z)

  def __call__(self, x, *, dropout_rate: float = 0.0, key=None):
    dtype = x.dtype
    h = jax.nn.gelu(x @ self.wi[...].astype(dtype) + self.bi[...].astype(dtype))
    h = dropout(h, dropout_rate, key)
    return h @ self.wo[...].astype(dtype) + self.bo[...].astype(dtype)


class Block(nnx.Module):
  """Pre-LayerNorm Transformer block."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, *,
               rngs: nnx.Rngs):
    self.attn_norm = LayerNorm(dim, rngs=rngs)
    self.attn = Attention(dim, num_heads, rngs=rngs)
    self.mlp_norm = LayerNorm(dim, rngs=rngs)
    self.mlp = Mlp(dim, mlp_dim, rngs=rngs)

  def __call__(self, x, mask, *, dropout_rate: float = 0.0,
               attention_dropout_rate: float = 0.0, key=None):
    k1, k2, k3, k4 = split_key(key, 4)
    h = self.attn(self.attn_norm(x), mask,
                  dropout_rate=attention_dropout_rate, key=k1)
    x = x + dropout(h, dropout_rate, k2)
    h = self.mlp(self.mlp_norm(x), dropout_rate=dropout_rate, key=k3)
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
