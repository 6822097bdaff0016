"""Tests for the autoclip transform, against the NumPy reference."""

import functools

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import AutoClipState
from autoclip_optax import autoclip
from autoclip_optax import with_history
from tests.autoclip_helpers import assert_matches_reference
from tests.autoclip_helpers import run
from tests.autoclip_helpers import run_autoclip
from tests.autoclip_helpers import spiky_updates
from tests.autoclip_reference import assert_ranks_match
from tests.autoclip_reference import autoclip_reference


@pytest.mark.parametrize('percentile', [0, 1, 10, 50, 90, 100, 2.5, 33.3])
@pytest.mark.parametrize('max_history', [1, 7, 1000])
def test_matches_numpy_reference(percentile, max_history):
  sequence = spiky_updates(120, seed=max_history)
  outputs, states = run_autoclip(sequence, percentile, max_history)
  reference = autoclip_reference(
    sequence, [percentile] * len(sequence), max_history
  )
  assert_matches_reference(outputs, states, reference)


def test_count_is_finite_norms_recorded():
  sequence = spiky_updates(30)
  sequence[4] = {
    'w': np.full((4, 3), np.nan, np.float32),
    'b': np.zeros(3, np.float32),
  }
  _, states = run_autoclip(sequence, 10, max_history=8)
  assert [int(s.count) for s in states] == list(range(1, 5)) + list(
    range(4, 30)
  )


def test_no_clipping_before_a_finite_norm_is_recorded():
  tx = autoclip(0.0, max_history=4)
  state = tx.init({'w': jnp.zeros(2)})
  assert state.threshold == jnp.inf
  nan_updates = {'w': jnp.array([jnp.nan, 1.0])}
  output, state = jax.jit(tx.update)(nan_updates, state)
  assert state.threshold == jnp.inf and state.count == 0
  np.testing.assert_array_equal(output['w'], nan_updates['w'])
  output, state = jax.jit(tx.update)({'w': jnp.array([3.0, 4.0])}, state)
  np.testing.assert_array_equal(output['w'], [3.0, 4.0])
  assert state.threshold == 5.0


@pytest.mark.parametrize('bad_value', [np.nan, np.inf, -np.inf])
def test_non_finite_gradient_is_not_recorded(bad_value):
  sequence = spiky_updates(40)
  for step in (3, 17, 18):
    sequence[step] = dict(sequence[step])
    sequence[step]['b'] = np.array([1.0, bad_value, 2.0], np.float32)
  outputs, states = run_autoclip(sequence, 10, max_history=16)
  reference = autoclip_reference(sequence, [10] * 40, 16)
  for step in (3, 17, 18):
    assert not np.isfinite(states[step].grad_norm)
    np.testing.assert_array_equal(
      states[step].history, states[step - 1].history
    )
  finite_steps = [s for s in range(40) if s not in (3, 17, 18)]
  assert_matches_reference(
    [outputs[s] for s in finite_steps],
    [states[s] for s in finite_steps],
    [reference[s] for s in finite_steps],
  )


def test_zero_threshold_gives_zero_updates_not_nan():
  tx = autoclip(0.0, max_history=8)
  update = jax.jit(tx.update)
  state = tx.init({'w': jnp.zeros(3)})
  _, state = update({'w': jnp.zeros(3)}, state)
  output, state = update({'w': jnp.array([1.0, -2.0, 3.0])}, state)
  assert state.threshold == 0.0
  np.testing.assert_array_equal(output['w'], np.zeros(3))


@pytest.mark.parametrize('dtype', [jnp.bfloat16, jnp.float16, jnp.float32])
def test_low_precision_leaves_keep_dtype_and_get_a_float32_norm(dtype):
  # Each square (4e4) and their sum overflow float16; the norm must not.
  updates = {'w': jnp.full((1000,), 200.0, dtype), 'b': jnp.ones(3, dtype)}
  tx = autoclip(50, max_history=4)
  update = jax.jit(tx.update)
  state = tx.init(updates)
  _, state = update(updates, state)
  output, state = update(jax.tree.map(lambda x: x * 4, updates), state)
  expected_norm = np.sqrt(1000 * 200.0**2 + 3)
  np.testing.assert_allclose(state.history[0], expected_norm, rtol=1e-6)
  assert state.grad_norm.dtype == jnp.float32
  for name in updates:
    assert output[name].dtype == dtype
  np.testing.assert_allclose(
    np.asarray(output['w'], np.float32), 200.0 * 4 * (2.5 / 4), rtol=1e-2
  )


