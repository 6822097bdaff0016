"""Tests for seeding a state's window (with_history) and reading it out."""

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import AutoClipState
from autoclip_optax import SkipSpikesState
from autoclip_optax import autoclip
from autoclip_optax import recorded_norms
from autoclip_optax import skip_spikes
from autoclip_optax import with_history
from tests.autoclip_helpers import assert_bit_identical
from tests.autoclip_helpers import grouped_spiky_updates
from tests.autoclip_helpers import run
from tests.autoclip_helpers import spiky_updates

WINDOW_FIELDS = (
  'count',
  'history',
  'ranks',
  'newest_rank',
  'oldest',
  'next_slot',
)


# Module-level, so that every case's jax.jit(tx.update) is one compile.
CLIPPED_SGD = optax.chain(autoclip(10, max_history=8), optax.sgd(1.0))
CLIPPED_ADAM = optax.chain(autoclip(10, max_history=12), optax.adam(1e-3))


def record_one_by_one(tx, sequence, params):
  update = jax.jit(tx.update)
  state = tx.init(params)
  for updates in sequence:
    _, state = update(updates, state, params)
  return state


@pytest.mark.parametrize('num_steps', [1, 3, 7, 8, 9, 30])
def test_seeded_window_and_next_step_equal_recording_one_by_one(num_steps):
  sequence = spiky_updates(num_steps + 1)
  sequence[1:1] = [
    {'w': np.full((4, 3), np.nan, np.float32), 'b': np.zeros(3, np.float32)}
  ]  # Skipped, like a step.
  params = jax.tree.map(np.zeros_like, sequence[0])
  tx = CLIPPED_SGD
  _, states = run(tx, sequence[:-1])
  recorded = states[-1]
  # The norms as a run logs them, NaN included.
  norms = [optax.tree_utils.tree_get(state, 'grad_norm') for state in states]
  seeded = with_history(tx.init(params), norms)
  for field in WINDOW_FIELDS:
    assert_bit_identical(getattr(recorded[0], field), getattr(seeded[0], field))
  update = jax.jit(tx.update)
  after_recorded = update(sequence[-1], recorded, params)
  after_seeded = update(sequence[-1], seeded, params)
  assert_bit_identical(after_recorded[0], after_seeded[0])
  for field in WINDOW_FIELDS + ('threshold', 'grad_norm'):
    assert_bit_identical(
      getattr(after_recorded[1][0], field), getattr(after_seeded[1][0], field)
    )


def test_fine_tuning_clips_from_the_first_step_with_logged_norms():
  logged_norms = np.random.default_rng(0).lognormal(size=500)
  tx = autoclip(10, max_history=1000)
  params = {'w': jnp.zeros(2)}
  state = with_history(tx.init(params), logged_norms)
  updates, state = tx.update({'w': jnp.array([30.0, 40.0])}, state)
  expected = np.percentile(np.append(np.float32(logged_norms), 50.0), 10)
  np.testing.assert_allclose(state.threshold, expected, rtol=1e-6)
  np.testing.assert_allclose(jnp.linalg.norm(updates['w']), expected, rtol=1e-5)


@pytest.mark.parametrize('new_max_history', [5, 12, 40])
def test_checkpoint_moves_into_a_transform_with_another_max_history(
  new_max_history,
):
  sequence = spiky_updates(30)
  params = jax.tree.map(np.zeros_like, sequence[0])
  old_tx = CLIPPED_ADAM
  saved = flax.serialization.to_bytes(
    record_one_by_one(old_tx, sequence, params)
  )
  restored = flax.serialization.from_bytes(old_tx.init(params), saved)
  new_tx = optax.chain(
    autoclip(10, max_history=new_max_history), optax.adam(1e-3)
  )
  moved = with_history(new_tx.init(params), recorded_norms(restored))
  expected = record_one_by_one(new_tx, sequence[30 - 12 :], params)
  for field in WINDOW_FIELDS[1:]:
    assert_bit_identical(getattr(moved[0], field), getattr(expected[0], field))


def test_recorded_norms_are_oldest_first():
  tx = autoclip(10, max_history=4)
  state = with_history(
    tx.init({'w': jnp.zeros(1)}), [1.0, np.nan, 2.0, 3.0, 4.0, 5.0, 6.0]
  )
  np.testing.assert_array_equal(recorded_norms(state), [3, 4, 5, 6])
  state = with_history(tx.init({'w': jnp.zeros(1)}), [2.0, 1.0])
  np.testing.assert_array_equal(recorded_norms(state), [2, 1])


def in_rank_order(state, group):
  """A group's ring, ordered by the ranks the state holds."""
  ranks = np.array(state.ranks[group])
  newest = (int(state.next_slot[group]) - 1) % len(ranks)
  ranks[newest] = state.newest_rank[group]
  return np.asarray(state.history[group])[np.argsort(ranks)]


