"""Data parallelism: one 1-D mesh ('data') over every device of every process.

State is replicated, batches are sharded along the batch axis, and `jax.jit`
inserts the reductions (gradient means, BatchNorm batch statistics), so a step
computes the same function on 1 CPU, 8 devices or a TPU pod. Each process feeds
only its own rows of a global batch (`jax.make_array_from_process_local_data`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from delete_jax.errors import UserError

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  """A 1-D mesh over all global devices.

  The axis type is Auto: the model code carries no sharding annotations, and
  with a replicated state and a batch-sharded input XLA's propagation gives plain
  data parallelism.
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


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a host or device pytree replicated on every device of the mesh."""
  sharding = replicated(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x), np.shape(x)),
      tree)


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Builds a global batch from full host arrays that every process holds.

  Each process contributes only its own rows. A batch whose size the devices
  cannot split (the last, partial batch of an epoch) is replicated instead: every
  device then computes the whole small batch, which is the same function.
  """
  n = next(iter(batch.values())).shape[0]
  if n % mesh.devices.size:
    return put_replicated(batch, mesh)
  sharding = data_sharded(mesh)
  if jax.process_count() == 1:
    return jax.device_put(batch, sharding)
  rows = n // jax.process_count()
  start = jax.process_index() * rows
  return {k: jax.make_array_from_process_local_data(sharding, v[start:start + rows], v.shape)
          for k, v in batch.items()}


def jit_step(fn: Callable, mesh: Mesh, donate_state: bool = True) -> Callable:
  """jits `fn(state, *rest) -> (state, metrics)` with replicated outputs."""
  out = (replicated(mesh), replicated(mesh))
  return jax.jit(fn, out_shardings=out, donate_argnums=(0,) if donate_state else ())


def to_host(tree: Any) -> Any:
  """Fetches a (replicated or sharded) pytree to host numpy on every process."""
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


@functools.cache
def log_topology() -> None:
  logging.info('processes: %d (this is %d); devices: %d global, %d local (%s)',
               jax.process_count(), jax.process_index(), jax.device_count(),
               jax.local_device_count(), jax.devices()[0].platform)
