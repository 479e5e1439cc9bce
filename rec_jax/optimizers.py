"""Optax optimizer and learning-rate schedule from a config section."""

import optax


def schedule(cfg, total_steps: int):
  """Linear warmup, then constant, cosine or linear decay to 0."""
  warmup = int(cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  if cfg.schedule == 'constant':
    after = optax.constant_schedule(cfg.lr)
  elif cfg.schedule == 'cosine':
    after = optax.cosine_decay_schedule(cfg.lr, decay_steps)
  elif cfg.schedule == 'linear':
    after = optax.linear_schedule(cfg.lr, 0.0, decay_steps)
  else:
    raise ValueError(f'optimizer.schedule={cfg.schedule!r}: expected '
                     "'constant', 'cosine' or 'linear'")
  if warmup <= 0:
    return after
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def make(cfg, total_steps: int):
  """Returns (optax transformation, schedule)."""
  lr = schedule(cfg, total_steps)
  if cfg.name == 'adam':
    core = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == 'adamw':
    core = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay)
  else:
    raise ValueError(f"optimizer.name={cfg.name!r}: expected 'adam' or "
                     "'adamw'")
  parts = []
  if cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  return optax.chain(*parts, core), lr