def test_per_group_form_seeds_each_group():
  sequence = grouped_spiky_updates(20)
  params = jax.tree.map(np.zeros_like, sequence[0])
  tx = autoclip(10, max_history=6, group_by='leaf')
  recorded = record_one_by_one(tx, sequence, params)
  seeded = with_history(tx.init(params), recorded_norms(recorded))
  # The same window, its ring turned to start at slot 0.
  for recorded_row, seeded_row in zip(
    recorded_norms(recorded), recorded_norms(seeded)
  ):
    assert_bit_identical(recorded_row, seeded_row)
  for group in range(3):
    assert_bit_identical(
      in_rank_order(recorded, group), in_rank_order(seeded, group)
    )
  assert_bit_identical(recorded.oldest, seeded.oldest)
  ragged = with_history(tx.init(params), [[1.0], [2.0, 3.0], []])
  np.testing.assert_array_equal(ragged.count, [1, 2, 0])


def test_skip_spikes_window_is_seeded_too():
  tx = skip_spikes(
    optax.chain(autoclip(10, 8), optax.sgd(1.0)), min_history=3, max_history=8
  )
  state = with_history(tx.init({'w': jnp.zeros(1)}), [1.0, 1.0, 1.0])
  assert state.count == 3 and state.inner_state[0].count == 3
  updates, state = tx.update({'w': jnp.array([100.0])}, state)
  assert state.num_skipped == 1 and updates['w'] == 0


def test_wrong_shape_of_norms_raises():
  with pytest.raises(ValueError, match='norms must be 1-D'):
    with_history(autoclip(10, 4).init({'w': jnp.zeros(1)}), [[1.0]])
  state = autoclip(10, 4, group_by='leaf').init({'a': 0.0, 'b': 0.0})
  with pytest.raises(ValueError, match=r'one 1-D sequence per group \(2 '):
    with_history(state, [[1.0]])


def test_state_without_a_window_raises():
  with pytest.raises(ValueError, match='state holds no AutoClipState'):
    with_history(optax.adam(1e-3).init({'w': jnp.zeros(1)}), [1.0])
  with pytest.raises(ValueError, match='state holds no window to read'):
    recorded_norms(optax.adam(1e-3).init({'w': jnp.zeros(1)}))


def nested_windows_state(norms):
  """skip_spikes(chain(autoclip)) after these norms, none skipped."""
  tx = skip_spikes(
    optax.chain(autoclip(10, max_history=8), optax.sgd(1.0)),
    factor=1e6,
    max_history=3,
    min_history=3,
  )
  return record_one_by_one(
    tx, [{'w': jnp.array([norm])} for norm in norms], {'w': jnp.zeros(1)}
  )


@pytest.mark.parametrize(
  'state_type, window', [(AutoClipState, 8), (SkipSpikesState, 3)]
)
def test_recorded_norms_reads_the_window_of_the_state_type_asked(
  state_type, window
):
  norms = np.random.default_rng(0).lognormal(size=12).astype(np.float32)
  state = nested_windows_state(norms)
  # Each window holds the last norms that went through it (none skipped).
  np.testing.assert_array_equal(
    recorded_norms(state, state_type), norms[-window:]
  )


def test_recorded_norms_of_nested_windows_without_a_state_type_raises():
  state = nested_windows_state([1.0, 2.0])
  with pytest.raises(
    ValueError,
    match=r'2 windows \(SkipSpikesState, '
    r'AutoClipState, outer first\): pass state_type=',
  ):
    recorded_norms(state)


def test_recorded_norms_of_two_windows_of_one_type_raises():
  tx = optax.chain(autoclip(10, 4), autoclip(50, 4))
  state = tx.init({'w': jnp.zeros(1)})
  with pytest.raises(ValueError, match='2 windows of type AutoClipState'):
    recorded_norms(state, AutoClipState)
  np.testing.assert_array_equal(recorded_norms(state[1]), [])


def test_recorded_norms_with_a_type_that_has_no_window_raises():
  state = autoclip(10, 4).init({'w': jnp.zeros(1)})
  with pytest.raises(TypeError, match='state_type must be AutoClipState'):
    recorded_norms(state, optax.ScaleByAdamState)
  with pytest.raises(ValueError, match='no SkipSpikesState in a AutoClipState'):
    recorded_norms(state, SkipSpikesState)


def test_negative_norms_raise():
  state = autoclip(10, 4).init({'w': jnp.zeros(2)})
  with pytest.raises(ValueError, match='norms must not be negative'):
    with_history(state, np.log([0.5, 2.0]))


def test_norms_beyond_float32_are_skipped_as_a_step_skips_them():
  state = with_history(autoclip(10, 4).init({'w': jnp.zeros(2)}), [1e39, 1.0])
  assert state.count == 1
  np.testing.assert_array_equal(recorded_norms(state), [1.0])


def test_a_generator_of_norms_is_accepted():
  tx = autoclip(10, 4)
  state = tx.init({'w': jnp.zeros(2)})
  from_generator = with_history(state, (norm for norm in [1.0, 2.0, 3.0]))
  from_list = with_history(state, [1.0, 2.0, 3.0])
  assert_bit_identical(from_generator, from_list)
