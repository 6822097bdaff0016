"""Tests for the ranked window, against a plain Python ring and sort."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoclip_optax import _window
from tests.autoclip_reference import assert_ranks_match

replace_and_select = jax.jit(_window.replace_and_select)


def empty_window(size, batch_shape=()):
  ranks, newest_rank = _window.initial_ranks(batch_shape, size)
  return (
    jnp.full(batch_shape + (size,), jnp.inf, jnp.float32),
    ranks,
    newest_rank,
    jnp.zeros(batch_shape, jnp.int32),
  )


def numpy_order_statistic(ring, rank):
  return np.sort(np.asarray(ring, np.float32))[rank]


SUMS = [
  _window.sum_each_term,
  _window.sum_stacked_terms,
  _window.sum_terms_in_one_reduce,
]


@pytest.mark.parametrize('sums', SUMS, ids=lambda sums: sums.__name__)
@pytest.mark.parametrize('size', [1, 2, 5, 64, 1001])
def test_random_replacements_match_numpy(size, sums, monkeypatch):
  monkeypatch.setattr(_window, 'sum_terms', sums)
  # A new jit, so that each way of summing is traced anew.
  replace_and_select = jax.jit(_window.replace_and_select)
  select = jax.jit(_window.select)
  rng = np.random.default_rng(size)
  values, ranks, newest_rank, slot = empty_window(size)
  ring = np.full(size, np.inf, np.float32)
  # Few distinct values, so that ties are common; infinite slots; values
  # past both ends; and steps that record nothing.
  for _ in range(150):
    recorded = rng.random() > 0.1
    arriving = np.float32(rng.choice([rng.integers(0, 7), 2.5, 0.0, 1e30]))
    lower, upper = sorted(rng.integers(0, size, 2))
    result = replace_and_select(
      values,
      ranks,
      newest_rank,
      slot,
      ring[int(slot)],
      arriving,
      recorded,
      np.int32(lower),
      np.int32(upper),
    )
    if recorded:
      ring[int(slot)] = arriving
      slot = (slot + 1) % size
    np.testing.assert_array_equal(result.values, ring)
    assert_ranks_match(ring, result.ranks, result.newest_rank, slot)
    assert result.lower_value == numpy_order_statistic(ring, lower)
    assert result.upper_value == numpy_order_statistic(ring, upper)
    assert result.next_leaving == ring[int(slot)]
    values, ranks, newest_rank = result.values, result.ranks, result.newest_rank
    lower, upper = rng.integers(0, size, 2)
    read = select(values, ranks, newest_rank, slot, lower, upper)
    assert read == (
      numpy_order_statistic(ring, lower),
      numpy_order_statistic(ring, upper),
    )


def test_batch_of_windows_replaces_in_each_like_numpy():
  rng = np.random.default_rng(0)
  values, ranks, newest_rank, slots = empty_window(7, (3,))
  rings = np.full((3, 7), np.inf, np.float32)
  for _ in range(60):
    recorded = rng.random(3) > 0.2
    arriving = rng.integers(0, 5, 3).astype(np.float32)
    lower = rng.integers(0, 7, 3).astype(np.int32)
    result = replace_and_select(
      values,
      ranks,
      newest_rank,
      slots,
      rings[np.arange(3), slots],
      arriving,
      recorded,
      lower,
      lower,
    )
    rings[np.arange(3)[recorded], slots[recorded]] = arriving[recorded]
    slots = np.where(recorded, (slots + 1) % 7, slots)
    for row in range(3):
      np.testing.assert_array_equal(result.values[row], rings[row])
      assert_ranks_match(
        rings[row], result.ranks[row], result.newest_rank[row], slots[row]
      )
      assert result.lower_value[row] == numpy_order_statistic(
        rings[row], lower[row]
      )
    values, ranks, newest_rank = result.values, result.ranks, result.newest_rank


def test_every_way_of_summing_gives_the_same_bits():
  rng = np.random.default_rng(0)
  values = rng.lognormal(size=(3, 999)).astype(np.float32)
  terms = (
    np.where(rng.random((3, 999)) < 0.5, 1.0, 0.0).astype(np.float32),
    np.where(np.arange(999) == 17, values, 0.0).astype(np.float32),
    values,
  )
  results = [np.asarray(jax.jit(sums)(*terms)) for sums in SUMS]
  for result in results[1:]:
    np.testing.assert_array_equal(
      result[..., :2].view(np.uint32), results[0][..., :2].view(np.uint32)
    )
  np.testing.assert_allclose(
    results[0],
    np.stack([term.astype(np.float64).sum(-1) for term in terms], -1),
    rtol=1e-5,
  )


def test_not_recorded_changes_nothing():
  values, ranks, newest_rank, slot = empty_window(4)
  for arriving in [3.0, 1.0]:
    result = replace_and_select(
      values,
      ranks,
      newest_rank,
      slot,
      np.inf,
      np.float32(arriving),
      True,
      np.int32(0),
      np.int32(1),
    )
    values, ranks, newest_rank = result.values, result.ranks, result.newest_rank
    slot = slot + 1
  unchanged = replace_and_select(
    values,
    ranks,
    newest_rank,
    slot,
    np.inf,
    np.float32(0.5),
    False,
    np.int32(0),
    np.int32(1),
  )
  np.testing.assert_array_equal(unchanged.values, values)
  np.testing.assert_array_equal(unchanged.ranks, ranks)
  assert unchanged.newest_rank == newest_rank
  assert (unchanged.lower_value, unchanged.upper_value) == (1.0, 3.0)


def test_window_update_is_one_pass_without_loops_or_sorts():
  args = (
    *empty_window(1000)[:3],
    jnp.int32(0),
    jnp.float32(jnp.inf),
    jnp.float32(1.0),
    True,
    jnp.int32(3),
    jnp.int32(4),
  )
  hlo = jax.jit(_window.replace_and_select).lower(*args).as_text()
  assert 'stablehlo.while' not in hlo
  assert 'stablehlo.sort' not in hlo
  assert 'stablehlo.scatter' not in hlo
