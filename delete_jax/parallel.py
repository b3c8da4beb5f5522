"""Data parallelism: one 1-D mesh ('data') over every device of every process.

State is replicated, batches are sharded along the batch axis, and `jax.jit`
inserts the reductions (gradient means, BatchNorm batch statistics), so a step
computes the same function on 1 CPU, 8 devices or a TPU pod. Each process feeds
only its own rows of a global batch (`jax.make_array_from_process_local_data`).

Multi-host runs are multi-controller: every process runs the same program on the
same host data, calls the same jitted steps in the same order and saves the same
checkpoints (Orbax coordinates the writes); only process 0 writes reports and
metrics. `initialize_distributed` joins the processes before JAX is used.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import logging
import os
from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from delete_jax.errors import UserError

DATA_AXIS = 'data'


def _env_int(name: str, default: int = 1) -> int:
  try:
    return int(os.environ.get(name, default))
  except ValueError:
    return default


def detected_cluster() -> Optional[str]:
  """Names the multi-process launcher this process runs under, if any.

  Only launchers that `jax.distributed.initialize()` configures by itself count:
  a SLURM step or an Open MPI job with more than one task, and a Cloud TPU VM
  (libtpu installed and TPU chips present; on a single-host TPU VM this yields
  one process, which is harmless). Anything else is a single process unless the
  coordinator flags say otherwise.
  """
  if _env_int('SLURM_NTASKS') > 1 and all(
      v in os.environ for v in ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID',
                                'SLURM_LOCALID')):
    return 'slurm'
  if 'OMPI_MCA_orte_hnp_uri' in os.environ and _env_int('OMPI_COMM_WORLD_SIZE') > 1:
    return 'open-mpi'
  if importlib.util.find_spec('libtpu') is not None and (
      glob.glob('/dev/accel[0-9]*') or glob.glob('/dev/vfio/[0-9]*')):
    return 'cloud-tpu'
  return None


def initialize_distributed(coordinator_address: Optional[str] = None,
                           num_processes: Optional[int] = None,
                           process_id: Optional[int] = None) -> bool:
  """Joins this process to a multi-process run when it is launched as one.

  Must run before anything else touches a JAX backend. Explicit arguments (the
  `--coordinator_address`, `--num_processes`, `--process_id` flags of `main`)
  win; without them, a detected cluster (`detected_cluster`) is joined with
  `jax.distributed.initialize()`, which reads its parameters from the cluster.

  Returns:
    Whether `jax.distributed.initialize` was called.

  Raises:
    UserError: explicit flags that are incomplete or inconsistent.
  """
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if num_processes == 1 and not coordinator_address:
      return False
    if None in explicit:
      raise UserError('a multi-process run needs all three of --coordinator_address '
                      '(host:port of process 0), --num_processes and --process_id; got '
                      f'{coordinator_address!r}, {num_processes!r}, {process_id!r}')
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise UserError(f'--process_id={process_id} must lie in [0, --num_processes='
                      f'{num_processes})')
    logging.info('joining %d processes as process %d (coordinator %s)', num_processes,
                 process_id, coordinator_address)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
    return True
  cluster = detected_cluster()
  if cluster is None:
    return False
  logging.info('detected %s: initialising jax.distributed from it', cluster)
  jax.distributed.initialize()
  return True


def make_mesh() -> Mesh:
  """A 1-D mesh over all global devices.

  The axis type is given explicitly as Auto: the model code carries no sharding
  annotations, and with a replicated state and a batch-sharded input, XLA's
  propagation gives plain data parallelism and inserts the cross-device
  reductions. (Explicit axes would type every intermediate; the per-example
  augmentation's vmap then mixes batch-sharded images with replicated offsets,
  which Explicit mode refuses without annotations in the model code.)
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str) -> None:
  """Refuses a global batch size the devices cannot split evenly."""
  n = mesh.devices.size
  if batch_size % n:
    raise UserError(f'{what}={batch_size} is not divisible by the {n} devices: '
                    f'use a multiple of {n}')


