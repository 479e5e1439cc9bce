"""Losses against direct numpy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rec_jax import losses


def _setup(seed=0, b=2, l=3, d=4, v=8):
  rng = np.random.default_rng(seed)
  hidden = rng.normal(size=(b, l, d)).astype(np.float32)
  table = rng.normal(size=(v, d)).astype(np.float32)
  targets = np.array([[1, 2, 0], [5, 0, 3]], np.int32)
  return hidden, table, targets


def test_full_softmax_ce_matches_numpy():
  hidden, table, targets = _setup()
  num_items = 5  # rows 0, 6, 7 are not items and get no probability mass.
  total, count = losses.full_softmax_ce(jnp.asarray(hidden),
                                        jnp.asarray(targets),
                                        jnp.asarray(table), num_items)
  expect = []
  for b in range(2):
    for t in range(3):
      if targets[b, t] == 0:
        continue
      logits = table[1:num_items + 1] @ hidden[b, t]
      lse = np.log(np.exp(logits - logits.max()).sum()) + logits.max()
      expect.append(lse - logits[targets[b, t] - 1])
  assert float(count) == 4
  assert float(total) == pytest.approx(sum(expect), rel=1e-5)


def test_label_smoothing_term_gives_the_smoothed_cross_entropy():
  hidden, table, targets = _setup(seed=3)
  num_items, eps = 5, 0.1
  ce, _ = losses.full_softmax_ce(jnp.asarray(hidden), jnp.asarray(targets),
                                 jnp.asarray(table), num_items)
  term = losses.smoothing_term(jnp.asarray(hidden), jnp.asarray(targets),
                               jnp.asarray(table), num_items)
  expect = 0.0
  for b in range(2):
    for t in range(3):
      if targets[b, t] == 0:
        continue
      logits = table[1:num_items + 1] @ hidden[b, t]
      logp = logits - (np.log(np.exp(logits - logits.max()).sum())
                       + logits.max())
      q = np.full(num_items, eps / num_items)      # smoothed target
      q[targets[b, t] - 1] += 1 - eps
      expect -= (q * logp).sum()
  assert float(ce + eps * term) == pytest.approx(expect, rel=1e-5)


def test_sampled_bce_hand_value():
  # One target, table rows chosen so that the logits are known.
  hidden = jnp.array([[[1.0, 0.0]]])
  table = jnp.array([[0.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
  targets = jnp.array([[1]])
  total, count = losses.sampled_bce(hidden, targets, table, num_items=3,
                                    key=jax.random.key(0), num_negatives=4)
  # Every negative is item 2 or 3 (logit -1) unless it hits the positive (1),
  # which is masked; so loss = -log s(2) - k log s(1) with k in 0..4.
  pos = -np.log(1 / (1 + np.exp(-2.0)))
  neg = -np.log(1 / (1 + np.exp(-1.0)))
  k = (float(total) - pos) / neg
  assert float(count) == 1
  assert abs(k - round(k)) < 1e-4 and 0 <= round(k) <= 4


@pytest.mark.parametrize('proposal', ['uniform', 'popularity'])
def test_sampled_softmax_approaches_full_softmax(proposal):
  rng = np.random.default_rng(1)
  v, d = 50, 8
  table = jnp.asarray(rng.normal(size=(v, d)).astype(np.float32))
  hidden = jnp.asarray(rng.normal(size=(1, 1, d)).astype(np.float32))
  targets = jnp.array([[7]])
  full, _ = losses.full_softmax_ce(hidden, targets, table, v - 1)
  log_q = None
  if proposal == 'popularity':
    counts = np.arange(v, dtype=np.float64) ** 2  # strongly skewed
    log_q = jnp.asarray(losses.popularity_log_q(counts, v - 1, v))
  fn = jax.jit(lambda k: losses.sampled_softmax(hidden, targets, table, v - 1,
                                                k, 4000, log_q)[0])
  est = [float(fn(jax.random.key(s))) for s in range(50)]
  # With the log(N Q) correction the estimate matches the full softmax.
  assert np.mean(est) == pytest.approx(float(full), abs=0.05)


def test_sample_proposal_follows_log_q():
  p = np.array([0.0, 0.1, 0.6, 0.0, 0.3])  # rows 0 and 3 are never drawn.
  log_q = jnp.log(jnp.asarray(p, jnp.float32))
  draws = np.asarray(losses.sample_proposal(jax.random.key(0), log_q,
                                            (200_000,)))
  assert draws.dtype == np.int32
  freq = np.bincount(draws, minlength=5) / len(draws)
  assert freq[0] == 0 and freq[3] == 0
  assert np.allclose(freq, p, atol=0.005)


def _reference_ce(hidden, targets, table, num_items):
  """The cross-entropy as it was written before the custom backward pass:
  logits over the whole padded table, non-items masked to -inf, the
  target's logit picked out of the [B, L, V] block."""
  logits = jnp.einsum('bld,vd->blv', hidden, table).astype(jnp.float32)
  ids = jnp.arange(table.shape[0])
  logits = jnp.where((ids >= 1) & (ids <= num_items), logits, -jnp.inf)
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return jnp.sum(jnp.where(targets > 0, lse - picked, 0.0))


