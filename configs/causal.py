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

from rec_jax import config_lib


def get_config(arg=None):
  # The augmentation ops are unused without a contrastive term; they match
  # recommended.py so that --config.pretrain.objectives.contrastive=0.1
  # turns this recipe into that one.
  return config_lib.pretrain_recipe(
      arg, dict(causal=1.0), ops='crop,mask,reorder,substitute,insert')
