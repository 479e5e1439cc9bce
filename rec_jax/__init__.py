"""rec_jax: self-supervised pretraining and fine-tuning of recommenders in
JAX."""

from rec_jax import hostmem as _hostmem

# Before JAX starts its CPU backend: the pad only reaches the heaps that
# XLA's threads create after it is set (rec_jax.hostmem).
_hostmem.keep_freed_memory()
