"""Runs autoclip on 8 forced host devices; started by test_multidevice.py.

Usage: python -m tests.multidevice_child MODE... (auto_mesh, explicit_mesh,
pmap). Checks each mode in turn, in one start of JAX, and prints a line
``<mode> ok`` for each that matches the reference; a mode that does not
prints its assertion instead, and the exit status is then non-zero.
"""

import sys
import traceback

import jax
import numpy as np
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from autoclip_optax import autoclip
from tests.autoclip_reference import autoclip_reference

NUM_DEVICES = 8
NUM_STEPS = 30
PERCENTILE = 10.0
MAX_HISTORY = 12


def spiky_gradients(rng, leading=()):
  scale = rng.lognormal(0.0, 0.5) * (50.0 if rng.random() < 0.1 else 1.0)
  return {
    'w': (scale * rng.normal(size=leading + (64, 16))).astype(np.float32),
    'b': (scale * rng.normal(size=leading + (16,))).astype(np.float32),
  }


def check_sharded_mesh(axis_type):
  mesh = jax.make_mesh((NUM_DEVICES,), ('data',), axis_types=(axis_type,))
  with jax.set_mesh(mesh):
    run_sharded(mesh)


def run_sharded(mesh):
  shardings = {
    'w': NamedSharding(mesh, PartitionSpec('data', None)),
    'b': NamedSharding(mesh, PartitionSpec()),
  }
  tx = autoclip(PERCENTILE, MAX_HISTORY)
  rng = np.random.default_rng(0)
  sequence = [spiky_gradients(rng) for _ in range(NUM_STEPS)]
  state = jax.jit(tx.init)(jax.device_put(sequence[0], shardings))
  update = jax.jit(tx.update)
  reference = autoclip_reference(
    sequence, [PERCENTILE] * NUM_STEPS, MAX_HISTORY
  )
  for grads, (expected, _, threshold, _) in zip(sequence, reference):
    sharded = jax.device_put(grads, shardings)
    clipped, state = update(sharded, state)
    assert clipped['w'].sharding.is_equivalent_to(shardings['w'], 2)
    np.testing.assert_allclose(state.threshold, threshold, rtol=1e-5)
    for name in grads:
      np.testing.assert_allclose(
        clipped[name], expected[name], rtol=1e-5, atol=1e-6
      )


def check_pmap_after_pmean():
  tx = autoclip(PERCENTILE, MAX_HISTORY)

  def step(per_device_grads, state):
    grads = jax.lax.pmean(per_device_grads, axis_name='devices')
    return tx.update(grads, state)

  parallel_step = jax.pmap(step, axis_name='devices')
  rng = np.random.default_rng(1)
  sequence = [spiky_gradients(rng, (NUM_DEVICES,)) for _ in range(NUM_STEPS)]
  state = jax.pmap(tx.init)(sequence[0])
  mean_sequence = [
    jax.tree.map(lambda x: x.mean(axis=0), grads) for grads in sequence
  ]
  reference = autoclip_reference(
    mean_sequence, [PERCENTILE] * NUM_STEPS, MAX_HISTORY
  )
  for grads, (expected, _, threshold, _) in zip(sequence, reference):
    clipped, state = parallel_step(grads, state)
    np.testing.assert_allclose(
      state.threshold, [threshold] * NUM_DEVICES, rtol=1e-5
    )
    for name in grads:
      np.testing.assert_allclose(
        clipped[name],
        np.broadcast_to(expected[name], clipped[name].shape),
        rtol=1e-5,
        atol=1e-6,
      )


CHECKS = {
  'auto_mesh': lambda: check_sharded_mesh(AxisType.Auto),
  'explicit_mesh': lambda: check_sharded_mesh(AxisType.Explicit),
  'pmap': check_pmap_after_pmean,
}

if __name__ == '__main__':
  assert jax.device_count() == NUM_DEVICES, jax.devices()
  failed = False
  for mode in sys.argv[1:]:
    try:
      CHECKS[mode]()
    except Exception:  # Reported, and the other modes still checked.
      traceback.print_exc(file=sys.stdout)
      failed = True
    else:
      print(f'{mode} ok', flush=True)
  sys.exit(1 if failed else 0)
