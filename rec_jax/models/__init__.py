"""Flax NNX models; every parameter carries logical axis names.

Parameters are placed by `jax.jit(init, out_shardings=...)` from shardings
computed on the abstract model, so NNX's eager sharding of each new
variable (which needs a mesh context even for a model built in a notebook)
is turned off; the logical axis names stay on the variables as metadata.
"""

import flax

flax.config.update('flax_always_shard_variable', False)
