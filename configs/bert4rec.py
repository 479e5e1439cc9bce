r"""BERT4Rec: bidirectional Transformer trained with the Cloze objective.

Random item positions are replaced by [MASK] and predicted with a full
softmax over the catalog; at evaluation a [MASK] is appended to the history
and its prediction is ranked against every item (history excluded).

  python -m rec_jax.main --config=configs/bert4rec.py:dataset=beauty \
      --workdir=/tmp/bert4rec_beauty

Args (`:key=value,flag`): dataset (default synthetic), seed, smoke.

Measured 2026-11-28 on a shared 2-core CPU (benchmarks/results/baselines.md,
`python benchmarks/baselines.py --models=bert4rec --datasets=NAME`), test,
full ranking, history excluded:
  lastfm, 3 seeds: NDCG@10 0.0254 ± 0.0033, HR@10 0.0456 ± 0.0069
    (~22 epochs, 8 s each).
  beauty, 3 seeds (2026-12-01/02): NDCG@10 0.0349 ± 0.0024, HR@10
    0.0656 ± 0.0036 (70-110 epochs, 62-82 min).
  toys, 3 seeds (2026-12-02): NDCG@10 0.0320 ± 0.0009, HR@10
    0.0568 ± 0.0020 (87-113 epochs, 51-76 min).
  ml-1m, 3 seeds (2026-12-02): NDCG@10 0.1253 ± 0.0026, HR@10
    0.2332 ± 0.0065 (34-60 epochs, 79-119 min; SASRec on the same split:
    0.1663).
Archived runs: benchmarks/results/runs/baselines/bert4rec_*.
"""

import ml_collections

from rec_jax import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, dataset='synthetic', seed=0,
                              mask_prob=0.2, smoke=False)
  config = ml_collections.ConfigDict()
  config.seed = args.seed

  config.data = config_lib.data_config(args.dataset)

  # BERT4Rec: 2 bidirectional blocks of 2 heads, width 64, 50 items of
  # history, dropout 0.2.
  config.model = config_lib.model_config(
      name='sasrec', causal=False, max_len=50, embed_dim=64, num_layers=2,
      num_heads=2, mlp_dim=256, positions='absolute', dropout_rate=0.2,
      attention_dropout_rate=0.2)

  # Cloze: `mask_prob` of the items hidden behind [MASK] and predicted with
  # a full softmax; 16 packed rows a step, Adam 1e-3, early stopping.
  config.finetune = config_lib.finetune_config(
      objective='cloze', loss='ce', lr=1e-3, batch_size=16, num_epochs=200,
      patience=10, mask_prob=args.mask_prob)

  config.eval = config_lib.eval_config()

  config = config_lib.runtime_sections(config)
  return config_lib.smoke(config) if args.smoke else config
