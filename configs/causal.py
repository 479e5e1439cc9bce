r"""Causal next-item pretraining only: the recommended recipe without its
contrastive term (the two configs differ only in that weight), then the
SASRec fine-tune. With `pretrain_window=newest` it pretrains on the very
windows the fine-tune sees, which makes it the encoder that adapters of few
parameters (LoRA, finetune=lora) build on best.

  python -m rec_jax.main \
      --config=configs/causal.py:dataset=beauty,pretrain_window=newest \
      --workdir=/tmp/causal_beauty

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