@pytest.mark.parametrize('percentile', [-0.5, 100.01, np.nan, 1e9])
def test_invalid_percentile_raises(percentile):
  with pytest.raises(ValueError, match=r'percentile must be in \[0, 100\]'):
    autoclip(percentile)


@pytest.mark.parametrize(
  'percentile', ['10', None, [10.0], True, np.array([10.0]), np.array(1j)]
)
def test_non_numeric_percentile_raises(percentile):
  with pytest.raises(TypeError, match='percentile must be a real number'):
    autoclip(percentile)


@pytest.mark.parametrize('max_history', [2.0, True, '100', None])
def test_non_int_max_history_raises(max_history):
  with pytest.raises(TypeError, match='max_history must be an int'):
    autoclip(10, max_history=max_history)


@pytest.mark.parametrize('max_history', [0, -1, 2**24 + 1])
def test_out_of_range_max_history_raises(max_history):
  with pytest.raises(
    ValueError, match=r'max_history must be in \[1, 16777216\]'
  ):
    autoclip(10, max_history=max_history)


@pytest.mark.parametrize(
  'percentile',
  [np.float32(10), np.array(10.0), jnp.asarray(10.0), np.int64(10)],
)
def test_numpy_and_jax_scalar_percentiles_are_accepted(percentile):
  tx = autoclip(percentile, max_history=4)
  _, state = tx.update({'w': jnp.ones(2)}, tx.init({'w': jnp.ones(2)}))
  assert state.count == 1


def test_state_is_arrays_only_with_documented_dtypes():
  state = autoclip(10, max_history=5).init({'w': jnp.zeros(2)})
  assert isinstance(state, AutoClipState)
  assert all(isinstance(leaf, jax.Array) for leaf in state)
  assert state.count.dtype == jnp.int32
  assert state.history.shape == state.ranks.shape == (5,)
  assert state.ranks.dtype == jnp.int32


def test_fields_are_readable_with_tree_get_in_a_chain():
  tx = optax.chain(autoclip(10, max_history=5), optax.adam(1e-3))
  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  _, state = tx.update({'w': jnp.array([1.0, 2.0, 2.0])}, state, params)
  assert optax.tree_utils.tree_get(state, 'threshold') == 3.0
  assert optax.tree_utils.tree_get(state, 'grad_norm') == 3.0
  # Adam has a `count` too: pick AutoClip's by its tuple name.
  count = optax.tree_utils.tree_get(
    state,
    'count',
    filtering=lambda path, _: path[-1].tuple_name == 'AutoClipState',
  )
  assert count == 1


def test_compiles_once_for_a_whole_run():
  tx = optax.chain(autoclip(10, max_history=5), optax.sgd(0.1))
  traces = []

  @jax.jit
  def train_step(params, state, grads):
    traces.append(None)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  params = {'w': jnp.ones(3)}
  state = tx.init(params)
  for step in range(17):  # Fills the window, then wraps around it twice.
    grads = {'w': jnp.full(3, float(step % 4))}
    params, state = train_step(params, state, grads)
  assert len(traces) == 1


def test_state_can_be_donated():
  tx = autoclip(10, max_history=64)
  update = jax.jit(tx.update, donate_argnums=1)
  state = jax.jit(tx.init)({'w': jnp.zeros(3)})
  for step in range(5):
    _, state = update({'w': jnp.full(3, step + 1.0)}, state)
  assert state.count == 5


def test_inject_hyperparams_changes_percentile_during_training():
  sequence = spiky_updates(60)
  tx = optax.inject_hyperparams(autoclip, static_args=('max_history',))(
    percentile=10.0, max_history=20
  )
  update = jax.jit(tx.update)
  state = tx.init(sequence[0])
  percentiles = [10.0] * 30 + [90.0] * 30
  thresholds = []
  for updates, percentile in zip(sequence, percentiles):
    state.hyperparams['percentile'] = jnp.asarray(percentile)
    _, state = update(updates, state)
    thresholds.append(float(state.inner_state.threshold))
  reference = autoclip_reference(sequence, percentiles, 20)
  np.testing.assert_allclose(thresholds, [r[2] for r in reference], rtol=1e-5)


