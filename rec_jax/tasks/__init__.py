"""Fine-tuning tasks, one module each, chosen by `config.finetune.task`.

  next     next-item ranking by full-softmax (or sampled) loss over the
           catalog; validation NDCG@10, test by full ranking.
  ctr      click / purchase prediction: BCE against popularity-sampled
           negatives; AUC and log loss against a popularity baseline.
  rating   the held-out item's rating by MSE through a rating head; RMSE
           and MAE against global / user / item mean baselines.

A task module is looked up by name (no registry) and exposes:

  overrides() -> dict
      the config edits of the task, as dotted keys (a recipe applies them
      with config_lib.override);
  check(config)
      errors for settings the task cannot train with (before any data);
  JOINT: bool
      whether the joint sequence-level objectives (finetune.aux) train
      beside it;
  SERVED: bool
      whether its model is exported for top-K recommendation;
  train_values(ds) -> list[np.ndarray] | None
      a value per training item of each user (ratings), or None;
  loss(config, *, ds, vocab, mesh, target_counts) -> fn
      fn(model, batch, dropout_key, loss_key) -> (loss sum, target count),
      chosen once, outside the traced step;
  validation(config, ds, split, evaluator) -> fn(params) -> metrics
      the metrics that early stopping reads (`config.eval.metric`);
  results(config, ds, split, evaluator, params, results) -> results
      the eval stage's results with the task's own test metrics and
      baselines (full-ranking metrics stay under *_ranking).
"""

import importlib

TASKS = ('next', 'ctr', 'rating')


def get(name: str):
  """The module of task `name`."""
  if name not in TASKS:
    raise ValueError(f'task={name!r}: expected one of {TASKS}')
  return importlib.import_module(f'{__name__}.{name}')


def overrides(name: str) -> dict:
  """The config edits of task `name` (see the module docstring)."""
  return get(name).overrides()
