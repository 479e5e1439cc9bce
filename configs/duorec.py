r"""DuoRec-style pretraining: next-item prediction plus InfoNCE between a
sequence and (a) its second dropout pass, (b) another user's sequence with
the same next item; sequences sharing the next item are not negatives.
Then the SASRec fine-tune.

  python -m rec_jax.main --config=configs/duorec.py:dataset=beauty \
      --workdir=/tmp/duorec_beauty

Args: dataset, seed, pretrain (false: the same fine-tune from scratch),
smoke.
"""

from rec_jax import config_lib


def get_config(arg=None):
  return config_lib.pretrain_recipe(arg, dict(causal=1.0, duorec=0.1))
