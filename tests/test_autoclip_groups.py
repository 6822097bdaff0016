"""Tests for autoclip's per-group thresholds, against the NumPy reference."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import AutoClipState
from autoclip_optax import autoclip
from tests.autoclip_helpers import BAD_STEPS
from tests.autoclip_helpers import SHAPES
from tests.autoclip_helpers import assert_matches_grouped_reference
from tests.autoclip_helpers import grouped_spiky_updates
from tests.autoclip_helpers import run
from tests.autoclip_helpers import run_autoclip
from tests.autoclip_helpers import with_bad_bias
from tests.autoclip_reference import grouped_autoclip_reference


def by_leaf(name):
  return name


def kernel_or_bias(name):
  return 'bias' if name == 'b' else 'kernel'


def kernel_or_bias_labels(params):
  """A label function in the style of optax.multi_transform's param_labels."""
  return {name: kernel_or_bias(name) for name in params}


@pytest.mark.parametrize('percentile', [0, 10, 50, 90, 100, 33.3])
@pytest.mark.parametrize('max_history', [1, 7, 1000])
def test_leaf_groups_match_numpy_reference(percentile, max_history):
  sequence = grouped_spiky_updates(120, seed=max_history)
  outputs, states = run_autoclip(
    sequence, percentile, max_history, group_by='leaf'
  )
  reference = grouped_autoclip_reference(
    sequence, [percentile] * len(sequence), max_history, by_leaf
  )
  assert_matches_grouped_reference(outputs, states, reference)


@pytest.mark.parametrize('percentile', [10, 75, 2.5])
@pytest.mark.parametrize('max_history', [5, 1000])
def test_label_function_groups_match_numpy_reference(percentile, max_history):
  sequence = grouped_spiky_updates(80, seed=max_history + 1)
  outputs, states = run_autoclip(
    sequence, percentile, max_history, group_by=kernel_or_bias_labels
  )
  reference = grouped_autoclip_reference(
    sequence, [percentile] * len(sequence), max_history, kernel_or_bias
  )
  assert_matches_grouped_reference(outputs, states, reference)


def test_label_pytree_matches_label_function():
  sequence = grouped_spiky_updates(30)
  labels = kernel_or_bias_labels(sequence[0])
  _, from_function = run_autoclip(
    sequence, 10, 8, group_by=kernel_or_bias_labels
  )
  _, from_pytree = run(autoclip(10, 8, group_by=labels), sequence)
  jax.tree.map(
    np.testing.assert_array_equal, from_function[-1], from_pytree[-1]
  )


def test_prefix_labels_group_whole_subtrees():
  sequence = grouped_spiky_updates(40)
  nested = [
    {'dec': {'w_1': u['w_1']}, 'enc': {'b': u['b'], 'w_0': u['w_0']}}
    for u in sequence
  ]
  tx = autoclip(25, 16, group_by={'dec': 'decoder', 'enc': 'encoder'})
  outputs, states = run(tx, nested)
  reference = grouped_autoclip_reference(
    sequence,
    [25] * 40,
    16,
    lambda name: 'decoder' if name == 'w_1' else 'encoder',
  )
  flat_outputs = [
    {'b': o['enc']['b'], 'w_0': o['enc']['w_0'], 'w_1': o['dec']['w_1']}
    for o in outputs
  ]
  assert_matches_grouped_reference(flat_outputs, states, reference)


def test_groups_are_numbered_in_sorted_label_order():
  updates = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([1.0])}
  tx = autoclip(10, 4, group_by={'a': 'zeta', 'b': 'alpha'})
  _, state = tx.update(updates, tx.init(updates))
  np.testing.assert_array_equal(state.grad_norm, [1.0, 5.0])


def test_leaf_groups_follow_tree_leaves_order():
  updates = {
    'z': jnp.array([3.0, 4.0]),
    'a': jnp.array([1.0]),
    'm': (jnp.array([2.0]),),
  }
  tx = autoclip(10, 4, group_by='leaf')
  _, state = tx.update(updates, tx.init(updates))
  expected = [np.linalg.norm(leaf) for leaf in jax.tree.leaves(updates)]
  np.testing.assert_array_equal(state.grad_norm, expected)