def process_rows(global_rows: int, mesh: Mesh) -> np.ndarray:
  """The rows of a data-sharded global batch that this process's devices hold.

  Read from the sharding rather than assumed from the process index, so any
  device order of the mesh works: the rows are the process's shards in
  increasing order, which is the layout `jax.make_array_from_process_local_data`
  expects of the local data (on `jax.make_mesh` meshes, one contiguous range).
  """
  if jax.process_count() == 1:
    return np.arange(global_rows)
  index_map = data_sharded(mesh).addressable_devices_indices_map((global_rows,))
  blocks = sorted({(idx[0].start or 0, global_rows if idx[0].stop is None else idx[0].stop)
                   for idx in index_map.values()})
  return np.concatenate([np.arange(start, stop) for start, stop in blocks])


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a host or device pytree replicated on every device of the mesh.

  Arrays already replicated on the mesh are kept (no copy). On several
  processes every process must pass the same values.
  """
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(sharding, x.ndim):
      return x
    if _is_key(x):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return jax.jit(lambda a: a, out_shardings=sharding)(x)
    host = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, host, host.shape)

  return jax.tree.map(put, tree)


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds a global batch from full host arrays that every process holds.

  Sharded along 'data'; replicated when the devices cannot split it (see
  `gather_batch`, which this is with the rows already in memory).
  """
  n = next(iter(batch.values())).shape[0]
  if jax.process_count() == 1:
    return jax.device_put(batch, replicated(mesh) if n % mesh.devices.size
                          else data_sharded(mesh))
  return gather_batch(n, lambda rows: {k: v[rows] for k, v in batch.items()}, mesh)


def gather_batch(global_rows: int, gather: Callable[[np.ndarray], dict[str, np.ndarray]],
                 mesh: Mesh) -> dict[str, jax.Array]:
  """Builds a global batch of `global_rows` rows, reading only this process's rows.

  Args:
    global_rows: rows of the global batch.
    gather: `gather(rows)` returns host arrays holding rows `rows` (positions in
      the global batch, an int array) of every field; a data pipeline reads only
      those.
    mesh: device mesh.

  Returns:
    The global batch: sharded along 'data', or replicated (every process then
    gathers all rows) when the devices cannot split `global_rows`, as for the
    last, partial batch of an epoch; every device then computes the whole small
    batch, which is the same function.
  """
  if global_rows % mesh.devices.size:
    return put_replicated(gather(np.arange(global_rows)), mesh)
  return put_local_batch(gather(process_rows(global_rows, mesh)), mesh, global_rows)


def put_local_batch(local: dict[str, np.ndarray], mesh: Mesh,
                    global_rows: int) -> dict[str, jax.Array]:
  """Builds a data-sharded global batch of `global_rows` rows from this process's rows.

  `local` holds exactly the rows `process_rows(global_rows, mesh)` of the global
  batch, so a data pipeline gathers only those.
  """
  sharding = data_sharded(mesh)
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v),
                                                    (global_rows,) + v.shape[1:])
          for k, v in local.items()}


def _leaf_sharding(x: Any, mesh: Mesh) -> NamedSharding:
  """The sharding a step argument enters with: its own when it lives on `mesh`."""
  if isinstance(x, jax.Array) and isinstance(x.sharding, NamedSharding) and (
      x.sharding.mesh == mesh):
    return x.sharding
  return replicated(mesh)


class _ShardedStep:
  """`fn(state, *args, **kwargs) -> (state, metrics)` jitted with explicit shardings.

  The state (argument 0) enters and leaves replicated and is donated; the
  metrics leave replicated. The other arguments enter as `put_batch` /
  `put_replicated` placed them (a full batch data-sharded, a partial one
  replicated; anything else replicated): one compiled program per placement.
  """

  def __init__(self, fn: Callable, mesh: Mesh, donate_state: bool):
    self._fn = fn
    self._mesh = mesh
    self._donate = (0,) if donate_state else ()
    self._jitted: dict[Any, Callable] = {}

  def _call(self, state, args, kwargs):
    return self._fn(state, *args, **kwargs)

  def __call__(self, state, *args, **kwargs):
    mesh = self._mesh
    if jax.process_count() > 1:
      # Host values (e.g. the step's rng key) become global replicated arrays.
      args, kwargs = jax.tree.map(
          lambda x: x if isinstance(x, jax.Array) and not x.is_fully_addressable
          else put_replicated(x, mesh), (args, kwargs))
    shardings = jax.tree.map(lambda x: _leaf_sharding(x, mesh), (args, kwargs))
    leaves, treedef = jax.tree.flatten(shardings)
    key = (treedef, tuple(leaves))
    fn = self._jitted.get(key)
    if fn is None:
      rep = replicated(mesh)
      fn = jit(self._call, mesh, in_shardings=(rep, *shardings), out_shardings=(rep, rep),
               donate_argnums=self._donate)
      self._jitted[key] = fn
    return fn(state, args, kwargs)