def test_inject_hyperparams_follows_a_schedule():
  sequence = spiky_updates(40)
  schedule = optax.linear_schedule(0.0, 100.0, transition_steps=39)
  tx = optax.inject_hyperparams(autoclip, static_args=('max_history',))(
    percentile=schedule, max_history=10
  )
  outputs, states = run(tx, sequence)
  reference = autoclip_reference(
    sequence, [float(schedule(step)) for step in range(40)], 10
  )
  np.testing.assert_allclose(
    [s.inner_state.threshold for s in states],
    [r[2] for r in reference],
    rtol=1e-5,
  )


def test_checkpoint_round_trip_continues_bit_identically():
  sequence = spiky_updates(50)
  tx = optax.chain(autoclip(10, max_history=16), optax.adam(1e-2))
  update = jax.jit(tx.update)
  params = {name: jnp.zeros_like(leaf) for name, leaf in sequence[0].items()}
  state = tx.init(params)
  for updates in sequence[:25]:
    _, state = update(updates, state, params)
  restored = flax.serialization.from_bytes(
    tx.init(params), flax.serialization.to_bytes(state)
  )
  for updates in sequence[25:]:
    original_out, state = update(updates, state, params)
    restored_out, restored = update(updates, restored, params)
    jax.tree.map(np.testing.assert_array_equal, original_out, restored_out)
  jax.tree.map(np.testing.assert_array_equal, state, restored)


def test_apply_if_finite_recipe_skips_bad_steps():
  tx = optax.apply_if_finite(
    optax.chain(autoclip(10, max_history=8), optax.sgd(1.0)),
    max_consecutive_errors=3,
  )
  update = jax.jit(tx.update)
  params = {'w': jnp.zeros(2)}
  state = tx.init(params)
  _, state = update({'w': jnp.array([3.0, 4.0])}, state, params)
  output, state = update({'w': jnp.array([jnp.nan, 1.0])}, state, params)
  np.testing.assert_array_equal(output['w'], [0.0, 0.0])
  assert state.notfinite_count == 1
  assert state.inner_state[0].count == 1
  assert state.inner_state[0].threshold == 5.0


@pytest.mark.parametrize(
  'percentile, pick', [(np.nan, np.max), (-20.0, np.min), (150.0, np.max)]
)
def test_traced_percentile_outside_range_is_clamped(percentile, pick):
  # Only a traced percentile can be out of range: a Python one raises.
  sequence = spiky_updates(12)
  tx = optax.inject_hyperparams(autoclip, static_args=('max_history',))(
    percentile=50.0, max_history=8
  )
  update = jax.jit(tx.update)
  state = tx.init(sequence[0])
  for updates in sequence:
    state.hyperparams['percentile'] = jnp.float32(percentile)
    _, state = update(updates, state)
  window = autoclip_reference(sequence, [50] * 12, 8)[-1][3]
  np.testing.assert_allclose(
    state.inner_state.threshold, pick(window), rtol=1e-6
  )


def test_complex_leaves_are_clipped_by_their_modulus():
  rng = np.random.default_rng(0)
  sequence = [
    {
      'z': (rng.normal(size=4) + 1j * rng.normal(size=4)).astype(np.complex64)
      * rng.lognormal(0, 2)
    }
    for _ in range(30)
  ]
  outputs, states = run(autoclip(10, max_history=7), sequence)
  reference = autoclip_reference(sequence, [10] * 30, 7)
  assert_matches_reference(outputs, states, reference)
  assert outputs[-1]['z'].dtype == jnp.complex64


def test_window_keeps_turning_after_count_saturates():
  sequence = spiky_updates(40)
  tx = autoclip(10, max_history=6)
  update = jax.jit(tx.update)
  state = tx.init(sequence[0])
  for updates in sequence[:9]:
    _, state = update(updates, state)
  # As if 2**31 - 3 norms had been recorded: the count saturates below.
  state = state._replace(count=jnp.int32(np.iinfo(np.int32).max - 2))
  for updates in sequence[9:]:
    _, state = update(updates, state)
  assert state.count == np.iinfo(np.int32).max
  window = autoclip_reference(sequence, [10] * 40, 6)[-1][3]
  np.testing.assert_allclose(np.sort(state.history), np.sort(window), rtol=1e-6)
  assert_ranks_match(
    state.history, state.ranks, state.newest_rank, state.next_slot
  )


def test_state_with_another_max_history_raises():
  params = {'w': jnp.zeros(2)}
  with pytest.raises(
    ValueError, match='the state holds windows of 5 norms, but max_history is 4'
  ):
    autoclip(10, 4).update(params, autoclip(10, 5).init(params))


