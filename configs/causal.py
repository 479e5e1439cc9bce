r"""Causal next-item pretraining only: the recommended recipe without its
contrastive term (the two configs differ only in that weight), then the
SASRec fine-tune. With `pretrain_window=newest` it pretrains on the very
windows the fine-tune sees: of the encoders measured, the one LoRA
(finetune=lora) builds on best.

  python -m rec_jax.main \
      --config=configs/causal.py:dataset=beauty,pretrain_window=newest \
      --workdir=/tmp/causal_beauty

Measured (benchmarks/results/finetune_methods_beauty_causal_newest.md,
2026-12-02, Beauty, test NDCG@10, pretrain_window=newest, 20 epochs, 3
seeds): LoRA (finetune=lora, 4.64% of the parameters train) 0.0507 +-
0.0002 against full fine-tuning 0.0557 +- 0.0006 from the same encoders,
91.2%; the pretrained model alone scores 0.0636 on validation, 90.4% of
full fine-tuning's 0.0704. From the recommended recipe's encoder LoRA
reached 60.5% (20 epochs) to 89.2% (100 epochs, newest window).

Args: as configs/recommended.py (dataset, seed, pretrain, finetune, task,
label_fraction, pretrain_epochs, pretrain_window, smoke).
"""

import ml_collections

from rec_jax import config_lib


def get_config(arg=None):
  args = config_lib.pretrain_args(arg)
  config = ml_collections.ConfigDict()
  config.seed = args.seed

  config.data = config_lib.data_config(args.dataset)

  # SASRec: 2 causal blocks of 2 heads, width 64, the newest 50 items of
  # history; dropout from the training data (0.5 on sparse catalogues, 0.2
  # on dense ones: config_lib.dropout_from_data).
  config.model = config_lib.model_config(
      name='sasrec', causal=True, max_len=50, embed_dim=64, num_layers=2,
      num_heads=2, mlp_dim=256, positions='absolute',
      dropout_rate=config_lib.FROM_DATA,
      attention_dropout_rate=config_lib.FROM_DATA)
  if args.text:
    config.model.text_dim = 384  # all-MiniLM-L6-v2

  # Next item only, 256 users a step, at least 20 epochs and 300 steps. The
  # augmentation ops are unused without a contrastive term; they match
  # recommended.py so that --config.pretrain.objectives.contrastive=0.1
  # turns this recipe into that one.
  config.pretrain = config_lib.pretrain_config(
      dict(causal=1.0), enabled=args.pretrain,
      num_epochs=args.pretrain_epochs or 20, min_steps=300, batch_size=256,
      lr=1e-3, mask_prob=0.2, temperature=1.0, similarity='dot',
      ops='crop,mask,reorder,substitute,insert',
      random_prefix=args.pretrain_window == 'random')

  # The SASRec fine-tune: next item at every position, full-softmax CE, 16
  # packed rows of max_len a step, Adam 1e-3, early stopping after 10
  # validations without a better NDCG@10.
  config.finetune = config_lib.finetune_config(
      objective='causal', loss='ce', lr=1e-3, batch_size=16, num_epochs=200,
      patience=10)

  config.eval = config_lib.eval_config()

  config = config_lib.runtime_sections(config)
  return config_lib.finish_pretrain_recipe(config, args)
