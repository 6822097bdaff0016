"""Tests for the sorted-window percentile, against np.percentile."""

import jax
import numpy as np
import pytest

from autoclip_optax import _percentile

sorted_percentile = jax.jit(_percentile.sorted_percentile)

PERCENTILES = [0.0, 1.0, 2.5, 10.0, 12.5, 33.3, 50.0, 66.6, 90.0, 99.9,
               99.99, 100.0]


def padded(values, size):
  window = np.full(size, np.inf, np.float32)
  window[:len(values)] = np.sort(values)
  return window


@pytest.mark.parametrize('percentile', PERCENTILES)
@pytest.mark.parametrize('num_filled', [1, 2, 3, 10, 999])
def test_matches_numpy_on_partly_filled_window(percentile, num_filled):
  rng = np.random.default_rng(num_filled)
  values = rng.lognormal(size=num_filled).astype(np.float32)
  expected = np.percentile(values.astype(np.float64),
                           float(np.float32(percentile)))
  result = sorted_percentile(padded(values, 1000), np.int32(num_filled),
                             np.float32(percentile))
  np.testing.assert_allclose(result, expected, rtol=1e-6)


@pytest.mark.parametrize('percentile', [10.0, 33.3, 90.0, 99.9, 99.99, 0.001])
def test_exact_across_a_spike_in_a_million_slot_window(percentile):
  # The percentile falls between an ordinary norm and a 10^6 times larger
  # spike, so the result carries the interpolation weight at full float32
  # precision. A float32 rank (known only to ~0.06 at this size) is off by
  # percents here.
  size = 2**20
  p32 = float(np.float32(percentile))
  lower = int(np.floor(p32 / 100 * (size - 1)))
  rng = np.random.default_rng(0)
  window = np.sort(rng.uniform(1.0, 2.0, size).astype(np.float32))
  window[lower + 1:] *= np.float32(1e6)
  expected = np.percentile(window.astype(np.float64), p32)
  result = sorted_percentile(window, np.int32(size), np.float32(percentile))
  np.testing.assert_allclose(result, expected, rtol=2e-6)


def test_empty_window_is_infinite():
  window = np.full(4, np.inf, np.float32)
  assert sorted_percentile(window, np.int32(0), np.float32(50)) == np.inf


def test_single_value_is_every_percentile():
  window = padded(np.array([3.5], np.float32), 4)
  for percentile in PERCENTILES:
    assert sorted_percentile(window, np.int32(1),
                             np.float32(percentile)) == np.float32(3.5)
