"""Next-item ranking, the default task: the next-item loss of
`finetune.loss` at every position of packed rows; validated and tested by
full ranking (rec_jax.evaluate)."""

from rec_jax import losses

JOINT = True
SERVED = True


def overrides() -> dict:
  return {'finetune.task': 'next'}


def check(config) -> None:
  losses.check_next_item(config.finetune)


def train_values(ds):
  del ds
  return None


def loss(config, *, ds, vocab: int, mesh, target_counts):
  """(model, batch, k_drop, k_loss) -> (sum, count) of the next-item loss."""
  item_loss = losses.next_item_loss(
      config.finetune, num_items=ds.num_items, vocab=vocab, mesh=mesh,
      target_counts=target_counts)

  def fn(model, batch, k_drop, k_loss):
    hidden = model(batch['inputs'], batch['positions'], batch['segment_ids'],
                   key=k_drop)
    return item_loss(hidden, batch['targets'], model.encoder.item_table(),
                     k_loss)
  return fn


def validation(config, ds, split, evaluator):
  del config, ds
  return lambda params: evaluator.full_ranking(
      params, split.valid_history, split.valid_target, desc='valid')[0]


def results(config, ds, split, evaluator, params, out: dict) -> dict:
  del config, ds, split, evaluator, params
  return out
