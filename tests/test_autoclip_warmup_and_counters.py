"""Tests for autoclip's warm-up (min_history) and its counters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import autoclip
from tests.autoclip_helpers import BAD_STEPS
from tests.autoclip_helpers import assert_matches_reference
from tests.autoclip_helpers import grouped_spiky_updates
from tests.autoclip_helpers import run
from tests.autoclip_helpers import run_autoclip
from tests.autoclip_helpers import spiky_updates
from tests.autoclip_helpers import with_bad_bias
from tests.autoclip_reference import autoclip_reference


def with_nan_steps(sequence, steps):
  return [
    {name: np.full_like(leaf, np.nan) for name, leaf in updates.items()}
    if step in steps
    else updates
    for step, updates in enumerate(sequence)
  ]


@pytest.mark.parametrize(
  'min_history, max_history',
  [(0, 8), (1, 8), (5, 8), (8, 8), (0, 100), (5, 100), (30, 100)],
)
def test_warm_up_matches_numpy_reference(min_history, max_history):
  sequence = with_nan_steps(spiky_updates(60, seed=min_history), {2, 7})
  outputs, states = run_autoclip(
    sequence, 10, max_history, min_history=min_history
  )
  reference = autoclip_reference(sequence, [10] * 60, max_history, min_history)
  finite = [step for step in range(60) if step not in (2, 7)]
  assert_matches_reference(
    [outputs[s] for s in finite],
    [states[s] for s in finite],
    [reference[s] for s in finite],
  )


def test_nothing_is_clipped_during_warm_up_but_norms_are_recorded():
  sequence = spiky_updates(12)
  outputs, states = run_autoclip(sequence, 0, 16, min_history=10)
  for step in range(9):
    assert states[step].threshold == np.inf
    assert states[step].count == step + 1
    np.testing.assert_array_equal(outputs[step]['w'], sequence[step]['w'])
  assert states[9].threshold == np.min([s.grad_norm for s in states[:10]])


def test_warm_up_under_inject_hyperparams_can_change():
  sequence = spiky_updates(20)
  tx = optax.inject_hyperparams(autoclip, static_args=('max_history',))(
    percentile=0.0, max_history=16, min_history=15
  )
  _, states = run(tx, sequence)
  assert all(s.inner_state.threshold == np.inf for s in states[:14])
  assert states[14].inner_state.threshold < np.inf


@pytest.mark.parametrize('min_history', [-1, 9])
def test_out_of_range_min_history_raises(min_history):
  with pytest.raises(ValueError, match=r'min_history must be in \[0, 8\]'):
    autoclip(10, max_history=8, min_history=min_history)


@pytest.mark.parametrize('min_history', [2.0, True, '3'])
def test_non_int_min_history_raises(min_history):
  with pytest.raises(TypeError, match='min_history must be an int'):
    autoclip(10, max_history=8, min_history=min_history)


@pytest.mark.parametrize('percentile', [0, 10, 50, 100])
def test_counters_match_numpy_reference(percentile):
  sequence = with_nan_steps(spiky_updates(80), {3, 40, 41})
  sequence[50] = dict(sequence[50], b=np.array([np.inf, 0, 0], np.float32))
  _, states = run_autoclip(sequence, percentile, 16, min_history=4)
  reference = autoclip_reference(sequence, [percentile] * 80, 16, 4)
  norms = np.array([step[1] for step in reference])
  thresholds = np.array([step[2] for step in reference])
  with np.errstate(invalid='ignore'):
    clipped = np.isfinite(norms) & (norms > thresholds)
  np.testing.assert_array_equal(
    [s.num_clipped for s in states], np.cumsum(clipped)
  )
  np.testing.assert_array_equal(
    [s.num_nonfinite for s in states], np.cumsum(~np.isfinite(norms))
  )


def test_clip_rate_at_p10_is_about_ninety_percent():
  rng = np.random.default_rng(0)
  sequence = [{'w': np.float32([rng.lognormal()])} for _ in range(2000)]
  _, states = run_autoclip(sequence, 10, 2000)
  rate = states[-1].num_clipped / states[-1].count
  assert 0.87 < rate < 0.93


def test_counters_are_per_group():
  sequence = with_bad_bias(
    grouped_spiky_updates(40), np.array([np.nan, 0, 0], np.float32)
  )
  _, states = run_autoclip(sequence, 50, 8, group_by='leaf')
  np.testing.assert_array_equal(
    states[-1].num_nonfinite, [len(BAD_STEPS), 0, 0]
  )
  assert states[-1].num_clipped.shape == (3,)
  assert np.all(states[-1].num_clipped > 0)
  assert np.all(states[-1].num_clipped < 40)


def test_counters_are_readable_with_tree_get_in_a_chain():
  tx = optax.chain(autoclip(0, 8), optax.adam(1e-3))
  params = {'w': jnp.zeros(2)}
  state = tx.init(params)
  update = jax.jit(tx.update)
  for value in (1.0, 2.0, jnp.nan, 3.0):
    _, state = update({'w': jnp.array([value, 0.0])}, state, params)
  assert optax.tree_utils.tree_get(state, 'num_clipped') == 2
  assert optax.tree_utils.tree_get(state, 'num_nonfinite') == 1
