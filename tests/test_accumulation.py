"""AutoClip under gradient accumulation: one norm per real update."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import AutoClipState
from autoclip_optax import autoclip
from autoclip_optax import recorded_norms
from autoclip_optax import skip_spikes
from tests.autoclip_helpers import spiky_norms
from tests.autoclip_reference import global_norm
from tests.autoclip_reference import skip_spikes_reference

EVERY_K = 4


def micro_batch_grads(norms, seed=0):
  """Gradients of two leaves whose global norm is each of ``norms``."""
  rng = np.random.default_rng(seed)
  grads = []
  for norm in norms:
    direction = rng.normal(size=5).astype(np.float32)
    direction /= np.linalg.norm(direction)
    grads.append({'a': norm * direction[:2], 'b': norm * direction[2:]})
  return grads


def autoclip_state(state):
  """The one AutoClipState inside an optimizer state."""
  (found,) = [
    node
    for node in jax.tree.leaves(
      state, is_leaf=lambda node: isinstance(node, AutoClipState)
    )
    if isinstance(node, AutoClipState)
  ]
  return found


def run(tx, grads):
  params = jax.tree.map(jnp.zeros_like, grads[0])
  update = jax.jit(tx.update)
  state = tx.init(params)
  for grad in grads:
    _, state = update(grad, state, params)
  return state


def accumulated_norms(grads):
  """The norm of each mean of EVERY_K consecutive micro-batch gradients."""
  return [
    global_norm(
      {
        name: np.mean([g[name] for g in grads[i : i + EVERY_K]], axis=0)
        for name in grads[0]
      }
    )
    for i in range(0, len(grads) - EVERY_K + 1, EVERY_K)
  ]


def test_one_norm_per_real_update_under_multi_steps():
  grads = micro_batch_grads(np.random.default_rng(1).lognormal(size=40))
  tx = optax.MultiSteps(
    optax.chain(autoclip(10, 100), optax.adam(1e-3)), every_k_schedule=EVERY_K
  )
  state = autoclip_state(run(tx.gradient_transformation(), grads))
  assert state.count == 40 // EVERY_K
  np.testing.assert_allclose(
    recorded_norms(state), accumulated_norms(grads), rtol=1e-5
  )


@pytest.mark.parametrize('max_consecutive_skips', [1, 10])
def test_skip_spikes_outside_multi_steps_drops_spiky_micro_batches(
  max_consecutive_skips,
):
  norms = spiky_norms(200, seed=3)
  grads = micro_batch_grads(norms)
  tx = skip_spikes(
    optax.MultiSteps(
      optax.chain(autoclip(10, 100), optax.adam(1e-3)), every_k_schedule=EVERY_K
    ).gradient_transformation(),
    factor=5.0,
    min_history=10,
    max_consecutive_skips=max_consecutive_skips,
  )
  state = run(tx, grads)
  skipped = [
    step[0]
    for step in skip_spikes_reference(
      norms.astype(np.float64), 5.0, 50.0, 1000, 10, max_consecutive_skips
    )
  ]
  kept = [grad for grad, was_skipped in zip(grads, skipped) if not was_skipped]
  assert state.num_skipped == sum(skipped) > 0
  inner = autoclip_state(state)
  assert inner.count == len(kept) // EVERY_K
  np.testing.assert_allclose(
    recorded_norms(inner), accumulated_norms(kept), rtol=1e-5
  )
