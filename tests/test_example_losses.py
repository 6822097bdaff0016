"""Tests for examples/flax_separation/losses.py."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from examples.flax_separation import losses


def _random_problem(batch=3, sources=2, frames=5, freqs=7, seed=0):
  rng = np.random.default_rng(seed)
  source_specs = rng.standard_normal(
    (batch, sources, frames, freqs)
  ) + 1j * rng.standard_normal((batch, sources, frames, freqs))
  mixture_spec = source_specs.sum(axis=1)
  masks = rng.uniform(size=(batch, sources, frames, freqs))
  return (
    masks.astype(np.float32),
    mixture_spec.astype(np.complex64),
    source_specs.astype(np.complex64),
  )


def _reference_psa_loss(masks, mixture_spec, source_specs):
  batch_size, num_sources = masks.shape[:2]
  per_example = []
  for b in range(batch_size):
    mixture_magnitude = np.abs(mixture_spec[b])
    targets = []
    for c in range(num_sources):
      projection = np.abs(source_specs[b, c]) * np.cos(
        np.angle(source_specs[b, c]) - np.angle(mixture_spec[b])
      )
      targets.append(np.minimum(np.maximum(projection, 0.0), mixture_magnitude))
    permutation_losses = []
    for permutation in itertools.permutations(range(num_sources)):
      permutation_losses.append(
        np.mean(
          [
            np.mean(np.abs(masks[b, c] * mixture_magnitude - targets[target]))
            for c, target in enumerate(permutation)
          ]
        )
      )
    per_example.append(min(permutation_losses))
  return np.mean(per_example)


@pytest.mark.parametrize('num_sources', [2, 3])
def test_psa_mask_loss_matches_numpy_reference(num_sources):
  masks, mixture_spec, source_specs = _random_problem(sources=num_sources)
  loss = losses.psa_mask_loss(masks, mixture_spec, source_specs)
  assert loss == pytest.approx(
    _reference_psa_loss(masks, mixture_spec, source_specs), rel=1e-5
  )


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
    ideal_masks[:, ::-1], mixture_spec, source_specs
  ) == pytest.approx(0.0, abs=1e-6)


def test_truncated_target_matches_numpy_angles_including_silent_bins():
  _, mixture_spec, source_specs = _random_problem(frames=40)
  silent = np.random.default_rng(1).uniform(size=mixture_spec.shape) < 0.2
  mixture_spec = np.where(silent, 0, mixture_spec).astype(np.complex64)
  projection = np.abs(source_specs) * np.cos(
    np.angle(source_specs) - np.angle(mixture_spec)[:, None]
  )
  expected = np.clip(projection, 0.0, np.abs(mixture_spec)[:, None])
  targets = losses.truncated_phase_sensitive_target(mixture_spec, source_specs)
  np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-6)
  assert np.all(
    np.asarray(targets)[np.broadcast_to(silent[:, None], targets.shape)] == 0
  )


def test_truncated_target_clips_to_zero_and_mixture_magnitude():
  mixture_spec = jnp.array([[1.0 + 0j]])
  # In phase and larger than the mixture; in opposite phase; in quadrature.
  source_specs = jnp.array([[[3.0 + 0j]], [[-2.0 + 0j]], [[0.5j]]])
  targets = losses.truncated_phase_sensitive_target(mixture_spec, source_specs)
  np.testing.assert_allclose(targets[:, 0, 0], [1.0, 0.0, 0.0], atol=1e-6)


def test_permutation_invariant_picks_the_cheapest_assignment():
  pairwise_losses = jnp.array(
    [[[1.0, 5.0], [7.0, 2.0]], [[5.0, 1.0], [2.0, 7.0]]]
  )
  np.testing.assert_allclose(
    losses.permutation_invariant(pairwise_losses), [1.5, 1.5]
  )


def test_permutation_invariant_handles_three_sources():
  pairwise_losses = jnp.array(
    [[9.0, 9.0, 1.0], [2.0, 9.0, 9.0], [9.0, 3.0, 9.0]]
  )
  assert losses.permutation_invariant(pairwise_losses) == pytest.approx(2.0)


def test_scores_by_permutation_accepts_numpy_arrays():
  pairwise_scores = np.array([[1.0, 2.0], [3.0, 4.0]])
  np.testing.assert_array_equal(
    losses.scores_by_permutation(pairwise_scores), [[1.0, 4.0], [2.0, 3.0]]
  )


def _random_embeddings(batch=2, frames=3, freqs=4, embedding_dim=5, seed=1):
  rng = np.random.default_rng(seed)
  embeddings = rng.standard_normal((batch, frames, freqs, embedding_dim))
  embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True)
  return embeddings.astype(np.float32)


def _reference_clustering_inputs(embeddings, mixture_spec, source_specs, b):
  """One mixture's flattened `V` [N, D], one-hot `Y` [N, C] and `w` [N]."""
  num_sources = source_specs.shape[1]
  embedding_dim = embeddings.shape[-1]
  v = np.asarray(embeddings[b], np.float64).reshape(-1, embedding_dim)
  dominant = np.argmax(np.abs(source_specs[b]), axis=0).reshape(-1)
  y = np.eye(num_sources)[dominant]
  magnitude = np.abs(mixture_spec[b]).reshape(-1).astype(np.float64)
  return v, y, magnitude / magnitude.sum()


def _reference_dc_loss(embeddings, mixture_spec, source_specs):
  """The affinity form, with the bins x bins affinity matrices."""
  per_example = []
  for b in range(embeddings.shape[0]):
    v, y, w = _reference_clustering_inputs(
      embeddings, mixture_spec, source_specs, b
    )
    affinity_error = v @ v.T - y @ y.T
    per_example.append(np.sum(np.outer(w, w) * affinity_error**2))
  return np.mean(per_example)