@pytest.mark.parametrize('layout,chunk', [
    (None, 0), (None, 37), (None, 500), ((4, 1, 2), 0), ((1, 1, 8), 5),
    ((2, 2, 2), 13)])
def test_custom_backward_ce_equals_the_reference(layout, chunk):
  """Values and gradients (hidden and table) of the exact CE with its own
  backward pass equal the masked dense reference, on one device and on
  the sharded / chunked paths of 8 devices."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  v, d, n = 128, 8, 101               # 101 items, 27 padded rows.
  table = jnp.asarray(rng.normal(size=(v, d)).astype(np.float32))
  hidden = jnp.asarray(rng.normal(size=(8, 6, d)).astype(np.float32))
  targets = jnp.asarray(rng.integers(0, n + 1, size=(8, 6)), jnp.int32)
  ref, ref_g = jax.value_and_grad(
      lambda h, t: _reference_ce(h, targets, t, n), argnums=(0, 1))(
          hidden, table)
  mesh = None
  if layout:
    mesh = sharding.make_mesh(ml_collections.ConfigDict(
        dict(zip(('data', 'fsdp', 'model'), layout))))
  fn = jax.jit(jax.value_and_grad(lambda h, t: losses.softmax_ce(
      h, targets, t, n, mesh=mesh, chunk_size=chunk)[0], argnums=(0, 1)))
  if mesh is None:
    val, grads = fn(hidden, table)
  else:
    with jax.set_mesh(mesh):
      val, grads = fn(hidden, table)
  assert float(val) == pytest.approx(float(ref), rel=1e-6)
  for got, want in zip(grads, ref_g):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


@pytest.mark.parametrize('budget,tokens,layout', [
    (4000, 48, None),        # 5 blocks needed -> 6, a divisor of 48.
    (4000, 47, None),        # 47 tokens: no divisor near, padded to 50.
    (1 << 30, 48, None),     # one block.
    (4000, 48, (8, 1, 1)),   # tokens split over 8 data devices.
])
def test_dense_ce_in_token_blocks_equals_the_reference(monkeypatch, budget,
                                                       tokens, layout):
  """The dense path's token blocks (gradients made in the forward pass,
  strided blocks, padded when no divisor is near) give the reference's
  values and gradients, and its value alone (no differentiation) too."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from rec_jax import sharding  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(losses, '_BLOCK_BYTES', budget)
  rng = np.random.default_rng(2)
  v, d, n = 128, 8, 101
  table = jnp.asarray(rng.normal(size=(v, d)).astype(np.float32))
  hidden = jnp.asarray(rng.normal(size=(1, tokens, d)).astype(np.float32))
  targets = jnp.asarray(rng.integers(0, n + 1, size=(1, tokens)), jnp.int32)
  if layout:
    hidden, targets = hidden.reshape(8, 6, d), targets.reshape(8, 6)
  ref, ref_g = jax.value_and_grad(
      lambda h, t: _reference_ce(h, targets, t, n), argnums=(0, 1))(
          hidden, table)
  blocks = losses._token_blocks(tokens, n)
  assert blocks == {4000: 6 if tokens == 48 else 5, 1 << 30: 1}[budget]
  grad = jax.jit(jax.value_and_grad(lambda h, t: losses.softmax_ce(
      h, targets, t, n)[0], argnums=(0, 1)))
  value = jax.jit(lambda h, t: losses.softmax_ce(h, targets, t, n)[0])
  if layout:
    mesh = sharding.make_mesh(ml_collections.ConfigDict(
        dict(zip(('data', 'fsdp', 'model'), layout))))
    hidden = sharding.host_to_global(mesh, dict(h=np.asarray(hidden)))['h']
  val, grads = grad(hidden, table)
  assert float(val) == pytest.approx(float(ref), rel=1e-6)
  assert float(value(hidden, table)) == pytest.approx(float(ref), rel=1e-6)
  for got, want in zip(grads, ref_g):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def test_block_budget_sets_the_blocks_and_refuses_a_bad_size():
  before = losses._token_blocks(800, 12101)
  with losses.block_budget(1 << 62):
    assert losses._token_blocks(800, 12101) == 1
  assert losses._token_blocks(800, 12101) == before == 4
  for bad in (0, -5, 2.5, '16'):
    with pytest.raises(ValueError, match='nbytes'):
      with losses.block_budget(bad):
        pass
