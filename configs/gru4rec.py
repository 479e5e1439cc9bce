r"""GRU4Rec: a GRU over the item sequence, next item at every position by
full-softmax cross-entropy over the tied item table; leave-one-out, early
stopping on validation NDCG@10, evaluated by full ranking with the user's
history excluded. The classic recurrent baseline (Hidasi et al. 2016),
trained here with the SASRec recipe's loss and packed rows (the recurrence
restarts at every user boundary: rec_jax/models/gru4rec.py).

  python -m rec_jax.main --config=configs/gru4rec.py:dataset=lastfm \
      --workdir=/tmp/gru4rec_lastfm

Args (`:key=value,flag`): dataset (default synthetic), seed, smoke.

Measured 2026-12-07 on a quiet 2-core CPU (benchmarks/results/gru4rec.md,
`python benchmarks/baselines.py --models=gru4rec --datasets=lastfm
--seeds=0,1,2 --out=benchmarks/results/gru4rec.md`), test, full ranking,
history excluded: lastfm, 3 seeds, NDCG@10 0.0251 ± 0.0102, HR@10
0.0465 ± 0.0162 (22-72 epochs, 2 s each; SASRec 0.0376 ± 0.0033).
"""

import ml_collections

from rec_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset='synthetic', seed=0, smoke=False)
  config = ml_collections.ConfigDict()
  config.seed = args.seed

  config.data = config_lib.data_config(args.dataset)

  # One GRU layer of 128 units over 64-d item embeddings (RecBole's
  # GRU4Rec sizes), the newest 50 items of history; dropout on the
  # embeddings and the GRU outputs, from the training data as in SASRec.
  config.model = config_lib.model_config(
      name='gru4rec', causal=True, max_len=50, embed_dim=64, num_layers=1,
      hidden_dim=128, dropout_rate=config_lib.FROM_DATA)

  # Next item at every position, full-softmax CE, 16 packed rows of
  # max_len a step, Adam 1e-3, early stopping after 10 validations
  # without a better NDCG@10.
  config.finetune = config_lib.finetune_config(
      objective='causal', loss='ce', lr=1e-3, batch_size=16, num_epochs=200,
      patience=10)

  config.eval = config_lib.eval_config()

  config = config_lib.runtime_sections(config)
  return config_lib.smoke(config) if args.smoke else config
