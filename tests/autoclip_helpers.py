"""Update sequences, runners and assertions that the library's tests share.

Compiling a transform's update takes about a second on CPU, and running one
a hundredth of that: :func:`run_autoclip` therefore compiles one update per
window size, grouping and way of summing, with the percentile and the
warm-up passed in as traced values (as under ``optax.inject_hyperparams``),
and every test that runs that configuration reuses it.
"""

import functools

import jax
import numpy as np

from autoclip_optax import _window
from autoclip_optax import autoclip
from tests.autoclip_reference import assert_ranks_match


def spiky_updates(num_steps, seed=0):
  """Random gradient-like dicts whose norms have occasional large spikes."""
  rng = np.random.default_rng(seed)
  sequence = []
  for _ in range(num_steps):
    scale = rng.lognormal(0.0, 0.5) * (100.0 if rng.random() < 0.05 else 1.0)
    sequence.append(
      {
        'w': (scale * rng.normal(size=(4, 3))).astype(np.float32),
        'b': (scale * rng.normal(size=(3,))).astype(np.float32),
      }
    )
  return sequence


# Leaf names sort as jax.tree.leaves orders a dict: 'b', 'w_0', 'w_1'.
LEAF_NAMES = ('b', 'w_0', 'w_1')
SHAPES = {'b': (3,), 'w_0': (4, 3), 'w_1': (5,)}
BAD_STEPS = (3, 17, 18)


def grouped_spiky_updates(num_steps, seed=0):
  """Dicts of three leaves, each with its own scale and its own spikes."""
  rng = np.random.default_rng(seed)
  sequence = []
  for _ in range(num_steps):
    updates = {}
    for index, name in enumerate(LEAF_NAMES):
      spike = 100.0 if rng.random() < 0.05 else 1.0
      scale = 10.0**index * rng.lognormal(0.0, 0.5) * spike
      updates[name] = (scale * rng.normal(size=SHAPES[name])).astype(np.float32)
    sequence.append(updates)
  return sequence


def with_bad_bias(sequence, bad_bias):
  """``sequence`` with the bias ``'b'`` replaced at ``BAD_STEPS``."""
  return [
    dict(updates, b=bad_bias) if step in BAD_STEPS else updates
    for step, updates in enumerate(sequence)
  ]


def spiky_norms(num_steps, seed):
  """Lognormal norms with spikes, bursts of spikes, zeros, NaN and inf."""
  rng = np.random.default_rng(seed)
  norms = rng.lognormal(0.0, 0.3, num_steps).astype(np.float32)
  for step in rng.choice(num_steps, num_steps // 10, replace=False):
    norms[step] *= 50
  burst = rng.integers(num_steps - 10)
  norms[burst : burst + 6] *= 1000
  norms[rng.choice(num_steps, 6, replace=False)] = [
    0.0,
    0.0,
    np.nan,
    np.inf,
    np.nan,
    np.inf,
  ]
  return norms


def run(tx, update_sequence):
  """Applies ``tx`` to each update under one jit; returns outputs and states."""
  update = jax.jit(tx.update)
  state = tx.init(update_sequence[0])
  outputs, states = [], []
  for updates in update_sequence:
    clipped, state = update(updates, state)
    outputs.append(clipped)
    states.append(state)
  return outputs, states


@functools.cache
def _traced_autoclip_update(max_history, group_by, sum_terms):
  """One jitted autoclip update per configuration; see the module docstring.

  ``sum_terms`` is ``_window.sum_terms`` when the update is traced: a test
  that swaps in another way of summing gets an update of its own.
  """
  del sum_terms  # Part of the cache's key only.

  def update(updates, state, percentile, min_history):
    tx = autoclip(percentile, max_history, group_by, min_history)
    return tx.update(updates, state)

  return jax.jit(update)


def run_autoclip(
  update_sequence, percentile, max_history, group_by=None, min_history=0
):
  """``run(autoclip(...), update_sequence)``, with a shared compiled update.

  The arguments are :func:`autoclip_optax.autoclip`'s, checked by it as
  they would be; ``group_by`` must be hashable.
  """
  tx = autoclip(percentile, max_history, group_by, min_history)
  update = _traced_autoclip_update(max_history, group_by, _window.sum_terms)
  percentile, min_history = float(percentile), np.int32(min_history)
  state = tx.init(update_sequence[0])
  outputs, states = [], []
  for updates in update_sequence:
    clipped, state = update(updates, state, percentile, min_history)
    outputs.append(clipped)
    states.append(state)
  return outputs, states


def _assert_steps_match(outputs, states, reference):
  """The norms, thresholds and outputs of every step at once."""
  expected, norms, thresholds, _ = zip(*reference)
  np.testing.assert_allclose([s.grad_norm for s in states], norms, rtol=1e-6)
  np.testing.assert_allclose(
    [s.threshold for s in states], thresholds, rtol=1e-5
  )
  for name in expected[0]:
    np.testing.assert_allclose(
      [output[name] for output in outputs],
      [step[name] for step in expected],
      rtol=1e-5,
      atol=1e-6,
    )


def assert_matches_reference(outputs, states, reference):
  """Asserts that a run's outputs and states are the NumPy reference's."""
  outputs, states = jax.device_get((outputs, states))
  _assert_steps_match(outputs, states, reference)
  for state, (_, _, _, window) in zip(states, reference):
    assert int(state.count) >= len(window)
    recorded = np.sort(state.history[np.isfinite(state.history)])
    np.testing.assert_allclose(recorded, np.sort(window), rtol=1e-6)
    assert_ranks_match(
      state.history, state.ranks, state.newest_rank, state.next_slot
    )


def assert_matches_grouped_reference(outputs, states, reference):
  """Asserts that a grouped run's outputs and states are the reference's."""
  outputs, states = jax.device_get((outputs, states))
  _assert_steps_match(outputs, states, reference)
  for state, (_, _, _, windows) in zip(states, reference):
    for group, window in enumerate(windows):
      history = state.history[group]
      np.testing.assert_allclose(
        np.sort(history[np.isfinite(history)]), np.sort(window), rtol=1e-6
      )
      assert_ranks_match(
        history,
        state.ranks[group],
        state.newest_rank[group],
        state.next_slot[group],
      )


def assert_bit_identical(first, second):
  """Asserts that two pytrees of arrays hold the same bits."""
  first, second = jax.device_get((first, second))
  assert jax.tree.structure(first) == jax.tree.structure(second)
  layouts, contents = [], []
  for tree in (first, second):
    leaves = [np.atleast_1d(leaf) for leaf in jax.tree.leaves(tree)]
    layouts.append([(leaf.dtype, leaf.shape) for leaf in leaves])
    # All the leaves' bytes at once: one comparison, not one per leaf.
    contents.append(
      np.concatenate([leaf.view(np.uint8).ravel() for leaf in leaves] or [[]])
    )
  assert layouts[0] == layouts[1]
  np.testing.assert_array_equal(contents[0], contents[1])