# ---------------------------------------------------------------------------
# XLA:CPU compiler options of the package's jitted programs.

# 'eigen': convolutions run in XLA:CPU's multi-threaded Eigen kernels (the
# package default); 'xla_default': XLA's own choice, which (jaxlib 0.10) hands
# individual convolutions to YNNPACK. Measured on a 2-core AVX-512 Xeon with
# benchmarks/profile_ops.py: YNNPACK keeps one core busy per convolution and a
# CIFAR ResNet-18 64→64 3×3 layer at batch 128 costs 113 / 124 / 348 ms (forward /
# input-grad / kernel-grad) there against 45 / 54 / 89 ms with Eigen; the whole
# DELETE step goes from 4.9 s to 2.8 s (benchmarks/results/cpu.md). Only CPU
# programs are affected.
CPU_CONVOLUTIONS = ('eigen', 'xla_default')
# YNNPACK fusion kinds kept with 'eigen': XLA's default set less individual
# convolutions (checked against XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
# -INDIVIDUAL_CONVOLUTION: the same compiled programs).
_YNN_WITHOUT_CONVOLUTION = 'LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT'
_cpu_convolutions = 'eigen'


def set_cpu_convolutions(mode: str) -> None:
  """Chooses the convolution kernels of programs jitted from now on (config.cpu_convolutions)."""
  global _cpu_convolutions
  if mode not in CPU_CONVOLUTIONS:
    raise UserError(f'config.cpu_convolutions must be one of {CPU_CONVOLUTIONS}, got '
                    f'{mode!r}')
  _cpu_convolutions = mode


def cpu_convolutions() -> str:
  return _cpu_convolutions


@functools.cache
def _options_accepted(options: tuple[tuple[str, str], ...]) -> bool:
  """Whether this jaxlib compiles with `options` (flags are experimental and move)."""
  try:
    cpu = jax.local_devices(backend='cpu')[0]  # addressable on every process
    jax.jit(lambda x: x + 1, compiler_options=dict(options)).lower(
        jax.ShapeDtypeStruct((1,), np.float32, sharding=jax.sharding.SingleDeviceSharding(
            cpu))).compile()
    return True
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('XLA:CPU does not accept %s (%s); convolutions use XLA\'s default '
                    'kernels (config.cpu_convolutions has no effect with this jaxlib).',
                    dict(options), str(e).split('\n')[0][:200])
    return False


def compiler_options(mesh: Optional[Mesh]) -> Optional[dict[str, str]]:
  """XLA compiler options for a program on `mesh` (None: XLA's defaults)."""
  devices = mesh.devices.flat if mesh is not None else jax.devices()
  if _cpu_convolutions != 'eigen' or next(iter(devices)).platform != 'cpu':
    return None
  options = (('xla_cpu_experimental_ynn_fusion_type', _YNN_WITHOUT_CONVOLUTION),)
  return dict(options) if _options_accepted(options) else None


def jit(fn: Callable, mesh: Optional[Mesh], **kwargs) -> Callable:
  """`jax.jit` with the package's compiler options for `mesh`'s platform."""
  return jax.jit(fn, compiler_options=compiler_options(mesh), **kwargs)


def jit_step(fn: Callable, mesh: Mesh, donate_state: bool = True) -> Callable:
  """jits `fn(state, *rest) -> (state, metrics)`: state replicated and donated."""
  return _ShardedStep(fn, mesh, donate_state)


def to_host(tree: Any) -> Any:
  """Fetches a (replicated or sharded) pytree to host numpy on every process."""

  def fetch(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(fetch, tree)


@functools.cache
def log_topology() -> None:
  logging.info('processes: %d (this is %d); devices: %d global, %d local (%s)',
               jax.process_count(), jax.process_index(), jax.device_count(),
               jax.local_device_count(), jax.devices()[0].platform)
