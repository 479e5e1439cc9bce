r"""S3-Rec: pretraining with the four mutual-information objectives over
item attributes (associated attribute, masked item, masked attribute and
segment prediction, weights 1.0 / 0.2 / 1.0 / 0.5 as in the paper), then the
SASRec fine-tune from the pretrained encoder.

  python -m rec_jax.main --config=configs/s3rec.py:dataset=beauty \
      --workdir=/tmp/s3rec_beauty

Needs item attributes (the S3-Rec sets, ml-1m genres, synthetic). Args:
dataset, seed, pretrain (false: the same fine-tune from scratch), smoke.
"""

from rec_jax import config_lib


def get_config(arg=None):
  return config_lib.pretrain_recipe(
      arg, dict(aap=1.0, mip=0.2, map=1.0, sp=0.5), mask_prob=0.2)
