"""rec_jax: self-supervised pretraining and fine-tuning of recommenders in
JAX."""
