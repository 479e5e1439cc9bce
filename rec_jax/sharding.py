"""Device mesh from config, logical axis rules, and state shardings."""

import contextlib
import math

from absl import logging
import jax
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from rec_jax import trees

AXES = ('data', 'fsdp', 'model')


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Resolves `{data, fsdp, model}` sizes, one of which may be -1."""
  sizes = [int(mesh_cfg[a]) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f'config.mesh: at most one axis may be -1, got {sizes}.')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh: axis sizes must be >= 1 or -1: {sizes}.')
  known = math.prod(s for s in sizes if s != -1)
  if num_devices % known:
    raise ValueError(
        f'config.mesh {dict(zip(AXES, sizes))} does not divide the '
        f'{num_devices} available devices.')
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) > num_devices:
    raise ValueError(
        f'config.mesh {dict(zip(AXES, sizes))} needs {math.prod(sizes)} '
        f'devices but {num_devices} are available.')
  return tuple(sizes)


def make_mesh(mesh_cfg) -> jax.sharding.Mesh:
  """The (data, fsdp, model) mesh; explicit sizes may use fewer devices."""
  shape = mesh_shape(mesh_cfg, jax.device_count())
  devices = None
  if math.prod(shape) < jax.device_count():
    if jax.process_count() > 1:
      raise ValueError(f'config.mesh {shape} must use all '
                       f'{jax.device_count()} devices of a multi-host run.')
    logging.warning('config.mesh %s uses %d of %d devices.', shape,
                    math.prod(shape), jax.device_count())
    devices = jax.devices()[:math.prod(shape)]
  # Auto axes: classic GSPMD propagation (make_mesh defaults to Explicit).
  mesh = jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES),
                       devices=devices)
  logging.info('Mesh %s over %d devices (%d processes).',
               dict(zip(AXES, shape)), jax.device_count(), jax.process_count())
  return mesh


@contextlib.contextmanager
def use(mesh, rules):
  """Mesh and logical axis rules for model construction and stepping."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(
      (k, v) for k, v in rules)):
    yield


def batch_axes():
  return ('data', 'fsdp')


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(), *([None] * (ndim - 1))))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_parallel_size(mesh) -> int:
  return mesh.shape['data'] * mesh.shape['fsdp']


def check_batch(global_batch: int, mesh, what: str = 'batch_size'):
  n = data_parallel_size(mesh)
  if global_batch % n:
    raise ValueError(
        f'{what}={global_batch} must be divisible by the data-parallel size '
        f'{n} (mesh data x fsdp = {mesh.shape["data"]} x {mesh.shape["fsdp"]}).')


def fit_to_shapes(shardings, abstract, mesh):
  """Drops mesh axes from the dims they do not divide (a 2-head model on a
  model axis of 8: its heads replicate while the item table still splits 8
  ways), logging each change once."""

  def fit(path, sh, leaf):
    spec = list(sh.spec) + [None] * (len(leaf.shape) - len(sh.spec))
    changed = False
    for dim, axes in enumerate(spec):
      if axes is None:
        continue
      names = axes if isinstance(axes, tuple) else (axes,)
      size = math.prod(mesh.shape[a] for a in names)
      if leaf.shape[dim] % size:
        spec[dim] = None
        changed = True
    if not changed:
      return sh
    logging.info('%s %s: replicated along the mesh axes that do not divide '
                 'it (%s -> %s).', jax.tree_util.keystr(path),
                 tuple(leaf.shape), sh.spec, P(*spec))
    return NamedSharding(mesh, P(*spec))

  return jax.tree_util.tree_map_with_path(fit, shardings, abstract)


def put_replicated(mesh, x):
  """`x` (the same on every process) replicated over the whole mesh; also
  on multi-host meshes, where device_put cannot reach other hosts."""
  sh = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(x, sh)
  if jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key):
    return jax.jit(lambda: x, out_shardings=sh)()
  return jax.make_array_from_process_local_data(sh, np.asarray(x))


def opt_state_shardings(tx, abstract_opt_state, param_shardings, mesh):
  """Gives optimizer moments the shardings of their parameters.

  Each optimizer-state leaf whose key path ends with a parameter's key path
  (and has its shape) takes that parameter's sharding; everything else
  (step counts, masked-out entries) is replicated. This works for any optax
  state, including multi_transform's masked ones.
  """
  del tx
  def key(path):
    return tuple(trees.key_name(k) for k in path)
  by_path = {key(p): s for p, s in
             jax.tree_util.tree_flatten_with_path(param_shardings)[0]}
  longest = max((len(k) for k in by_path), default=0)

  def pick(path, leaf):
    if not getattr(leaf, 'ndim', 0):
      return replicated(mesh)
    k = key(path)
    for n in range(min(longest, len(k)), 0, -1):
      if k[-n:] in by_path:
        return by_path[k[-n:]]
    return replicated(mesh)
  return jax.tree_util.tree_map_with_path(pick, abstract_opt_state)


def host_to_global(mesh, tree):
  """Builds global arrays from this process's rows of a batch (numpy)."""
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(
        batch_sharding(mesh, x.ndim), x)
  # An intended transfer (loops guard against accidental ones).
  with jax.transfer_guard('allow'):
    return jax.tree.map(put, tree)


def process_rows(global_rows: int) -> slice:
  """The slice of a global batch's rows that this process loads."""
  per = global_rows // jax.process_count()
  i = jax.process_index()
  return slice(i * per, (i + 1) * per)