@pytest.mark.parametrize('dtype', [jnp.int32, jnp.uint8, jnp.bool_])
def test_updates_that_are_not_floating_point_raise(dtype):
  updates = {'b': jnp.zeros(2), 'w': (10 * jnp.arange(3)).astype(dtype)}
  tx = autoclip(10, 4)
  with pytest.raises(
    TypeError, match=f'leaf 1 .* has dtype {jnp.dtype(dtype).name}'
  ):
    tx.update(updates, tx.init(updates))


def test_float0_leaves_of_integer_params_pass_through():
  params = {'w': jnp.array([3.0, 4.0]), 'n': jnp.arange(2)}
  grads = jax.grad(
    lambda p: jnp.sum(p['w'] ** 2) / 2 + 0 * p['n'].sum(), allow_int=True
  )(params)
  tx = autoclip(10, 4)
  updates, state = jax.jit(tx.update)(grads, tx.init(params))
  assert updates['n'].dtype == jax.dtypes.float0
  np.testing.assert_allclose(updates['w'], [3.0, 4.0])
  np.testing.assert_allclose(state.grad_norm, 5.0)


@pytest.mark.parametrize('name', ['percentile', 'min_history'])
def test_hyperparameter_set_to_a_vector_raises_under_jit(name):
  tx = optax.inject_hyperparams(autoclip, static_args='max_history')(
    percentile=10.0, max_history=4, min_history=0
  )
  params = {'w': jnp.zeros(2)}
  state = tx.init(params)
  state.hyperparams[name] = jnp.stack([state.hyperparams[name]] * 2)
  with pytest.raises(
    ValueError,
    match=f'{name} must be a scalar, got an '
    r'array of shape \(2,\)',
  ):
    jax.jit(tx.update)(params, state)


def weighted_clipped_sum(updates, state):
  """A loss of the clipped updates: their sum weighted by 1 and 2."""
  clipped_updates, _ = autoclip(50.0, 10).update(updates, state)
  return jnp.sum(clipped_updates['w'] * jnp.array([1.0, 2.0]))


# Compiled once for every case, the state passed in.
loss = jax.jit(weighted_clipped_sum)


@functools.cache
def jitted_derivative(differentiate):
  return jax.jit(differentiate(weighted_clipped_sum))


def central_differences(function, updates, epsilon=1e-3):
  """The gradient of ``function`` at ``updates``, in float64 arithmetic."""
  flat = np.asarray(updates['w'], np.float64)
  gradient = np.zeros_like(flat)
  for index in range(flat.size):
    step = np.zeros_like(flat)
    step[index] = epsilon
    gradient[index] = (
      float(function({'w': jnp.asarray(flat + step, jnp.float32)}))
      - float(function({'w': jnp.asarray(flat - step, jnp.float32)}))
    ) / (2 * epsilon)
  return gradient


@pytest.mark.parametrize(
  'norms, clipped',
  [
    ([1.0, 2.0, 3.0], True),  # The step's norm, 5, is above the median.
    ([10.0, 20.0, 30.0], False),
    ([1.0, 2.0, 8.0], True),  # The median interpolates the step's norm.
  ],
)
@pytest.mark.parametrize('differentiate', [jax.grad, jax.jacfwd, jax.jacrev])
def test_update_is_differentiable_like_finite_differences(
  norms, clipped, differentiate
):
  tx = autoclip(50.0, 10)
  updates = {'w': jnp.array([3.0, 4.0])}
  state = with_history(tx.init(updates), norms)
  assert bool(tx.update(updates, state)[1].num_clipped) == clipped
  np.testing.assert_allclose(
    jitted_derivative(differentiate)(updates, state)['w'],
    central_differences(lambda updates: loss(updates, state), updates),
    rtol=2e-3,
    atol=2e-3,
  )


@pytest.mark.parametrize(
  'field, updates',
  [
    ('num_clipped', {'w': jnp.array([300.0, 400.0])}),
    ('num_nonfinite', {'w': jnp.array([jnp.nan, 1.0])}),
  ],
)
def test_event_counters_saturate_at_the_int32_maximum(field, updates):
  tx = autoclip(10, 4)
  state = tx.init(updates)
  state = with_history(state, [1.0, 1.0, 1.0])._replace(
    **{field: jnp.int32(np.iinfo(np.int32).max - 1)}
  )
  for _ in range(3):
    _, state = jax.jit(tx.update)(updates, state)
  assert getattr(state, field) == np.iinfo(np.int32).max