def test_state_has_a_group_axis_of_arrays_only():
  params = {name: jnp.zeros(shape) for name, shape in SHAPES.items()}
  state = autoclip(10, 5, group_by='leaf').init(params)
  assert isinstance(state, AutoClipState)
  assert all(isinstance(leaf, jax.Array) for leaf in state)
  for name in ('count', 'grad_norm', 'threshold', 'oldest'):
    assert getattr(state, name).shape == (3,)
  assert state.history.shape == state.ranks.shape == (3, 5)
  assert state.count.dtype == jnp.int32
  assert state.threshold.dtype == jnp.float32


def test_empty_params_give_zero_groups():
  tx = autoclip(10, 5, group_by='leaf')
  state = tx.init({})
  updates, state = jax.jit(tx.update)({}, state)
  assert updates == {}
  assert state.history.shape == (0, 5)


@pytest.mark.parametrize('bad_value', [np.nan, np.inf, -np.inf])
def test_non_finite_group_is_not_recorded_in_that_group(bad_value):
  sequence = with_bad_bias(
    grouped_spiky_updates(40), np.array([1.0, bad_value, 2.0], np.float32)
  )
  _, states = run_autoclip(sequence, 10, 16, group_by='leaf')
  for step in BAD_STEPS:
    assert not np.isfinite(states[step].grad_norm[0])
    np.testing.assert_array_equal(
      states[step].history[0], states[step - 1].history[0]
    )
    np.testing.assert_array_equal(
      states[step].threshold[0], states[step - 1].threshold[0]
    )
  assert int(states[-1].count[0]) == 37


def test_finite_groups_record_when_another_group_is_not_finite():
  sequence = with_bad_bias(
    grouped_spiky_updates(40), np.full(3, np.nan, np.float32)
  )
  outputs, states = run_autoclip(sequence, 10, 16, group_by='leaf')
  reference = grouped_autoclip_reference(sequence, [10] * 40, 16, by_leaf)
  np.testing.assert_array_equal(states[-1].count, [37, 40, 40])
  # The reference skips each group's non-finite norms on its own too.
  finite = [s for s in range(40) if s not in BAD_STEPS]
  assert_matches_grouped_reference(
    [outputs[s] for s in finite],
    [states[s] for s in finite],
    [reference[s] for s in finite],
  )
  for step in BAD_STEPS:
    np.testing.assert_allclose(
      states[step].threshold[1:], reference[step][2][1:], rtol=1e-5
    )
    np.testing.assert_allclose(
      outputs[step]['w_0'], reference[step][0]['w_0'], rtol=1e-5, atol=1e-6
    )


def test_zero_threshold_in_one_group_gives_zero_updates_there_only():
  tx = autoclip(0.0, 8, group_by='leaf')
  update = jax.jit(tx.update)
  state = tx.init({'a': jnp.zeros(2), 'b': jnp.zeros(2)})
  _, state = update({'a': jnp.zeros(2), 'b': jnp.array([3.0, 4.0])}, state)
  output, state = update({'a': jnp.ones(2), 'b': jnp.array([3.0, 4.0])}, state)
  np.testing.assert_array_equal(state.threshold, [0.0, 5.0])
  np.testing.assert_array_equal(output['a'], [0.0, 0.0])
  np.testing.assert_array_equal(output['b'], [3.0, 4.0])


def test_compiles_once_with_groups():
  tx = autoclip(10, 5, group_by=kernel_or_bias_labels)
  traces = []

  def counting_update(updates, state):
    traces.append(None)
    return tx.update(updates, state)

  update = jax.jit(counting_update)
  sequence = grouped_spiky_updates(17)  # Fills the windows, wraps twice.
  sequence[9] = dict(sequence[9], b=np.full(3, np.nan, np.float32))
  state = tx.init(sequence[0])
  for updates in sequence:
    _, state = update(updates, state)
  assert len(traces) == 1
  np.testing.assert_array_equal(state.count, [16, 17])


def test_no_loop_whatever_the_number_of_groups():
  def num_loops(num_leaves):
    updates = {f'w_{i:02d}': jnp.ones(3) for i in range(num_leaves)}
    tx = autoclip(10, 64, group_by='leaf')
    hlo = jax.jit(tx.update).lower(updates, tx.init(updates)).as_text()
    return hlo.count('stablehlo.while')

  assert num_loops(2) == num_loops(12) == 0


def test_inject_hyperparams_with_a_label_function():
  sequence = grouped_spiky_updates(40)
  percentiles = [10.0] * 20 + [90.0] * 20
  tx = optax.inject_hyperparams(
    autoclip, static_args=('max_history', 'group_by')
  )(
    percentile=lambda step: jnp.where(step < 20, 10.0, 90.0),
    max_history=10,
    group_by=kernel_or_bias_labels,
  )
  _, states = run(tx, sequence)
  expected = [
    thresholds
    for _, _, thresholds, _ in grouped_autoclip_reference(
      sequence, percentiles, 10, kernel_or_bias
    )
  ]
  np.testing.assert_allclose(
    [s.inner_state.threshold for s in states], expected, rtol=1e-5
  )


