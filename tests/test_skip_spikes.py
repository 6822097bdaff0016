"""Tests for skip_spikes, against a NumPy reference of its rule."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import autoclip
from autoclip_optax import skip_spikes
from tests.autoclip_helpers import assert_bit_identical
from tests.autoclip_helpers import spiky_norms
from tests.autoclip_reference import skip_spikes_reference


def run_norms(tx, norms):
  """Feeds updates whose global norm is each of ``norms``."""
  update = jax.jit(tx.update)
  params = {'w': jnp.zeros(2)}
  state = tx.init(params)
  outputs, states = [], []
  for norm in norms:
    updates, state = update({'w': jnp.array([norm, 0.0])}, state, params)
    outputs.append(updates)
    states.append(state)
  return outputs, states


@pytest.mark.parametrize(
  'factor, percentile, max_history, min_history, max_consecutive_skips',
  [
    (6.0, 50.0, 1000, 20, 10),
    (3.0, 90.0, 16, 5, 3),
    (2.0, 10.0, 7, 0, 1),
  ],
)
def test_matches_numpy_reference(
  factor, percentile, max_history, min_history, max_consecutive_skips
):
  norms = spiky_norms(300, seed=max_history)
  tx = skip_spikes(
    optax.sgd(1.0),
    factor,
    percentile,
    max_history,
    min_history,
    max_consecutive_skips,
  )
  outputs, states = run_norms(tx, norms)
  reference = skip_spikes_reference(
    norms.astype(np.float64),
    factor,
    percentile,
    max_history,
    min_history,
    max_consecutive_skips,
  )
  skipped = np.array([step[0] for step in reference])
  assert 0 < skipped.sum() < 100
  np.testing.assert_allclose(
    [s.spike_threshold for s in states],
    [step[1] for step in reference],
    rtol=1e-6,
  )
  np.testing.assert_array_equal(
    [s.num_skipped for s in states], np.cumsum(skipped)
  )
  for output, norm, was_skipped in zip(outputs, norms, skipped):
    expected = 0.0 if was_skipped else -norm
    np.testing.assert_array_equal(output['w'], [expected, 0.0])


def test_skipped_step_leaves_the_inner_state_untouched():
  tx = skip_spikes(optax.adam(1e-2), factor=4.0, min_history=3)
  _, states = run_norms(tx, [1.0, 1.2, 0.9, 1.1, 500.0, 1.0])
  assert states[4].num_skipped == 1
  assert_bit_identical(states[3].inner_state, states[4].inner_state)
  assert int(optax.tree_utils.tree_get(states[5].inner_state, 'count')) == 5


@pytest.mark.parametrize('bad_value', [np.nan, np.inf, -np.inf])
def test_non_finite_updates_are_skipped_even_before_min_history(bad_value):
  tx = skip_spikes(optax.adam(1e-2), min_history=100)
  outputs, states = run_norms(tx, [1.0, bad_value, 2.0])
  np.testing.assert_array_equal(outputs[1]['w'], [0.0, 0.0])
  assert_bit_identical(states[0].inner_state, states[1].inner_state)
  assert states[2].count == 2 and states[2].num_skipped == 1


def test_zero_gradients_go_through_and_are_recorded():
  tx = skip_spikes(optax.sgd(1.0), factor=2.0, min_history=2)
  _, states = run_norms(tx, [0.0, 0.0, 0.0, 1.0])
  assert states[2].num_skipped == 0 and states[2].count == 3
  # Against a window of zeros, any non-zero norm is a spike.
  assert states[3].spike_threshold == 0.0 and states[3].num_skipped == 1


def test_a_lasting_change_of_scale_goes_through_after_the_give_up():
  tx = skip_spikes(
    optax.sgd(1.0),
    factor=3.0,
    max_history=10,
    min_history=5,
    max_consecutive_skips=3,
  )
  outputs, states = run_norms(tx, [1.0] * 10 + [100.0] * 20)
  skipped = [float(output['w'][0]) == 0.0 for output in outputs]
  assert skipped == [False] * 10 + [True] * 3 + [False] * 17
  assert states[-1].consecutive_spikes < 3  # The window caught up.


def test_composes_around_autoclip_and_adam():
  tx = skip_spikes(
    optax.chain(autoclip(10, 64), optax.adam(1e-3)), factor=5.0, min_history=10
  )
  norms = spiky_norms(120, seed=0)
  _, states = run_norms(tx, norms)
  autoclip_count = optax.tree_utils.tree_get(
    states[-1],
    'count',
    filtering=lambda path, _: path[-1].tuple_name == 'AutoClipState',
  )
  assert autoclip_count == states[-1].count
  assert states[-1].num_skipped > len(norms) // 20
  reference = skip_spikes_reference(
    norms.astype(np.float64), 5.0, 50.0, 1000, 10, 10
  )
  assert states[-1].num_skipped == sum(step[0] for step in reference)


@pytest.mark.parametrize(
  'argument, value, error',
  [
    ('factor', 0.0, ValueError),
    ('factor', np.nan, ValueError),
    ('factor', '2', TypeError),
    ('percentile', 101.0, ValueError),
    ('max_history', 0, ValueError),
    ('min_history', 2000, ValueError),
    ('max_consecutive_skips', 0, ValueError),
    ('max_consecutive_skips', 1.5, TypeError),
  ],
)
def test_bad_arguments_raise_naming_them(argument, value, error):
  with pytest.raises(error, match=argument):
    skip_spikes(optax.sgd(1.0), **{argument: value})


@pytest.mark.parametrize('factor, skipped', [(-1.0, 1), (0.0, 1), (np.nan, 0)])
def test_traced_factor_out_of_range_is_clamped(factor, skipped):
  tx = optax.inject_hyperparams(
    skip_spikes, static_args=('inner', 'max_history')
  )(optax.sgd(1.0), factor=1.0, min_history=1)
  params = {'w': jnp.zeros(1)}
  state = tx.init(params)
  state.hyperparams['factor'] = jnp.float32(factor)
  update = jax.jit(tx.update)
  for gradient in [1.0, 1.0, 0.0]:
    _, state = update({'w': jnp.array([gradient])}, state)
  # Clamped to the smallest float32 above 0, every norm above 0 is a spike
  # (a negative factor made a zero norm one too); NaN counts as +inf, and
  # nothing is.
  assert state.inner_state.num_skipped == skipped


def test_num_skipped_saturates_at_the_int32_maximum():
  tx = skip_spikes(optax.sgd(1.0))
  params = {'w': jnp.zeros(1)}
  state = tx.init(params)._replace(
    num_skipped=jnp.int32(np.iinfo(np.int32).max - 1)
  )
  for _ in range(3):
    _, state = jax.jit(tx.update)({'w': jnp.array([np.nan])}, state)
  assert state.num_skipped == np.iinfo(np.int32).max
