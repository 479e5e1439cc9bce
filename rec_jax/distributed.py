"""Multi-host start-up: `jax.distributed.initialize()` when launched on
several hosts, before anything touches a device.

Detected launches:
  - Cloud TPU VM slices with several workers (TPU_WORKER_HOSTNAMES lists
    more than one host): JAX finds the coordinator itself.
  - SLURM with several tasks (SLURM_NTASKS > 1): likewise.
  - Anything else, GPU nodes included, through explicit variables:
      REC_JAX_COORDINATOR=host:port  REC_JAX_NUM_PROCESSES=N
      REC_JAX_PROCESS_ID=i           (launch/gpu.sh sets them)
  - REC_JAX_DISTRIBUTED=1 forces initialize() with JAX's own detection.
On a multi-process CPU run (tests, laptops) the cross-process collectives
use gloo.
"""

import os

import jax

_DONE = [False]


def launch_kwargs(env=None):
  """The initialize() arguments for this launch, or None for one process.

  Raises:
    ValueError: an explicit launch with missing or malformed variables.
  """
  env = os.environ if env is None else env
  explicit = [k for k in ('REC_JAX_COORDINATOR', 'REC_JAX_NUM_PROCESSES',
                          'REC_JAX_PROCESS_ID') if env.get(k)]
  if explicit:
    if len(explicit) != 3:
      raise ValueError('Multi-process launch: set all of '
                       'REC_JAX_COORDINATOR, REC_JAX_NUM_PROCESSES and '
                       f'REC_JAX_PROCESS_ID (have {explicit}).')
    try:
      num, pid = (int(env['REC_JAX_NUM_PROCESSES']),
                  int(env['REC_JAX_PROCESS_ID']))
    except ValueError:
      raise ValueError('REC_JAX_NUM_PROCESSES and REC_JAX_PROCESS_ID must be '
                       'integers') from None
    if not 0 <= pid < num:
      raise ValueError(f'REC_JAX_PROCESS_ID={pid} is not in 0..{num - 1}')
    if num == 1:
      return None
    return dict(coordinator_address=env['REC_JAX_COORDINATOR'],
                num_processes=num, process_id=pid)
  if env.get('REC_JAX_DISTRIBUTED', '') not in ('', '0'):
    return {}
  hosts = [h for h in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]
  if len(hosts) > 1:
    return {}
  if int(env.get('SLURM_NTASKS', '1') or 1) > 1:
    return {}
  return None


def initialize(env=None) -> bool:
  """Initializes jax.distributed for a multi-host launch (once); returns
  whether it did."""
  kwargs = launch_kwargs(env)
  if kwargs is None or _DONE[0]:
    return False
  # Only the CPU backend reads this (multi-process CPU runs need it).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
  _DONE[0] = True
  return True
