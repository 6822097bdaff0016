"""Trains a small model with autoclip as one of several JAX processes.

Started by test_multiprocess.py, as 2 processes of 2 host devices each
(JAX's multi-controller runtime, gloo collectives on CPU) or as 1 process of
4 devices. The parameters and the batch are sharded over all 4 devices; each
process feeds its own rows of every batch. Trains each of the VARIANTS
(comma-separated) in turn, in one start of the processes, and writes, per
process and variant, the global parameters, updates and optimizer state
after every step to ``OUT_DIR/<variant>.npz``.

Usage: python -m tests.multiprocess_child VARIANTS OUT_DIR NUM_PROCESSES
  PROCESS_ID COORDINATOR_ADDRESS
"""

import pathlib
import sys

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
import numpy as np
import optax

from autoclip_optax import autoclip
from autoclip_optax import skip_spikes

NUM_DEVICES = 4
NUM_STEPS = 60
BATCH_SIZE = 16
NUM_FEATURES = 8


def optimizer(variant: str) -> optax.GradientTransformation:
  clipped_adam = lambda **kwargs: optax.chain(
    autoclip(10, 32, **kwargs), optax.adam(1e-2)
  )
  return {
    'global': clipped_adam,
    'leaf': lambda: clipped_adam(group_by='leaf'),
    'skip_spikes': lambda: skip_spikes(clipped_adam(), min_history=5),
  }[variant]()


def global_batch(step: int) -> tuple[np.ndarray, np.ndarray]:
  """The same batch in every process; one step in 8 has a spike."""
  rng = np.random.default_rng(step)
  inputs = rng.normal(size=(BATCH_SIZE, NUM_FEATURES)).astype(np.float32)
  scale = 30.0 if step % 8 == 7 else 1.0
  targets = scale * rng.normal(size=(BATCH_SIZE, 4)).astype(np.float32)
  return inputs, targets


def join_processes(num_processes, process_id, coordinator_address):
  """Joins the job's other processes on this machine, through gloo."""
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
    )


def main(variants, out_dir, num_processes, process_id, coordinator_address):
  join_processes(num_processes, process_id, coordinator_address)
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  mesh = jax.make_mesh((NUM_DEVICES,), ('data',))
  with jax.set_mesh(mesh):
    for variant in variants.split(','):
      out = pathlib.Path(out_dir) / f'{variant}.npz'
      train(variant, out, num_processes, process_id, mesh)


def train(variant, out, num_processes, process_id, mesh):
  """Trains for ``NUM_STEPS`` and writes the record; see the docstring."""
  rows = NamedSharding(mesh, PartitionSpec('data'))
  replicated = NamedSharding(mesh, PartitionSpec())
  param_shardings = {'w': rows, 'b': replicated}
  params = jax.jit(
    lambda: {
      'w': jnp.linspace(-1.0, 1.0, NUM_FEATURES * 4, dtype=jnp.float32).reshape(
        NUM_FEATURES, 4
      ),
      'b': jnp.zeros((4,), jnp.float32),
    },
    out_shardings=param_shardings,
  )()
  tx = optimizer(variant)
  state = jax.jit(tx.init)(params)

  @jax.jit
  def train_step(params, state, inputs, targets):
    def loss(params):
      predictions = inputs @ params['w'] + params['b']
      return jnp.mean((predictions - targets) ** 2)

    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    # A copy of the step's arrays whole on every device, for the record.
    record = jax.sharding.reshard(
      {'params': params, 'updates': updates, 'state': state}, PartitionSpec()
    )
    return params, state, record

  local_rows = slice(
    process_id * BATCH_SIZE // num_processes,
    (process_id + 1) * BATCH_SIZE // num_processes,
  )
  record = {}
  for step in range(NUM_STEPS):
    inputs, targets = (
      multihost_utils.host_local_array_to_global_array(
        array[local_rows], mesh, PartitionSpec('data')
      )
      for array in global_batch(step)
    )
    params, state, step_record = train_step(params, state, inputs, targets)
    for path, value in jax.tree_util.tree_leaves_with_path(step_record):
      record.setdefault(jax.tree_util.keystr(path), []).append(
        np.asarray(value.addressable_data(0))
      )
  np.savez(out, **{name: np.stack(values) for name, values in record.items()})


if __name__ == '__main__':
  main(
    sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
  )
