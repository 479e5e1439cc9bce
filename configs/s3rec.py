r"""S3-Rec: pretraining with the four mutual-information objectives over
item attributes (associated attribute, masked item, masked attribute and
segment prediction, weights 1.0 / 0.2 / 1.0 / 0.5 as in the paper), then the
SASRec fine-tune from the pretrained encoder.

  python -m rec_jax.main --config=configs/s3rec.py:dataset=beauty \
      --workdir=/tmp/s3rec_beauty

Needs item attributes (the S3-Rec sets, ml-1m genres, synthetic). Args:
dataset, seed, pretrain (false: the same fine-tune from scratch), smoke.
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

  # The four mutual-information objectives with the paper's weights, 20%
  # of the items masked, 256 users a step, at least 20 epochs and 300
  # steps.
  config.pretrain = config_lib.pretrain_config(
      dict(aap=1.0, mip=0.2, map=1.0, sp=0.5), enabled=args.pretrain,
      num_epochs=args.pretrain_epochs or 20, min_steps=300, batch_size=256,
      lr=1e-3, mask_prob=0.2, temperature=1.0, similarity='dot',
      ops='crop,mask,reorder',
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
