r"""The recommended recipe: pretrain the encoder on every user's training
items with next-item prediction plus InfoNCE between two augmented views of
each sequence (CL4SRec / CoSeRec augmentations: crop, mask, reorder and the
correlation-based substitute and insert; weight 0.1), then fine-tune with
the SASRec recipe (causal, full-softmax CE, dropout 0.5, early stopping on
validation NDCG@10) from the pretrained encoder.

  python -m rec_jax.main --config=configs/recommended.py:dataset=beauty \
      --workdir=/tmp/rec_beauty

Args (`:key=value,flag`): dataset; seed; pretrain=false (the identical
fine-tune from random initialisation, the ablation baseline); finetune=
full | frozen | partial | lora | prefix | adapter; task=next | ctr | rating;
label_fraction=F; smoke.

Hyperparameters are shared by every dataset; the only dataset-dependent
quantity is the length of pretraining, at least 20 epochs and at least 300
steps of 256 users (small datasets get more passes).

Why this recipe (benchmarks/results/ablations.md, 2026-11-28, seed 0 so
far): on LastFM it gave test NDCG@10 0.0434 against 0.0408 for the same
fine-tune from scratch, and Cloze pretraining 0.0417.
"""

from rec_jax import config_lib


def get_config(arg=None):
  return config_lib.pretrain_recipe(
      arg, dict(causal=1.0, contrastive=0.1),
      ops='crop,mask,reorder,substitute,insert')
