"""Helpers that config files import: arg-string parsing and shared sections."""

import fnmatch
import json
import os

from absl import logging
import ml_collections


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a `key=value,flag` arg string into a ConfigDict.

  Every key must appear in `defaults`; its default's type fixes how the value
  is parsed (bool, int, float or str). A bare `flag` sets a bool to True.

  Args:
    arg: the string after ':' in `--config=configs/x.py:ARG`, or None.
    **defaults: the accepted keys and their default values.

  Returns:
    A ConfigDict with every default, overridden by the arg string.

  Raises:
    ValueError: on an unknown key or a value of the wrong type.
  """
  out = ml_collections.ConfigDict(defaults)
  for token in (arg or '').split(','):
    token = token.strip()
    if not token:
      continue
    key, sep, value = token.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f'Unknown config arg {key!r} in {arg!r}; known: {sorted(defaults)}')
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f'Config arg {key!r} needs a value ({key}=...).')
      out[key] = True
      continue
    value = value.strip()
    try:
      if isinstance(default, bool):
        if value.lower() not in ('true', 'false', '1', '0'):
          raise ValueError(value)
        out[key] = value.lower() in ('true', '1')
      elif isinstance(default, int):
        out[key] = int(float(value)) if 'e' in value.lower() else int(value)
      elif isinstance(default, float):
        out[key] = float(value)
      else:
        out[key] = value
    except ValueError:
      raise ValueError(
          f'Config arg {key}={value!r} is not a {type(default).__name__}.'
      ) from None
  return out


def mesh_config(data: int = -1, fsdp: int = 1, model: int = 1):
  """Mesh axis sizes; -1 takes the remaining devices."""
  return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, model=model))


def axis_rules():
  """Logical axis name -> mesh axes. The item table is split on `model`."""
  return (
      ('batch', ('data', 'fsdp')),
      ('vocab', 'model'),
      ('embed', 'fsdp'),
      ('mlp', 'model'),
      ('heads', 'model'),
      ('kv', None),
      ('seq', None),
      ('attr', None),
      ('embed_out', None),
      ('lora', None),
      ('prefix', None),
  )


def data_config(dataset: str):
  """Which dataset; the directories default to REC_JAX_DATA_DIR / cache."""
  return ml_collections.ConfigDict(dict(
      name=dataset,
      data_dir='',   # '' = $REC_JAX_DATA_DIR, or download when unset.
      cache_dir='',  # '' = $REC_JAX_CACHE_DIR or ~/.cache/rec_jax/tfds.
      # Retraining: a file of `user item item ...` lines appended to the
      # users' sequences (rec_jax.data.sources.read_new_interactions).
      new_interactions='',
      # Cold start: this fraction of the catalog occurs only as test
      # targets (datasets.cold_start); results gain test_cold / test_warm.
      cold_fraction=0.0,
      synthetic=dict(num_users=1000, num_items=500, num_clusters=10,
                     min_len=5, max_len=30, seed=0),
  ))


def model_config(*, causal: bool, max_len: int = 50, embed_dim: int = 64,
                 num_layers: int = 2, num_heads: int = 2, mlp_dim: int = 256,
                 dropout_rate: float = 0.2,
                 attention_dropout_rate: float = 0.2):
  return ml_collections.ConfigDict(dict(
      causal=causal, max_len=max_len, embed_dim=embed_dim,
      num_layers=num_layers, num_heads=num_heads, mlp_dim=mlp_dim,
      dropout_rate=dropout_rate,
      attention_dropout_rate=attention_dropout_rate,
      positions='absolute',  # absolute | none | relative (models.sequence).
      vocab_multiple=128,  # item table rows split evenly over `model`.
      dtype='float32',     # compute dtype ('bfloat16': mixed precision;
                           # parameters and optimizer state stay float32).
      remat=False,         # recompute each block's activations in the
                           # backward pass instead of storing them.
      # Fine-tuning methods (rec_jax.peft); 0 / 'none' = off.
      lora_rank=0, lora_alpha=0.0, prefix_len=0, adapter_dim=0,
      lora_table_rank=0,   # LoRA on the item table (finetune=lora sets 2)
      lora_table_init=0.02,  # std of its B factor (A starts at zero)
      head='none',
      rating_head=False,   # task=rating.
      # Item text (rec_jax.item_text, text_encoder): 0 = off; `text=true`
      # sets the text encoder's width (384, MiniLM). transductive = ID +
      # text, inductive = text only (cold items need no retraining).
      text_dim=0, text_mode='transductive', text_experts=4,
      text_model='',            # model folder ('' = all-MiniLM-L6-v2; a
                                # rec_jax.text_mlm output: adapted)
      text_layers=0,            # text encoder layers used (0 = all)
      text_tune_layers=0,       # the top k of them train with the
                                # recommender (0: frozen text features);
                                # memory: items x text_max_length x 384
                                # token states are kept with the model.
      text_max_length=128,      # tokens per item text
      text_random_init=False))  # ablation: the same encoder, untrained


# model.dropout_rate / attention_dropout_rate: set from the training data
# when the data are loaded (trainer.load_data; see dropout_from_data).
FROM_DATA = -1.0


def dropout_from_data(interactions_per_item: float) -> float:
  """The dropout rate for a catalogue with this many training interactions
  per item: 0.5 up to 30 (Amazon, LastFM, Yelp: 10-15), 0.2 from 300
  (ML-1M: 289), log-linear between, rounded to 0.05.

  Measured (benchmarks/results/baselines.md, variants.md): with 0.2
  instead of 0.5, SASRec scored lower on Beauty (13 per item; test NDCG@10
  0.0546 against 0.0568, seed 0) and LastFM (14; 0.0362 against 0.0376, 3
  seeds), and far higher on ML-1M (289; 0.5 underfits there: its training
  loss stalls). The item table holds most of the parameters, so
  interactions per item is the data each parameter sees.
  """
  if not interactions_per_item > 0:
    raise ValueError(f'interactions per item must be > 0, got '
                     f'{interactions_per_item}')
  import math  # pylint: disable=g-import-not-at-top
  t = math.log(interactions_per_item / 30) / math.log(300 / 30)
  rate = 0.5 - 0.3 * min(max(t, 0.0), 1.0)
  return round(rate * 20) / 20


def from_data_keys(config) -> list[str]:
  """The model keys still at FROM_DATA (set when the data are loaded)."""
  return [k for k in ('dropout_rate', 'attention_dropout_rate')
          if config.model.get(k, 0.0) == FROM_DATA]


def resolve_from_data(config, train, num_items: int) -> None:
  """Sets the config's data-dependent values in place: each model dropout
  rate left at FROM_DATA becomes dropout_from_data(training interactions
  per item). `train`: the training sequences of the leave-one-out split.
  A rate given explicitly (--config.model.dropout_rate=0.3) is kept."""
  m = config.model
  keys = from_data_keys(config)
  if not keys:
    return
  per_item = sum(len(s) for s in train) / max(num_items, 1)
  rate = dropout_from_data(per_item)
  for k in keys:
    m[k] = rate
  logging.info('model.%s = %.2f, from the data: %.1f training interactions '
               'per item.', ' and '.join(keys), rate, per_item)


def optimizer_config(lr: float = 1e-3, **overrides):
  cfg = dict(name='adam', lr=lr, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.0,
             schedule='constant', warmup_steps=0, grad_clip_norm=0.0)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def eval_config(batch_size: int = 256):
  return ml_collections.ConfigDict(dict(
      batch_size=batch_size,
      every_epochs=1,
      # ... and at least this many training steps apart: with few training
      # sequences (label_fraction=0.01: 2 steps an epoch) a per-epoch
      # evaluation would early-stop a model that is still learning.
      min_steps=16,
      metric='ndcg@10',       # early stopping / best checkpoint selection.
      mode='max',             # whether higher `metric` is better.
      top_k=20,               # predictions.jsonl list length.
      exclude_history=True,   # S3-Rec protocol: history items are not ranked.
      sampled=True,           # also the 99-negatives protocol where shipped.
      ctr_negatives=4,        # task=ctr: popularity negatives per positive.
  ))


def finetune_config(*, objective: str = 'causal', loss: str = 'ce',
                    mask_prob: float = 0.0, lr: float = 1e-3,
                    batch_size: int = 16, num_epochs: int = 200,
                    patience: int = 10):
  """The supervised (next-item) training stage."""
  return ml_collections.ConfigDict(dict(
      objective=objective,  # causal: next item everywhere; cloze: masked.
      loss=loss,            # ce: full softmax over the catalog.
      num_negatives=1 if loss == 'bce' else 256,
      sampler='uniform',    # sampled_softmax negatives: uniform |
                            # popularity | in_batch (other targets of the
                            # global batch; logQ-corrected by popularity).
      mask_prob=mask_prob,
      batch_size=batch_size,  # packed rows of max_len positions.
      num_epochs=num_epochs,
      patience=patience,    # evaluations without improvement.
      optimizer=optimizer_config(lr=lr),
      method='full',        # rec_jax.peft: full | frozen | partial | lora |
      partial_layers=1,     # prefix | adapter (set with peft.configure).
      label_fraction=1.0,   # fine-tune on this fraction of users.
      task='next',          # next | ctr (rec_jax.tasks.configure).
      # Memory: gradient accumulation over this many slices of each batch;
      # full-softmax CE over the catalog in chunks of this many rows (0:
      # at once). With mesh.model > 1 the CE is sharded over the catalog.
      micro_batches=1,
      ce_chunk_size=0,
      # Regularisers of the causal next-item objective (0 = off):
      # input_mask_prob hides that fraction of input items behind [MASK]
      # (targets unchanged); label_smoothing spreads that share of each
      # target's probability evenly over the catalog.
      input_mask_prob=0.0,
      label_smoothing=0.0,
      # Sequence-level objectives trained jointly with the next-item loss
      # (CL4SRec / DuoRec style multi-task training; all 0 = off).
      aux=aux_config(),
  ))


def aux_config(*, batch_size: int = 128, temperature: float = 1.0,
               ops: str = 'crop,mask,reorder'):
  """Joint objectives of the fine-tune: each step adds the weighted
  rec_jax.objectives losses (contrastive, duorec) of `batch_size` users,
  one per row, newest window, to the next-item loss."""
  return ml_collections.ConfigDict(dict(
      objectives=dict(contrastive=0.0, duorec=0.0),
      batch_size=batch_size,
      temperature=temperature, similarity='dot', negatives='global',
      mask_prob=0.2,
      augment=dict(ops=ops, crop_eta=0.6, mask_gamma=0.3, reorder_beta=0.6,
                   correlated_alpha=0.3, num_correlated=8),
  ))


OBJECTIVES = ('cloze', 'causal', 'contrastive', 'duorec', 'aap', 'mip', 'map',
              'sp')


def pretrain_config(objectives: dict, *, enabled: bool = True,
                    num_epochs: int = 20, min_steps: int = 300,
                    epochs_per_pass: bool = False,
                    batch_size: int = 256,
                    lr: float = 1e-3, mask_prob: float = 0.2,
                    temperature: float = 1.0, similarity: str = 'dot',
                    ops: str = 'crop,mask,reorder'):
  """The self-supervised stage (rec_jax.pretrain); weights of every known
  objective are present (0 = off) so any can be switched on from the
  command line, e.g. --config.pretrain.objectives.sp=0.5."""
  unknown = set(objectives) - set(OBJECTIVES)
  if unknown:
    raise ValueError(f'unknown pretraining objectives {sorted(unknown)}')
  return ml_collections.ConfigDict(dict(
      enabled=enabled,
      objectives={k: float(objectives.get(k, 0.0)) for k in OBJECTIVES},
      num_epochs=num_epochs,     # at least; raised to reach min_steps.
      min_steps=min_steps,
      # True: num_epochs counts passes over the training items, each
      # pipeline.window_passes epochs of one window per user (4 on ML-1M,
      # whose users mostly have more than max_len items); see
      # rec_jax.pretrain.epochs_for.
      epochs_per_pass=epochs_per_pass,
      batch_size=batch_size,     # users (one per row) per step.
      random_prefix=True,        # each epoch, a random prefix of each user.
      mask_prob=mask_prob,       # cloze / mip / map.
      temperature=temperature,   # InfoNCE.
      similarity=similarity,     # InfoNCE: dot | cosine.
      negatives='global',        # global: the whole (cross-device) batch;
                                 # local: rows on the same device only.
      augment=dict(ops=ops, crop_eta=0.6, mask_gamma=0.3, reorder_beta=0.6,
                   correlated_alpha=0.3, num_correlated=8),
      optimizer=optimizer_config(lr=lr),
  ))


def init_from_config():
  """Where the fine-tune stage takes its encoder from ('' = the recipe's own
  pretraining stage when enabled, else fresh)."""
  return ml_collections.ConfigDict(dict(
      path='', subtree='encoder',
      allow_mismatch='',  # comma-separated globs, e.g. 'encoder/pos_embed'.
  ))


def checkpoint_config():
  return ml_collections.ConfigDict(dict(max_to_keep=2, async_save=True,
                                        every_steps=0))


def smoke(config):
  """Shrinks a config to a run of seconds on CPU (tests, quick checks)."""
  config.data.synthetic.update(num_users=128, num_items=60, num_clusters=4,
                               max_len=12)
  config.model.update(max_len=10, embed_dim=16, mlp_dim=32, num_layers=1)
  config.finetune.update(num_epochs=3, batch_size=8, patience=5)
  if 'pretrain' in config:
    config.pretrain.update(num_epochs=2, min_steps=0, batch_size=16)
  config.eval.batch_size = 64
  config.eval.min_steps = 0
  config.log_every_steps = 5
  return config


def pretrain_recipe(arg, objectives: dict, **pretrain_kwargs):
  """A two-stage recipe: self-supervised pretraining of the encoder with
  `objectives`, then the SASRec fine-tune (causal, full-softmax CE, dropout
  from the data: 0.5 on sparse catalogues, 0.2 on dense ones, see
  dropout_from_data; early stopping), evaluated by full ranking.

  Arg string keys: dataset, seed, pretrain (false: the identical fine-tune
  from random initialisation, the ablation baseline), finetune (full |
  frozen | partial | lora | prefix | adapter, see rec_jax.peft),
  label_fraction (fine-tune on that fraction of users), task (next | ctr,
  see rec_jax.tasks), pretrain_epochs (0: the recipe's length, else at
  least that many epochs of pretraining), pretrain_window (random: each
  epoch a random prefix of each user's training items, the default;
  newest: the newest max_len of them, as the fine-tune sees them), smoke.
  """
  args = parse_arg(arg, dataset='synthetic', seed=0, pretrain=True,
                   finetune='full', label_fraction=1.0, task='next',
                   text=False, pretrain_epochs=0, pretrain_window='random',
                   smoke=False)
  if args.pretrain_epochs < 0:
    raise ValueError(f'pretrain_epochs={args.pretrain_epochs} in {arg!r}: '
                     'must be >= 0 (0 = the recipe default).')
  if args.pretrain_window not in ('random', 'newest'):
    raise ValueError(f'pretrain_window={args.pretrain_window!r} in {arg!r}: '
                     "expected 'random' or 'newest'.")
  if args.pretrain_epochs:
    pretrain_kwargs = dict(pretrain_kwargs, num_epochs=args.pretrain_epochs)
  config = ml_collections.ConfigDict()
  config.seed = args.seed
  config.data = data_config(args.dataset)
  config.model = model_config(causal=True, dropout_rate=FROM_DATA,
                              attention_dropout_rate=FROM_DATA)
  if args.text:
    config.model.text_dim = 384  # all-MiniLM-L6-v2
  config.pretrain = pretrain_config(objectives, enabled=bool(args.pretrain),
                                    **pretrain_kwargs)
  config.pretrain.random_prefix = args.pretrain_window == 'random'
  config.finetune = finetune_config()
  config.finetune.label_fraction = args.label_fraction
  from rec_jax import peft  # pylint: disable=g-import-not-at-top
  peft.configure(config, args.finetune)
  config = add_common_sections(config, smoke_run=args.smoke)
  from rec_jax import tasks  # pylint: disable=g-import-not-at-top
  return tasks.configure(config, args.task)


def add_common_sections(config, *, smoke_run: bool):
  """Sharding, checkpoint, eval and logging sections every recipe shares;
  then shrinks the whole config when `smoke_run`."""
  config.mesh = mesh_config()
  config.axis_rules = axis_rules()

  config.checkpoint = checkpoint_config()

  config.init_from = init_from_config()

  config.eval = eval_config()

  config.log_every_steps = 50

  if smoke_run:
    smoke(config)
  return config


# ------------------------------------------------------- resume checks ----

# Keys that may change between a run and its resumption: where it runs and
# how often it logs or checkpoints, not what it computes.
RESUME_FREE = ('mesh.*', 'axis_rules', 'checkpoint.*', 'log_every_steps',
               'data.data_dir', 'data.cache_dir', 'eval.batch_size',
               'eval.top_k', 'eval.sampled')
# Sections a stage's results do not depend on.
STAGE_FREE = {'pretrain': ('finetune.*', 'init_from.*', 'eval.*'),
              'finetune': (),
              'eval': ('eval.*',)}


def flatten(tree, prefix: str = '') -> dict:
  """{'a': {'b': 1}} -> {'a.b': 1}; lists and tuples stay leaves."""
  out = {}
  for k, v in tree.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(flatten(v, key + '.'))
    else:
      out[key] = v
  return out


def _free(key: str, patterns) -> bool:
  return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def config_diff(saved: dict, current: dict, ignore=()) -> tuple:
  """Compares two configs (as JSON dicts) key by key.

  Returns:
    (changed, only_saved, only_current): `changed` maps each dotted key whose
    value differs to (saved, current); the other two list keys that only one
    side has. Keys matching a glob in `ignore` are left out.
  """
  a, b = flatten(saved), flatten(current)
  norm = lambda v: list(v) if isinstance(v, tuple) else v
  changed = {k: (a[k], b[k]) for k in sorted(a.keys() & b.keys())
             if norm(a[k]) != norm(b[k]) and not _free(k, ignore)}
  only_a = sorted(k for k in a.keys() - b.keys() if not _free(k, ignore))
  only_b = sorted(k for k in b.keys() - a.keys() if not _free(k, ignore))
  return changed, only_a, only_b


def check_resume(stage_dir: str, config, stage: str, allow=(),
                 finished: bool = False) -> None:
  """Refuses to resume (or evaluate) a stage run with another recipe.

  A stage directory holding checkpoints is resumed by whatever config the
  command gives; when that config differs from the one the run started with
  (DIR/config.json), resuming would silently mix two recipes, or report an
  old run's numbers as the new recipe's. This raises instead, naming every
  key that changed.

  Args:
    stage_dir: `<workdir>/pretrain` or `<workdir>/finetune`.
    config: the config of this command.
    stage: 'pretrain', 'finetune' or 'eval' (which sections matter).
    allow: globs of further keys allowed to change (`main --allow_changed`).
    finished: check whenever DIR/config.json exists, checkpoints or not (a
      finished run whose checkpoints are gone, or its archived copy in
      benchmarks/results/runs, is still checked before it is tabulated).

  Raises:
    ValueError: when a key that matters differs.
  """
  path = os.path.join(stage_dir, 'config.json')
  started = any(os.path.isdir(os.path.join(stage_dir, d)) and
                os.listdir(os.path.join(stage_dir, d))
                for d in ('checkpoints', 'best'))
  if not ((started or finished) and os.path.exists(path)):
    return
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  current = json.loads(config.to_json_best_effort())
  ignore = RESUME_FREE + STAGE_FREE[stage] + tuple(allow)
  changed, only_saved, only_current = config_diff(saved, current, ignore)
  if only_saved or only_current:
    logging.warning('%s: keys only in the saved config %s, only in this '
                    'one %s (a run from another version of the code?)',
                    path, only_saved, only_current)
  if changed:
    lines = '\n'.join(f'  {k}: {a!r} (saved) != {b!r} (now)'
                      for k, (a, b) in changed.items())
    raise ValueError(
        f'{stage_dir} holds a {stage if stage != "eval" else "finetune"} run '
        f'started with another config ({path}); resuming it would mix two '
        f'recipes:\n{lines}\nUse a fresh --workdir, or pass '
        '--allow_changed=KEY,... to resume anyway.')
