"""Helpers that config files import: arg-string parsing and shared sections."""

import copy
import math

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
      # users' sequences (rec_jax.data.sources.files.read_new_interactions).
      new_interactions='',
      # Cold start: this fraction of the catalog occurs only as test
      # targets (datasets.cold_start); results gain test_cold / test_warm.
      cold_fraction=0.0,
      synthetic=dict(num_users=1000, num_items=500, num_clusters=10,
                     min_len=5, max_len=30, seed=0),
  ))


def peft_config():
  """The fine-tune's parameter-efficient additions (models.layers.Peft):
  all off; `peft.overrides(method)` turns a method's on. Dropped as a whole
  by the pretraining model."""
  return ml_collections.ConfigDict(dict(
      lora_rank=0, lora_alpha=0.0,  # LoRA on the blocks' projections.
      lora_table_rank=0,     # LoRA on the item table (finetune=lora: 2)
      lora_table_init=0.02,  # std of its B factor (A starts at zero)
      prefix_len=0, adapter_dim=0))


def model_config(*, name: str, causal: bool, max_len: int, embed_dim: int,
                 dropout_rate: float, **family_keys):
  """The `model` section: the family (`name`, a module of rec_jax.models),
  the sizes the recipe states, its family's own keys (e.g. num_layers,
  num_heads, mlp_dim for sasrec), and switches every family shares."""
  return ml_collections.ConfigDict(dict(
      name=name, causal=causal, max_len=max_len, embed_dim=embed_dim,
      dropout_rate=dropout_rate, **family_keys,
      vocab_multiple=128,  # item table rows split evenly over `model`.
      dtype='float32',     # compute dtype ('bfloat16': mixed precision;
                           # parameters and optimizer state stay float32).
      remat=False,         # recompute each block's activations in the
                           # backward pass instead of storing them.
      peft=peft_config(),  # fine-tuning methods (rec_jax.peft).
      head='none',         # finetune=frozen: 'linear' (or 'mlp').
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


# A value set from the training data when the data are loaded
# (resolve_from_data): model.dropout_rate / attention_dropout_rate (see
# dropout_from_data) and pretrain.epochs (see pretrain_epochs).
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
  t = math.log(interactions_per_item / 30) / math.log(300 / 30)
  rate = 0.5 - 0.3 * min(max(t, 0.0), 1.0)
  return round(rate * 20) / 20


_RATES = ('dropout_rate', 'attention_dropout_rate')


def from_data_keys(config) -> list[str]:
  """The dotted keys still at FROM_DATA (set when the data are loaded)."""
  keys = [f'model.{k}' for k in _RATES
          if k in config.model and config.model[k] == FROM_DATA]
  if 'pretrain' in config and config.pretrain.epochs == FROM_DATA:
    keys.append('pretrain.epochs')
  return keys


def pretrain_epochs(cfg, stream) -> int:
  """The pretraining length: num_epochs, raised until the run has at least
  min_steps steps: small datasets (a few steps per epoch) get more passes,
  large ones fewer. `stream`: the stage's pipeline.UserStream.

  With cfg.epochs_per_pass (off by default: on ML-1M, where it gives 80
  epochs in place of 20, it did not beat scratch on test; see
  benchmarks/results/ablations.md) num_epochs counts passes over the
  training items rather than epochs of one window per user: each pass is
  pipeline.window_passes epochs, so that users with more than max_len
  training items are seen in full (ML-1M: 4 epochs a pass; the Amazon
  sets and LastFM, whose users mostly fit in max_len or whose min_steps
  already asks for more: unchanged)."""
  from rec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  per_epoch = max(stream.steps_in_epoch(0), 1)
  epochs = int(cfg.num_epochs)
  if cfg.epochs_per_pass:
    epochs *= pipeline.window_passes(stream.lengths, stream.max_len)
  return max(epochs, -(-int(cfg.min_steps) // per_epoch))


def resolve_from_data(config, train, num_items: int):
  """A copy of `config` with every FROM_DATA value set from the training
  data (`train`: the training sequences of the leave-one-out split), each
  logged: the model's dropout rates (dropout_from_data of the training
  interactions per item) and, when the recipe pretrains, pretrain.epochs
  (pretrain_epochs). Values given explicitly (--config.model.dropout_rate=
  0.3) are kept. The stages save the resolved config in config.json.
  Nothing is copied when nothing is left to resolve."""
  keys = from_data_keys(config)
  if not keys:
    return config
  config = copy.deepcopy(config)
  with config.unlocked():
    rates = [k.split('.')[1] for k in keys if k.startswith('model.')]
    if rates:
      per_item = sum(len(s) for s in train) / max(num_items, 1)
      rate = dropout_from_data(per_item)
      for k in rates:
        config.model[k] = rate
      logging.info('model.%s = %.2f, from the data: %.1f training '
                   'interactions per item.', ' and '.join(rates), rate,
                   per_item)
    if 'pretrain.epochs' in keys:
      # The stage's own stream (mesh aside: rows for one device).
      from rec_jax import pretrain  # pylint: disable=g-import-not-at-top
      cfg = config.pretrain
      stream = pretrain.user_stream(config, train)
      cfg.epochs = pretrain_epochs(cfg, stream)
      logging.info('pretrain.epochs = %d, from the data: at least %d epochs '
                   'and %d steps (%d steps in the first epoch).', cfg.epochs,
                   cfg.num_epochs, cfg.min_steps, stream.steps_in_epoch(0))
  return config


def optimizer_config(lr: float = 1e-3, **overrides):
  cfg = dict(name='adam', lr=lr, b1=0.9, b2=0.98, eps=1e-8, weight_decay=0.0,
             schedule='constant', warmup_steps=0, grad_clip_norm=0.0)
  cfg.update(overrides)
  return ml_collections.ConfigDict(cfg)


def eval_config(batch_size: int = 256):
  return ml_collections.ConfigDict(dict(
      batch_size=batch_size,
      every_epochs=1,
      # > 0: validate every this many training steps instead (within epochs,
      # and after the last step), each validation also a checkpoint; early
      # stopping's patience then counts these. Epochs are the default: an
      # epoch is the same number of targets whatever the rows per step.
      every_steps=0,
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


def finetune_config(*, objective: str, loss: str, lr: float,
                    batch_size: int, num_epochs: int, patience: int,
                    mask_prob: float = 0.0):
  """The supervised (next-item) training stage: the hyperparameters the
  recipe states, then switches that are off unless asked for."""
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
      partial_layers=1,     # prefix | adapter (see peft.overrides).
      label_fraction=1.0,   # fine-tune on this fraction of users.
      task='next',          # next | ctr | rating (rec_jax.tasks).
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


def pretrain_config(objectives: dict, *, num_epochs: int, min_steps: int,
                    batch_size: int, lr: float, mask_prob: float,
                    temperature: float, similarity: str, ops: str,
                    enabled: bool = True, random_prefix: bool = True,
                    epochs_per_pass: bool = False):
  """The self-supervised stage (rec_jax.pretrain); weights of every known
  objective are present (0 = off) so any can be switched on from the
  command line, e.g. --config.pretrain.objectives.sp=0.5."""
  # pylint: disable-next=g-import-not-at-top
  from rec_jax import objectives as objectives_lib
  unknown = set(objectives) - set(objectives_lib.NAMES)
  if unknown:
    raise ValueError(f'unknown pretraining objectives {sorted(unknown)}')
  return ml_collections.ConfigDict(dict(
      enabled=enabled,
      objectives={k: float(objectives.get(k, 0.0))
                  for k in objectives_lib.NAMES},
      num_epochs=num_epochs,     # at least; raised to reach min_steps.
      min_steps=min_steps,
      # True: num_epochs counts passes over the training items, each
      # pipeline.window_passes epochs of one window per user (4 on ML-1M,
      # whose users mostly have more than max_len items); see
      # pretrain_epochs.
      epochs_per_pass=epochs_per_pass,
      epochs=int(FROM_DATA),     # the length those give on the data.
      batch_size=batch_size,     # users per step.
      packed=True,               # several users to a row (pipeline.
                                 # UserStream): one compiled shape.
      random_prefix=random_prefix,  # each epoch, a random prefix of each
                                    # user (False: the newest window).
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
  """Checkpoint cadence: at the end of every epoch that is evaluated, and
  of any other once `min_steps` steps have passed since the last save
  (pretraining on a small dataset has epochs of a few steps); also every
  `every_steps` steps when set (0: off). A run resumes exactly from any of
  them (batches and keys are functions of the step)."""
  return ml_collections.ConfigDict(dict(max_to_keep=2, async_save=True,
                                        every_steps=0, min_steps=100))


def smoke(config):
  """Shrinks a config to a run of seconds on CPU (tests, quick checks)."""
  config.data.synthetic.update(num_users=128, num_items=60, num_clusters=4,
                               max_len=12)
  config.model.update(max_len=10, embed_dim=16)
  for key, value in (('mlp_dim', 32), ('num_layers', 1)):
    if key in config.model:
      config.model[key] = value
  config.finetune.update(num_epochs=3, batch_size=8, patience=5)
  if 'pretrain' in config:
    config.pretrain.update(num_epochs=2, min_steps=0, batch_size=16)
  config.eval.batch_size = 64
  config.eval.min_steps = 0
  config.log_every_steps = 5
  return config


def runtime_sections(config):
  """Where and how a recipe runs, the same for every recipe: mesh and axis
  rules, checkpoints, init_from and the logging cadence."""
  config.mesh = mesh_config()
  config.axis_rules = axis_rules()
  config.checkpoint = checkpoint_config()
  config.init_from = init_from_config()
  config.log_every_steps = 50
  return config


def override(config, overrides: dict):
  """Sets dotted keys ({'model.peft.lora_rank': 8}) of `config`, each of
  which must exist: the explicit edits that peft.overrides and
  tasks.overrides return. Returns config.

  Raises:
    KeyError: naming a key the config does not have.
  """
  for key, value in overrides.items():
    *path, name = key.split('.')
    node = config
    for part in path:
      if part not in node:
        raise KeyError(f'override {key}={value!r}: the config has no '
                       f'section {part!r}')
      node = node[part]
    if name not in node:
      raise KeyError(f'override {key}={value!r}: the config has no key '
                     f'{name!r} under {".".join(path) or "the root"}')
    node[name] = value
  return config


def pretrain_args(arg):
  """The arg string of the pretraining recipes (configs/recommended.py,
  cl4srec.py, cloze.py, duorec.py, s3rec.py, causal.py), parsed and checked.

  Keys: dataset, seed, pretrain (false: the identical fine-tune from random
  initialisation, the ablation baseline), finetune (full | frozen | partial
  | lora | prefix | adapter, see rec_jax.peft), label_fraction (fine-tune
  on that fraction of users), task (next | ctr | rating, see rec_jax.tasks),
  text (item text through the adaptor), pretrain_epochs (0: the recipe's
  length, else at least that many epochs of pretraining), pretrain_window
  (random: each epoch a random prefix of each user's training items, the
  default; newest: the newest max_len of them, as the fine-tune sees them),
  smoke.
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
  return args


def finish_pretrain_recipe(config, args):
  """What the pretraining recipes' arg string sets after their sections:
  the fine-tuning method's and the task's overrides (rec_jax.peft,
  rec_jax.tasks), the label fraction, then `smoke`. Returns config."""
  from rec_jax import peft  # pylint: disable=g-import-not-at-top
  from rec_jax import tasks  # pylint: disable=g-import-not-at-top
  config.finetune.label_fraction = args.label_fraction
  override(config, peft.overrides(args.finetune))
  override(config, tasks.overrides(args.task))
  return smoke(config) if args.smoke else config
