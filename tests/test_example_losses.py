"""Tests for examples/flax_separation/losses.py."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from examples.flax_separation import losses


def _random_problem(batch=3, sources=2, frames=5, freqs=7, seed=0):
  rng = np.random.default_rng(seed)
  source_specs = (rng.standard_normal((batch, sources, frames, freqs))
                  + 1j * rng.standard_normal((batch, sources, frames, freqs)))
  mixture_spec = source_specs.sum(axis=1)
  masks = rng.uniform(size=(batch, sources, frames, freqs))
  return (masks.astype(np.float32), mixture_spec.astype(np.complex64),
          source_specs.astype(np.complex64))


def _reference_psa_loss(masks, mixture_spec, source_specs):
  batch_size, num_sources = masks.shape[:2]
  per_example = []
  for b in range(batch_size):
    mixture_magnitude = np.abs(mixture_spec[b])
    targets = []
    for c in range(num_sources):
      projection = np.abs(source_specs[b, c]) * np.cos(
          np.angle(source_specs[b, c]) - np.angle(mixture_spec[b]))
      targets.append(np.minimum(np.maximum(projection, 0.0), mixture_magnitude))
    permutation_losses = []
    for permutation in itertools.permutations(range(num_sources)):
      permutation_losses.append(np.mean([
          np.mean(np.abs(masks[b, c] * mixture_magnitude - targets[target]))
          for c, target in enumerate(permutation)
      ]))
    per_example.append(min(permutation_losses))
  return np.mean(per_example)


@pytest.mark.parametrize('num_sources', [2, 3])
def test_psa_mask_loss_matches_numpy_reference(num_sources):
  masks, mixture_spec, source_specs = _random_problem(sources=num_sources)
  loss = losses.psa_mask_loss(masks, mixture_spec, source_specs)
  assert loss == pytest.approx(
      _reference_psa_loss(masks, mixture_spec, source_specs), rel=1e-5)


def test_psa_mask_loss_is_unchanged_by_swapping_sources():
  masks, mixture_spec, source_specs = _random_problem()
  loss = losses.psa_mask_loss(masks, mixture_spec, source_specs)
  swapped = losses.psa_mask_loss(masks, mixture_spec, source_specs[:, ::-1])
  assert float(swapped) == pytest.approx(float(loss), rel=1e-6)


def test_psa_mask_loss_is_zero_for_ideal_truncated_psa_masks():
  _, mixture_spec, source_specs = _random_problem()
  targets = losses.truncated_phase_sensitive_target(mixture_spec, source_specs)
  ideal_masks = targets / np.abs(mixture_spec)[:, None]
  assert np.all((ideal_masks >= 0) & (ideal_masks <= 1 + 1e-6))
  assert losses.psa_mask_loss(
      ideal_masks[:, ::-1], mixture_spec, source_specs) == pytest.approx(
          0.0, abs=1e-6)


def test_truncated_target_clips_to_zero_and_mixture_magnitude():
  mixture_spec = jnp.array([[1.0 + 0j]])
  # In phase and larger than the mixture; in opposite phase; in quadrature.
  source_specs = jnp.array([[[3.0 + 0j]], [[-2.0 + 0j]], [[0.5j]]])
  targets = losses.truncated_phase_sensitive_target(mixture_spec, source_specs)
  np.testing.assert_allclose(targets[:, 0, 0], [1.0, 0.0, 0.0], atol=1e-6)


def test_permutation_invariant_picks_the_cheapest_assignment():
  pairwise_losses = jnp.array([[[1.0, 5.0], [7.0, 2.0]],
                               [[5.0, 1.0], [2.0, 7.0]]])
  np.testing.assert_allclose(
      losses.permutation_invariant(pairwise_losses), [1.5, 1.5])


def test_permutation_invariant_handles_three_sources():
  pairwise_losses = jnp.array([[9.0, 9.0, 1.0],
                               [2.0, 9.0, 9.0],
                               [9.0, 3.0, 9.0]])
  assert losses.permutation_invariant(pairwise_losses) == pytest.approx(2.0)


def test_scores_by_permutation_accepts_numpy_arrays():
  pairwise_scores = np.array([[1.0, 2.0], [3.0, 4.0]])
  np.testing.assert_array_equal(
      losses.scores_by_permutation(pairwise_scores), [[1.0, 4.0], [2.0, 3.0]])
