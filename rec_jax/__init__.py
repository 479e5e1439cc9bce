"""rec_jax: self-supervised pretraining and fine-tuning of recommenders in
JAX."""

from rec_jax import hostmem as _hostmem

# Before numpy and JAX start threads, when rec_jax is imported first: the
# setting only reaches the heaps created after it (rec_jax.hostmem).
_hostmem.keep_freed_memory()
