"""Self-supervised pretraining objectives over one-user-per-row batches.

Each objective maps (model, batch, key, ctx) to (loss, metrics); the
pretraining step sums them with the weights of `config.pretrain.objectives`:

  cloze        masked item prediction, bidirectional (BERT4Rec).
  causal       next item at every position, causal (SASRec).
  contrastive  InfoNCE between two augmented views of each sequence
               (CL4SRec: crop / mask / reorder; CoSeRec: substitute /
               insert of correlated items).
  duorec       InfoNCE between a sequence and (a) its own second dropout
               pass, (b) another sequence with the same next item (DuoRec);
               other sequences with that next item are not negatives.
  aap, mip, map, sp
               the four mutual-information objectives of S3-Rec: associated
               attribute, masked item, masked attribute and segment
               prediction.

Rows are left-padded (`items` [B, W], `lengths` [B]); a sequence's
representation is the encoder output at its newest position (W - 1).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rec_jax import losses
from rec_jax.data import augment
from rec_jax.models import heads

# The S3-Rec objectives, each with its head in the pretraining model.
S3REC = heads.S3REC_HEADS
# Sequence-level objectives that also train jointly with a fine-tune
# (finetune.aux.objectives).
JOINT = ('contrastive', 'duorec')


@dataclasses.dataclass(frozen=True)
class Context:
  """Static facts the objectives need besides the batch."""
  num_items: int
  causal: bool                  # attention of sequence-level views.
  cfg: object                   # config.pretrain
  attributes: object = None     # int32 [V, A] attribute ids (0 = none).
  num_attributes: int = 0
  similar: object = None        # int32 [V, K] correlated items.
  num_groups: int = 1           # negatives only within groups ('local').

  @property
  def mask_id(self) -> int:
    return self.num_items + 1


@dataclasses.dataclass(frozen=True)
class Encoded:
  """Encoder outputs of a batch of left-padded user rows [B, W].

  `hidden` is [B, W, D], or with a packing plan (pipeline.PackPlan, from a
  packed UserStream) the [R, L, D] outputs of the packed block the rows
  were gathered into; `pack` brings any [B, W] per-position array (targets,
  masks) into hidden's layout, `last` gives every row's newest position.
  """
  hidden: jax.Array
  src: jax.Array | None = None        # [R, L] flat index into [B, W].
  last_index: jax.Array | None = None  # [B] flat index into [R * L].

  def pack(self, x):
    if self.src is None:
      return x
    flat = x.reshape((-1,) + x.shape[2:])
    take = jnp.take(flat, jnp.maximum(self.src, 0), axis=0)
    keep = (self.src >= 0).reshape(self.src.shape + (1,) * (x.ndim - 2))
    return jnp.where(keep, take, jnp.zeros((), x.dtype))

  def last(self):
    if self.src is None:
      return self.hidden[:, -1]
    return jnp.take(self.hidden.reshape(-1, self.hidden.shape[-1]),
                    self.last_index, axis=0)


def batch_plan(batch, prefix: str = 'pack_'):
  """(src, seg, last) of a packed batch's plan for `prefix` rows, or
  None (rows are encoded as they are)."""
  if f'{prefix}src' not in batch:
    return None
  return (batch[f'{prefix}src'], batch[f'{prefix}seg'],
          batch[f'{prefix}last'])


def doubled(the_plan, users: int):
  """The plan of the rows [B, W] stacked twice ([2B, W]), or None."""
  if the_plan is None:
    return None
  src, seg, last = the_plan
  rows, width = src.shape
  return (jnp.concatenate([src, jnp.where(src >= 0, src + users * width,
                                          -1)]),
          jnp.concatenate([seg, jnp.where(seg > 0, seg + users, 0)]),
          jnp.concatenate([last, last + rows * width]))


def encode(model, items, *, causal: bool, key, plan=None) -> Encoded:
  """Encodes left-padded rows [B, W] (newest item last), as they are or,
  with a packing plan, packed several to a row (one compiled shape, no
  padding: the encoder's packed-rows contract gives the same outputs)."""
  width = items.shape[1]
  max_len = model.encoder.max_len
  if plan is None:
    positions = jnp.broadcast_to(jnp.arange(max_len - width, max_len,
                                            dtype=jnp.int32), items.shape)
    segment_ids = (items != 0).astype(jnp.int32)
    return Encoded(model.encoder(items, positions, segment_ids, key=key,
                                 causal=causal))
  src, seg, last = plan
  out = Encoded(None, src, last)
  packed = out.pack(items)
  positions = jnp.where(src >= 0, max_len - width + src % width, 0)
  segment_ids = jnp.where(packed != 0, seg, 0)
  return dataclasses.replace(out, hidden=model.encoder(
      packed, positions, segment_ids, key=key, causal=causal))


def encode_last(model, items, *, causal: bool, key, plan=None):
  """[B, D]: every row's encoding at its newest position, as
  `encode(...).last()` gives it; encoders that can (`at`, the Transformer
  family) run their last block at those positions only."""
  if not hasattr(model.encoder, 'at'):
    return encode(model, items, causal=causal, key=key, plan=plan).last()
  width = items.shape[1]
  max_len = model.encoder.max_len
  if plan is None:
    positions = jnp.broadcast_to(jnp.arange(max_len - width, max_len,
                                            dtype=jnp.int32), items.shape)
    index = jnp.arange(items.shape[0]) * width + width - 1
    return model.encoder.at(items, positions, (items != 0).astype(jnp.int32),
                            index, key=key, causal=causal)
  src, seg, last = plan
  packed = Encoded(None, src, last).pack(items)
  positions = jnp.where(src >= 0, max_len - width + src % width, 0)
  return model.encoder.at(packed, positions, jnp.where(packed != 0, seg, 0),
                          last, key=key, causal=causal)


def drop_last(items, lengths):
  """(items without their newest item, shifted right; the dropped item)."""
  prefix = jnp.pad(items[:, :-1], ((0, 0), (1, 0)))
  return prefix, jnp.maximum(lengths - 1, 0), items[:, -1]


def info_nce(z1, z2, *, temperature: float, valid, similarity: str = 'dot',
             same=None, groups=None):
  """Symmetric InfoNCE (NT-Xent) over 2B views: each view's positive is its
  pair, its negatives are every other view of valid rows.

  Args:
    z1, z2: [B, D] paired representations.
    temperature: softmax temperature.
    valid: bool [B]; invalid rows are neither anchors nor negatives.
    similarity: 'dot' or 'cosine'.
    same: optional bool [B, B]: pairs that must not be negatives (e.g.
      sequences with the same next item); the diagonal is ignored.
    groups: optional int [B]: negatives only within the same group (one
      group per device gives per-device negatives; None: the whole global
      batch, i.e. cross-device negatives).

  Returns:
    (mean loss over valid anchors, accuracy of the positive being the top
    logit).
  """
  z1 = z1.astype(jnp.float32)
  z2 = z2.astype(jnp.float32)
  if similarity == 'cosine':
    z1 = z1 / jnp.maximum(jnp.linalg.norm(z1, axis=-1, keepdims=True), 1e-6)
    z2 = z2 / jnp.maximum(jnp.linalg.norm(z2, axis=-1, keepdims=True), 1e-6)
  elif similarity != 'dot':
    raise ValueError(f"similarity={similarity!r}: expected 'dot' or 'cosine'")
  b = z1.shape[0]
  z = jnp.concatenate([z1, z2], 0)                        # [2B, D]
  logits = (z @ z.T) / temperature                         # [2B, 2B]
  idx = jnp.arange(2 * b)
  pair = (idx + b) % (2 * b)
  ok = jnp.concatenate([valid, valid])
  allowed = ok[None, :] & (idx[:, None] != idx[None, :])
  if same is not None:
    s = jnp.tile(same, (2, 2)) & (idx[None, :] != pair[:, None])
    allowed &= ~s
  if groups is not None:
    g = jnp.concatenate([groups, groups])
    allowed &= g[:, None] == g[None, :]
  logits = jnp.where(allowed, logits, -jnp.inf)
  pos = logits[idx, pair]
  lse = jax.nn.logsumexp(logits, axis=-1)
  per = jnp.where(ok, lse - pos, 0.0)
  n = jnp.maximum(ok.sum(), 1)
  acc = jnp.where(ok, jnp.argmax(logits, -1) == pair, False).sum() / n
  return per.sum() / n, acc


def _groups(ctx, b):
  if ctx.num_groups <= 1 or ctx.cfg.negatives == 'global':
    return None
  return jnp.arange(b) // (b // ctx.num_groups)


# --------------------------------------------------------- objectives ----


def cloze(model, batch, key, ctx):
  k_mask, k_drop = jax.random.split(key)
  items = batch['items']
  hide = jax.random.bernoulli(k_mask, ctx.cfg.mask_prob, items.shape)
  hide &= items > 0
  inputs = jnp.where(hide, ctx.mask_id, items)
  enc = encode(model, inputs, causal=False, key=k_drop, plan=batch_plan(batch))
  total, count = losses.full_softmax_ce(
      enc.hidden, enc.pack(jnp.where(hide, items, 0)),
      model.encoder.item_table(), ctx.num_items)
  return total / jnp.maximum(count, 1.0), {}


def causal(model, batch, key, ctx):
  items = batch['items']
  inputs = jnp.pad(items[:, :-1], ((0, 0), (1, 0)))
  targets = jnp.where(inputs > 0, items, 0)
  enc = encode(model, inputs, causal=True, key=key, plan=batch_plan(batch))
  total, count = losses.full_softmax_ce(
      enc.hidden, enc.pack(targets), model.encoder.item_table(),
      ctx.num_items)
  return total / jnp.maximum(count, 1.0), {}


def contrastive(model, batch, key, ctx):
  k1, k3, k2 = jax.random.split(key, 3)
  cfg = ctx.cfg
  ops = [o for o in cfg.augment.ops.split(',') if o]
  items, lengths = batch['items'], batch['lengths']
  x = jnp.concatenate([augment.augment(
      k, items, lengths, ops=ops, cfg=cfg.augment, mask_id=ctx.mask_id,
      similar=ctx.similar)[0] for k in (k1, k3)])
  # Both views in one encoder call (one pass of larger matmuls); dropout
  # is drawn independently for every row, so the views stay independent.
  views = jnp.split(encode_last(
      model, x, causal=ctx.causal, key=k2,
      plan=doubled(batch_plan(batch), items.shape[0])), 2)
  loss, acc = info_nce(views[0], views[1], temperature=cfg.temperature,
                       valid=lengths > 0, similarity=cfg.similarity,
                       groups=_groups(ctx, items.shape[0]))
  return loss, {'contrastive_acc': acc}


def duorec(model, batch, key, ctx):
  k1, k2, k3 = jax.random.split(key, 3)
  cfg = ctx.cfg
  x, n, target = drop_last(batch['items'], batch['lengths'])
  px, pn, _ = drop_last(batch['partner'], batch['partner_lengths'])
  valid = n > 0
  z = encode_last(model, x, causal=ctx.causal, key=k1, plan=batch_plan(batch))
  z_drop = encode_last(model, x, causal=ctx.causal, key=k2,
                       plan=batch_plan(batch))
  z_sup = encode_last(model, px, causal=ctx.causal, key=k3,
                      plan=batch_plan(batch, 'partner_pack_'))
  same = target[:, None] == target[None, :]
  groups = _groups(ctx, x.shape[0])
  unsup, acc = info_nce(z, z_drop, temperature=cfg.temperature, valid=valid,
                        similarity=cfg.similarity, same=same, groups=groups)
  has = valid & (pn > 0)
  sup, _ = info_nce(z, z_sup, temperature=cfg.temperature, valid=has,
                    similarity=cfg.similarity, same=same, groups=groups)
  sup = jnp.where(has.any(), sup, 0.0)
  return unsup + sup, {'duorec_acc': acc,
                       'duorec_partner_frac': has.mean()}


def _multi_hot(ctx, items):
  """float [..., num_attributes] attributes of each item."""
  attrs = jnp.take(ctx.attributes, items, axis=0)          # [..., A]
  hot = jax.nn.one_hot(attrs, ctx.num_attributes + 1, dtype=jnp.float32)
  return jnp.clip(hot.sum(-2), 0.0, 1.0)[..., 1:]


def _attr_logits(model, h, w):
  table = model.attr_embed[...][1:]
  return jnp.einsum('...d,de,ae->...a', h, w[...], table).astype(jnp.float32)


def _bce_mean(logits, labels, weight):
  per = -(labels * jax.nn.log_sigmoid(logits) +
          (1.0 - labels) * jax.nn.log_sigmoid(-logits)).mean(-1)
  return jnp.sum(per * weight) / jnp.maximum(weight.sum(), 1.0)


def aap(model, batch, key, ctx):
  del key
  items = batch['items']
  emb = jnp.take(model.encoder.item_table(), items, axis=0)
  logits = _attr_logits(model, emb, model.w_aap)
  return _bce_mean(logits, _multi_hot(ctx, items),
                   (items > 0).astype(jnp.float32)), {}


def _masked_view(items, key, ctx):
  hide = jax.random.bernoulli(key, ctx.cfg.mask_prob, items.shape)
  hide &= items > 0
  return hide, jnp.where(hide, ctx.mask_id, items)


def mip(model, batch, key, ctx):
  k1, k2 = jax.random.split(key)
  items = batch['items']
  hide, inputs = _masked_view(items, k1, ctx)
  enc = encode(model, inputs, causal=False, key=k2, plan=batch_plan(batch))
  proj = jnp.einsum('bld,de->ble', enc.hidden, model.w_mip[...])
  total, count = losses.full_softmax_ce(
      proj, enc.pack(jnp.where(hide, items, 0)), model.encoder.item_table(),
      ctx.num_items)
  return total / jnp.maximum(count, 1.0), {}


def map_(model, batch, key, ctx):
  k1, k2 = jax.random.split(key)
  items = batch['items']
  hide, inputs = _masked_view(items, k1, ctx)
  enc = encode(model, inputs, causal=False, key=k2, plan=batch_plan(batch))
  logits = _attr_logits(model, enc.hidden, model.w_map)
  return _bce_mean(logits, _multi_hot(ctx, enc.pack(items)),
                   enc.pack(hide).astype(jnp.float32)), {}


def sp(model, batch, key, ctx):
  """Segment prediction: the masked-out segment's representation must score
  higher with its own context than another sequence's segment does."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  items, lengths = batch['items'], batch['lengths']
  b, width = items.shape
  idx = jnp.arange(width)[None]
  start = width - lengths[:, None]
  seg_len = 1 + (jax.random.uniform(k1, (b, 1)) * jnp.maximum(
      lengths[:, None] // 2, 1)).astype(jnp.int32)
  seg_begin = start + (jax.random.uniform(k2, (b, 1)) * jnp.maximum(
      lengths[:, None] - seg_len + 1, 1)).astype(jnp.int32)
  in_seg = (idx >= seg_begin) & (idx < seg_begin + seg_len) & (items > 0)
  context = jnp.where(in_seg, ctx.mask_id, items)
  # The segment alone, left-padded: shift it to the right end of the row.
  shift = width - (seg_begin + seg_len)
  seg_rows = jax.vmap(lambda r, s: jnp.roll(r, s))(
      jnp.where(in_seg, items, 0), shift[:, 0])
  h_ctx = encode_last(model, context, causal=False, key=k3,
                      plan=batch_plan(batch))
  h_seg = encode_last(model, seg_rows, causal=False, key=k4,
                      plan=batch_plan(batch))
  h_neg = jnp.roll(h_seg, 1, axis=0)
  proj = h_ctx @ model.w_sp[...]
  pos = jnp.sum(proj * h_seg, -1)
  neg = jnp.sum(proj * h_neg, -1)
  valid = ((lengths >= 2) & jnp.roll(lengths >= 2, 1)).astype(jnp.float32)
  loss = -jax.nn.log_sigmoid(pos - neg)
  return jnp.sum(loss * valid) / jnp.maximum(valid.sum(), 1.0), {}


FNS = dict(cloze=cloze, causal=causal, contrastive=contrastive, duorec=duorec,
           aap=aap, mip=mip, map=map_, sp=sp)
NAMES = tuple(FNS)  # every objective's name: the keys of pretrain.objectives.


def active(weights) -> dict[str, float]:
  """{name: weight} of the objectives with non-zero weight.

  Raises:
    ValueError: on an unknown objective or when none is active.
  """
  weights = dict(weights)
  unknown = sorted(set(weights) - set(NAMES))
  if unknown:
    raise ValueError(f'pretrain.objectives: unknown {unknown}; known: {NAMES}')
  out = {k: float(v) for k, v in weights.items() if float(v) != 0.0}
  if not out:
    raise ValueError('pretrain.objectives: every weight is 0')
  return out


def total_loss(model, batch, key, ctx, weights: dict[str, float]):
  """Weighted sum of the active objectives, and per-objective metrics."""
  keys = jax.random.split(key, len(weights))
  total = 0.0
  metrics = {}
  for k, (name, w) in zip(keys, sorted(weights.items())):
    loss, extra = FNS[name](model, batch, k, ctx)
    total = total + w * loss
    metrics[f'train/{name}'] = loss
    metrics.update({f'train/{m}': v for m, v in extra.items()})
  return total, metrics


def attribute_table(ds, vocab: int) -> np.ndarray:
  """[vocab, A] attribute ids, rows beyond the catalog empty."""
  attrs = ds.item_attributes
  out = np.zeros((vocab, attrs.shape[1]), np.int32)
  out[:attrs.shape[0]] = attrs
  return out
