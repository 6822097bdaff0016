"""Tests for examples/flax_separation/metrics.py."""

import numpy as np
import pytest

from examples.flax_separation import metrics

_TARGET = [3.0, -0.5, 2.0, 7.0]
_ESTIMATE = [2.5, 0.0, 2.0, 8.0]


def test_si_sdr_known_value_without_mean_removal():
  # The example of torchmetrics' SI-SDR documentation (zero_mean=False).
  assert metrics.si_sdr(_ESTIMATE, _TARGET, zero_mean=False) == pytest.approx(
    18.4030, abs=1e-4
  )


def test_si_sdr_known_value_with_mean_removal():
  centred_target = np.array(_TARGET) - np.mean(_TARGET)
  centred_estimate = np.array(_ESTIMATE) - np.mean(_ESTIMATE)
  scaled_target = (
    centred_estimate
    @ centred_target
    / (centred_target @ centred_target)
    * centred_target
  )
  expected = 10 * np.log10(
    np.sum(scaled_target**2) / np.sum((centred_estimate - scaled_target) ** 2)
  )
  assert metrics.si_sdr(_ESTIMATE, _TARGET) == pytest.approx(expected)
  assert metrics.si_sdr(_ESTIMATE, _TARGET) == pytest.approx(15.0918, abs=1e-4)


@pytest.mark.parametrize('scale', [1e-3, 0.5, 20.0])
def test_si_sdr_is_scale_invariant(scale):
  rng = np.random.default_rng(0)
  target = rng.standard_normal(1000)
  estimate = target + 0.3 * rng.standard_normal(1000)
  assert metrics.si_sdr(scale * estimate, target) == pytest.approx(
    metrics.si_sdr(estimate, target)
  )
  assert metrics.si_sdr(estimate, scale * target) == pytest.approx(
    metrics.si_sdr(estimate, target)
  )


def test_si_sdr_is_batched_over_leading_axes():
  rng = np.random.default_rng(0)
  targets = rng.standard_normal((2, 3, 500))
  estimates = targets + rng.standard_normal((2, 3, 500))
  scores = metrics.si_sdr(estimates, targets)
  assert scores.shape == (2, 3)
  assert scores[1, 2] == pytest.approx(
    metrics.si_sdr(estimates[1, 2], targets[1, 2])
  )


def test_permutation_resolved_si_sdr_undoes_swapped_estimates():
  rng = np.random.default_rng(0)
  targets = rng.standard_normal((2, 1000))
  noise_levels = np.array([[0.1], [0.5]])
  estimates = targets + noise_levels * rng.standard_normal((2, 1000))
  in_order = metrics.si_sdr(estimates, targets)
  resolved = metrics.permutation_resolved_si_sdr(estimates[::-1], targets)
  np.testing.assert_allclose(resolved, in_order)
  assert resolved[0] > resolved[1]


def test_si_sdr_improvement_of_the_mixture_itself_is_zero():
  rng = np.random.default_rng(0)
  targets = rng.standard_normal((2, 1000))
  mixture = targets.sum(axis=0)
  improvement = metrics.si_sdr_improvement(
    np.stack([mixture, mixture]), targets, mixture
  )
  np.testing.assert_allclose(improvement, 0.0, atol=1e-9)


def test_si_sdr_improvement_of_perfect_estimates_is_large():
  rng = np.random.default_rng(0)
  targets = rng.standard_normal((3, 2, 1000))
  estimates = targets + 1e-3 * rng.standard_normal((3, 2, 1000))
  improvement = metrics.si_sdr_improvement(
    estimates, targets, targets.sum(axis=1)
  )
  assert improvement.shape == (3, 2)
  assert np.all(improvement > 50.0)
