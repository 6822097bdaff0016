"""Data parallelism over every device: one mesh axis, ``data``.

Each batch is split on the mesh's ``data`` axis, and the parameters and the
optimizer state, AutoClip's window included, are replicated, so the gradient
and AutoClip's threshold are those of the whole batch. On several hosts,
``jax.devices()`` lists every host's devices: one mesh spans them all, and
each process feeds its own devices' rows; ``sync_processes`` makes the
processes wait for each other where one writes what all read.
"""

from collections.abc import Sequence

from flax import nnx
import jax
from jax.experimental import multihost_utils
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np

# Rows of a batch: split over the devices of the mesh's 'data' axis.
BATCH = PartitionSpec('data')


def data_parallel_mesh(
  devices: Sequence[jax.Device] | None = None,
) -> jax.sharding.Mesh:
  """A one-axis mesh, ``data``, over ``devices`` (every device by default)."""
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh(
    (len(devices),), ('data',), axis_types=(AxisType.Auto,), devices=devices
  )


def replicate(mesh: jax.sharding.Mesh, *modules: nnx.Module) -> None:
  """Puts a copy of the modules' state on every device of ``mesh``.

  For a model and its optimizer: the parameters and the optimizer state,
  AutoClip's window included, the same on every device.
  """
  state = nnx.state(modules)
  nnx.update(
    modules, jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
  )


def shard_batch(mesh: jax.sharding.Mesh, local_rows):
  """The global batch whose rows on this process's devices are ``local_rows``.

  Args:
    mesh: a ``data_parallel_mesh``.
    local_rows: a pytree of NumPy arrays, this process's rows of the batch
      (the whole batch on one host).

  Returns:
    The same pytree of ``jax.Array``s, split over ``mesh``'s ``data`` axis.
  """
  sharding = NamedSharding(mesh, BATCH)
  return jax.tree.map(
    lambda rows: jax.make_array_from_process_local_data(sharding, rows),
    local_rows,
  )


def process_rows(mesh: jax.sharding.Mesh, batch: jax.Array) -> np.ndarray:
  """The rows of ``batch`` on this process's devices, as one NumPy array."""
  return np.asarray(
    multihost_utils.global_array_to_host_local_array(batch, mesh, BATCH)
  )


def sync_processes(name: str) -> None:
  """Waits until every process of a multi-host run has called this.

  Args:
    name: the same in every process, for the error if they disagree.
  """
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
