r"""The recommended recipe (provisional: see benchmarks/results/ablations.md).
between two augmented views of each sequence (crop, mask, reorder, and the
correlation-based substitute and insert), then the SASRec fine-tune.

  python -m rec_jax.main --config=configs/cl4srec.py:dataset=beauty \
      --workdir=/tmp/cl4srec_beauty

Args: dataset, seed, pretrain (false: the same fine-tune from scratch),
smoke. Augmentations: --config.pretrain.augment.ops=crop,mask,reorder.
"""

from rec_jax import config_lib


def get_config(arg=None):
  return config_lib.pretrain_recipe(
      arg, dict(causal=1.0, contrastive=0.1),
      ops='crop,mask,reorder,substitute,insert')