def _reference_wkm_loss(embeddings, mixture_spec, source_specs):
  """Weighted k-means scatter of the whitened embeddings about Y's clusters."""
  per_example = []
  for b in range(embeddings.shape[0]):
    v, y, w = _reference_clustering_inputs(
      embeddings, mixture_spec, source_specs, b
    )
    eigenvalues, eigenvectors = np.linalg.eigh(v.T @ (w[:, None] * v))
    whitened = v @ eigenvectors @ np.diag(eigenvalues**-0.5) @ eigenvectors.T
    scatter = 0.0
    for c in range(y.shape[1]):
      members = y[:, c] == 1
      centroid = np.average(whitened[members], axis=0, weights=w[members])
      scatter += np.sum(
        w[members] * np.sum((whitened[members] - centroid) ** 2, axis=-1)
      )
    per_example.append(scatter)
  return np.mean(per_example)


def _reference_snr_loss(estimates, sources):
  per_example = []
  for estimate, target in zip(estimates, sources):
    per_permutation = []
    for permutation in itertools.permutations(range(len(target))):
      per_permutation.append(
        np.mean(
          [
            -10
            * np.log10(
              np.sum(target[t] ** 2) / np.sum((target[t] - estimate[e]) ** 2)
            )
            for e, t in enumerate(permutation)
          ]
        )
      )
    per_example.append(min(per_permutation))
  return np.mean(per_example)


@pytest.mark.parametrize('num_sources', [2, 3])
def test_deep_clustering_loss_matches_explicit_affinity_form(num_sources):
  _, mixture_spec, source_specs = _random_problem(
    batch=2, sources=num_sources, frames=3, freqs=4
  )
  embeddings = _random_embeddings()
  loss = losses.deep_clustering_loss(embeddings, mixture_spec, source_specs)
  assert loss == pytest.approx(
    _reference_dc_loss(embeddings, mixture_spec, source_specs), rel=1e-4
  )


def test_deep_clustering_loss_is_zero_for_one_hot_embeddings_of_y():
  _, mixture_spec, source_specs = _random_problem(frames=3, freqs=4)
  dominant = np.argmax(np.abs(source_specs), axis=1)
  embeddings = np.eye(5, dtype=np.float32)[dominant]
  assert losses.deep_clustering_loss(
    embeddings, mixture_spec, source_specs
  ) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize('num_sources', [2, 3])
def test_whitened_kmeans_loss_matches_whitened_kmeans_scatter(num_sources):
  _, mixture_spec, source_specs = _random_problem(
    batch=2, sources=num_sources, frames=3, freqs=4
  )
  embeddings = _random_embeddings()
  loss = losses.whitened_kmeans_loss(
    embeddings, mixture_spec, source_specs, ridge=0.0
  )
  assert loss == pytest.approx(
    _reference_wkm_loss(embeddings, mixture_spec, source_specs), rel=1e-4
  )


def test_whitened_kmeans_default_ridge_barely_changes_the_loss():
  _, mixture_spec, source_specs = _random_problem(frames=3, freqs=4)
  embeddings = _random_embeddings(batch=3)
  exact = losses.whitened_kmeans_loss(
    embeddings, mixture_spec, source_specs, ridge=0.0
  )
  ridged = losses.whitened_kmeans_loss(embeddings, mixture_spec, source_specs)
  assert float(ridged) == pytest.approx(float(exact), rel=1e-3)


def test_whitened_kmeans_loss_is_finite_with_a_silent_source():
  _, mixture_spec, source_specs = _random_problem(frames=3, freqs=4)
  source_specs[:, 1] = 0.0
  mixture_spec = source_specs.sum(axis=1)
  embeddings = _random_embeddings(batch=3)
  assert np.isfinite(
    losses.whitened_kmeans_loss(embeddings, mixture_spec, source_specs)
  )


def test_chimera_loss_weights_mask_inference_and_whitened_kmeans():
  masks, mixture_spec, source_specs = _random_problem(
    batch=2, frames=3, freqs=4
  )
  embeddings = _random_embeddings()
  expected = 0.75 * _reference_psa_loss(
    masks, mixture_spec, source_specs
  ) + 0.25 * _reference_wkm_loss(embeddings, mixture_spec, source_specs)
  assert losses.chimera_loss(
    masks, embeddings, mixture_spec, source_specs, alpha=0.75
  ) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize('num_sources', [2, 3])
def test_snr_loss_matches_numpy_reference(num_sources):
  rng = np.random.default_rng(0)
  sources = rng.standard_normal((3, num_sources, 50)).astype(np.float32)
  estimates = (
    sources[:, ::-1] + 0.3 * rng.standard_normal(sources.shape)
  ).astype(np.float32)
  assert losses.snr_loss(estimates, sources) == pytest.approx(
    _reference_snr_loss(estimates, sources), rel=1e-4
  )


def test_snr_loss_is_unchanged_by_swapping_sources():
  rng = np.random.default_rng(1)
  sources = rng.standard_normal((3, 2, 50)).astype(np.float32)
  estimates = rng.standard_normal((3, 2, 50)).astype(np.float32)
  assert float(losses.snr_loss(estimates, sources[:, ::-1])) == pytest.approx(
    float(losses.snr_loss(estimates, sources)), rel=1e-6
  )


def test_magnitude_ratio_weights_sum_to_one_per_mixture():
  _, mixture_spec, _ = _random_problem()
  weights = losses.magnitude_ratio_weights(mixture_spec)
  np.testing.assert_allclose(weights.sum(axis=(-2, -1)), 1.0, rtol=1e-6)
