r"""Cloze pretraining (masked item prediction, bidirectional attention),
then the SASRec fine-tune (causal attention, full-softmax CE) from the
pretrained encoder.

  python -m rec_jax.main --config=configs/cloze.py:dataset=beauty \
      --workdir=/tmp/cloze_beauty

Args (`:key=value,flag`): dataset, seed, pretrain (false: the same
fine-tune from scratch), smoke.
"""

from rec_jax import config_lib


def get_config(arg=None):
  return config_lib.pretrain_recipe(arg, dict(cloze=1.0), mask_prob=0.2)
