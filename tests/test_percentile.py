"""Tests for the percentile's ranks and interpolation, against np.percentile."""

from fractions import Fraction

import jax
import numpy as np
import pytest

from autoclip_optax import _percentile

ranks_and_weight = jax.jit(_percentile.ranks_and_weight)

PERCENTILES = [
  0.0,
  1.0,
  2.5,
  10.0,
  12.5,
  33.3,
  50.0,
  66.6,
  90.0,
  99.9,
  99.99,
  100.0,
]


def percentile_of(values, percentile):
  """The module's percentile of ``values``, order statistics from NumPy."""
  num_filled = np.int32(len(values))
  lower, upper, weight = ranks_and_weight(np.float32(percentile), num_filled)
  ordered = np.sort(values)
  return _percentile.interpolate(
    ordered[int(lower)], ordered[int(upper)], weight, num_filled
  )


@pytest.mark.parametrize('percentile', PERCENTILES)
@pytest.mark.parametrize('num_filled', [1, 2, 3, 10, 999])
def test_matches_numpy(percentile, num_filled):
  rng = np.random.default_rng(num_filled)
  values = rng.lognormal(size=num_filled).astype(np.float32)
  expected = np.percentile(
    values.astype(np.float64), float(np.float32(percentile))
  )
  np.testing.assert_allclose(
    percentile_of(values, percentile), expected, rtol=1e-6
  )


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
  window = rng.uniform(1.0, 2.0, size).astype(np.float32)
  window = np.sort(window)
  window[lower + 1 :] *= np.float32(1e6)
  expected = np.percentile(window.astype(np.float64), p32)
  np.testing.assert_allclose(
    percentile_of(window, percentile), expected, rtol=2e-6
  )


@pytest.mark.parametrize(
  'percentile', [0.001, 10.0, 33.3, 50.0, 99.9, 99.99, 100.0]
)
@pytest.mark.parametrize('num_filled', [2**24, 2**24 - 1, 2**23 + 12345])
def test_rank_is_exact_up_to_the_largest_window(percentile, num_filled):
  # Exact rational arithmetic: the ranks of the float32 percentile at the
  # documented maximum window, where a float32 rank would be off by units.
  exact = Fraction(float(np.float32(percentile))) * (num_filled - 1) / 100
  lower, upper, weight = ranks_and_weight(
    np.float32(percentile), np.int32(num_filled)
  )
  assert int(lower) == int(exact)
  assert int(upper) == min(int(exact) + 1, num_filled - 1)
  # The weight is rounded once or twice in float32: within 2**-22 of exact.
  assert abs(Fraction(float(weight)) - (exact - int(exact))) <= Fraction(
    1, 2**22
  )


def test_empty_window_is_infinite():
  lower, upper, weight = ranks_and_weight(np.float32(50), np.int32(0))
  assert (int(lower), int(upper)) == (0, 0)
  assert (
    _percentile.interpolate(np.float32(1), np.float32(2), weight, np.int32(0))
    == np.inf
  )


def test_single_value_is_every_percentile():
  for percentile in PERCENTILES:
    assert percentile_of(np.array([3.5], np.float32), percentile) == np.float32(
      3.5
    )