def test_tree_get_reads_one_value_per_group():
  tx = optax.chain(autoclip(10, 5, group_by='leaf'), optax.adam(1e-3))
  params = {'a': jnp.ones(2), 'b': jnp.ones(1)}
  state = tx.init(params)
  _, state = tx.update(
    {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([2.0])}, state, params
  )
  np.testing.assert_array_equal(
    optax.tree_utils.tree_get(state, 'threshold'), [5.0, 2.0]
  )
  np.testing.assert_array_equal(
    optax.tree_utils.tree_get(state, 'grad_norm'), [5.0, 2.0]
  )


def test_checkpoint_round_trip_with_groups_continues_bit_identically():
  sequence = grouped_spiky_updates(50)
  tx = autoclip(10, 16, group_by='leaf')
  uninterrupted_outputs, uninterrupted_states = run(tx, sequence)
  _, first_half = run(tx, sequence[:25])
  state = flax.serialization.from_bytes(
    tx.init(sequence[0]), flax.serialization.to_bytes(first_half[-1])
  )
  update = jax.jit(tx.update)
  for updates, expected in zip(
    sequence[25:], zip(uninterrupted_outputs[25:], uninterrupted_states[25:])
  ):
    output, state = update(updates, state)
    jax.tree.map(np.testing.assert_array_equal, (output, state), expected)


@pytest.mark.parametrize('group_by', ['layer', 'leaves', ''])
def test_string_other_than_leaf_raises(group_by):
  with pytest.raises(
    ValueError, match="group_by must be None, 'leaf', a callable"
  ):
    autoclip(10, group_by=group_by)


def test_unsortable_labels_raise():
  with pytest.raises(
    TypeError, match='group_by labels must be hashable and mutually orderable'
  ):
    autoclip(10, group_by={'a': 1, 'b': 'kernel'})


def test_label_tree_that_does_not_match_the_params_raises():
  tx = autoclip(10, group_by={'a': 'x', 'c': 'y'})
  with pytest.raises(
    ValueError,
    match=r'group_by must give a pytree of '
    r'labels with the structure of the params[\s\S]*'
    r"PyTreeDef\(\{'a': \*, 'b': \*\}\)",
  ):
    tx.init({'a': jnp.zeros(2), 'b': jnp.zeros(2)})


def test_label_function_that_does_not_match_the_updates_raises():
  tx = autoclip(10, group_by=lambda params: ['x', 'y'])
  with pytest.raises(
    ValueError,
    match='group_by must give a pytree of '
    'labels with the structure of the params',
  ):
    tx.init({'a': jnp.zeros(2), 'b': jnp.zeros(2)})


def test_updates_with_other_groups_than_the_state_raise():
  tx = autoclip(10, group_by='leaf')
  state = tx.init({'a': jnp.zeros(2), 'b': jnp.zeros(2)})
  with pytest.raises(
    ValueError,
    match='the state was initialised for 2 '
    'groups, but this autoclip has 1 groups',
  ):
    tx.update({'a': jnp.zeros(2)}, state)


@pytest.mark.parametrize('inject', [False, True])
def test_state_without_groups_in_a_grouped_autoclip_raises(inject):
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(2)}
  tx = autoclip(10, 4, group_by='leaf')
  state = autoclip(10, 4).init(params)
  if inject:
    tx = optax.inject_hyperparams(autoclip, static_args='max_history')(
      10.0, 4, group_by='leaf'
    )
    state = optax.inject_hyperparams(autoclip, static_args='max_history')(
      10.0, 4
    ).init(params)
  with pytest.raises(
    ValueError,
    match=r'initialised for no groups '
    r'\(group_by=None\), but this autoclip has 2 groups',
  ):
    tx.update(params, state)


def test_grouped_state_in_an_autoclip_without_groups_raises():
  params = {'a': jnp.zeros(2), 'b': jnp.zeros(2)}
  state = autoclip(10, 4, group_by='leaf').init(params)
  with pytest.raises(
    ValueError,
    match='initialised for 2 groups, but this '
    r'autoclip has no groups \(group_by=None\)',
  ):
    autoclip(10, 4).update(params, state)
