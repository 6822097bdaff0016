"""Tests for the sorted-window update, against NumPy's sort."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoclip_optax import _window

replace_in_sorted = jax.jit(_window.replace_in_sorted)


def numpy_replace(sorted_values, leaving, arriving):
  values = list(sorted_values)
  values.remove(leaving)
  return np.sort(np.array(values + [arriving], np.float32))


@pytest.mark.parametrize('block_size', [1, 3, 16, 4096])
@pytest.mark.parametrize('size', [1, 2, 5, 64, 1001])
def test_random_replacements_match_numpy(size, block_size):
  rng = np.random.default_rng(size)
  replace = jax.jit(functools.partial(_window.replace_in_sorted_blockwise,
                                      block_size=block_size))
  # Few distinct values, so ties are common; spread, so ranges are long.
  window = np.sort(rng.integers(0, 7, size).astype(np.float32))
  for _ in range(100):
    leaving = window[rng.integers(size)]
    arriving = np.float32(rng.integers(-1, 8) + rng.choice([0.0, 0.5]))
    expected = numpy_replace(window, leaving, arriving)
    window = np.asarray(replace(window, leaving, arriving))
    np.testing.assert_array_equal(window, expected)


@pytest.mark.parametrize('size', [1, 2, 5, 64, 1001])
def test_elementwise_random_replacements_match_numpy(size):
  rng = np.random.default_rng(size)
  replace = jax.jit(_window.replace_in_sorted_elementwise)
  # Ties, infinite padding, and arriving values past both ends.
  window = np.sort(np.where(rng.random(size) < 0.3, np.inf,
                            rng.integers(0, 7, size)).astype(np.float32))
  for _ in range(100):
    leaving = window[rng.integers(size)]
    arriving = np.float32(rng.choice([rng.integers(-1, 8), 2.5, np.inf]))
    expected = numpy_replace(window, leaving, arriving)
    window = np.asarray(replace(window, leaving, arriving))
    np.testing.assert_array_equal(window, expected)


def test_elementwise_batch_replaces_in_each_like_numpy():
  rng = np.random.default_rng(0)
  replace = jax.jit(_window.replace_in_sorted_elementwise)
  windows = np.sort(rng.integers(0, 7, (3, 50)).astype(np.float32), axis=1)
  for _ in range(50):
    leaving = windows[np.arange(3), rng.integers(50, size=3)]
    arriving = rng.integers(-1, 8, 3).astype(np.float32)
    expected = [numpy_replace(*row) for row in zip(windows, leaving, arriving)]
    windows = np.asarray(replace(windows, leaving, arriving))
    np.testing.assert_array_equal(windows, expected)


def test_elementwise_and_blockwise_agree_bit_for_bit_on_signed_zeros():
  rng = np.random.default_rng(0)
  blockwise = jax.jit(functools.partial(_window.replace_in_sorted_blockwise,
                                        block_size=3))
  elementwise = jax.jit(_window.replace_in_sorted_elementwise)
  # -0.0 == 0.0: which of the equal values moves is decided by position.
  window = np.array([-1, -0.0, 0.0, -0.0, 0.0, 1, 1, 2], np.float32)
  for _ in range(200):
    leaving = window[rng.integers(window.size)]
    arriving = rng.choice(np.float32([-0.0, 0.0, 1, -1, 3]))
    expected = np.asarray(blockwise(window, leaving, arriving))
    window = np.asarray(elementwise(window, leaving, arriving))
    np.testing.assert_array_equal(window.view(np.uint32),
                                  expected.view(np.uint32))


def test_platform_default_matches_numpy_on_a_long_window():
  rng = np.random.default_rng(0)
  window = np.sort(rng.lognormal(size=100_000).astype(np.float32))
  for _ in range(20):
    leaving = window[rng.integers(window.size)]
    arriving = np.float32(rng.lognormal())
    expected = numpy_replace(window, leaving, arriving)
    window = np.asarray(replace_in_sorted(window, leaving, arriving))
    np.testing.assert_array_equal(window, expected)


def test_replacing_infinite_padding_inserts_a_value():
  window = np.array([1.0, 3.0, np.inf, np.inf], np.float32)
  result = replace_in_sorted(window, np.float32(np.inf), np.float32(2.0))
  np.testing.assert_array_equal(result, [1.0, 2.0, 3.0, np.inf])


def test_replacing_a_value_by_itself_is_identity():
  window = np.array([0.5, 1.0, 1.0, 4.0, np.inf], np.float32)
  for value in window:
    np.testing.assert_array_equal(
        replace_in_sorted(window, value, value), window)


def test_largest_value_moves_to_front():
  window = np.arange(6, dtype=np.float32)
  result = replace_in_sorted(window, np.float32(5), np.float32(-1))
  np.testing.assert_array_equal(result, [-1, 0, 1, 2, 3, 4])


def test_smallest_value_moves_to_back():
  window = np.arange(6, dtype=np.float32)
  result = replace_in_sorted(window, np.float32(0), np.float32(9))
  np.testing.assert_array_equal(result, [1, 2, 3, 4, 5, 9])


def test_keeps_dtype_and_shape():
  window = jnp.zeros(8, jnp.float32)
  result = replace_in_sorted(window, jnp.float32(0), jnp.float32(1))
  assert result.shape == (8,) and result.dtype == jnp.float32


@pytest.mark.parametrize('block_size', [1, 3, 4096])
def test_batch_of_windows_replaces_in_each_like_numpy(block_size):
  rng = np.random.default_rng(block_size)
  replace = jax.jit(functools.partial(_window.replace_in_sorted_blockwise,
                                      block_size=block_size))
  windows = np.sort(rng.integers(0, 7, (3, 50)).astype(np.float32), axis=1)
  for _ in range(50):
    leaving = windows[np.arange(3), rng.integers(50, size=3)]
    arriving = (rng.integers(-1, 8, 3) + rng.choice([0.0, 0.5], 3)).astype(
        np.float32)
    arriving[1] = leaving[1]  # One window unchanged while the others shift.
    expected = [numpy_replace(*row) for row in zip(windows, leaving, arriving)]
    windows = np.asarray(replace(windows, leaving, arriving))
    np.testing.assert_array_equal(windows, expected)


def test_vmap_of_platform_default_updates_windows_one_after_another():
  windows = np.tile(np.arange(6, dtype=np.float32), (3, 1))
  result = jax.jit(jax.vmap(_window.replace_in_sorted))(
      windows, np.float32([5, 0, 2]), np.float32([-1, 9, 2]))
  np.testing.assert_array_equal(
      result, [[-1, 0, 1, 2, 3, 4], [1, 2, 3, 4, 5, 9], [0, 1, 2, 3, 4, 5]])
  hlo = jax.jit(jax.vmap(_window.replace_in_sorted)).lower(
      windows, np.zeros(3, np.float32), np.zeros(3, np.float32)).as_text()
  assert 'scatter' not in hlo
