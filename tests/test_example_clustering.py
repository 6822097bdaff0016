"""Tests for examples/flax_separation/clustering.py."""

import jax.numpy as jnp
import numpy as np

from examples.flax_separation import clustering


def _two_blobs(seed=0, per_blob=30):
  rng = np.random.default_rng(seed)
  centres = np.array([[3.0, 0.0, 1.0], [-2.0, 4.0, -1.0]])
  labels = np.repeat([0, 1], per_blob)
  rng.shuffle(labels)
  points = centres[labels] + 0.3 * rng.standard_normal((2 * per_blob, 3))
  return points.astype(np.float32), labels


def _same_partition(assignments, labels):
  return np.array_equal(assignments, labels) or np.array_equal(
    assignments, 1 - labels
  )


def test_kmeans_recovers_two_well_separated_clusters():
  points, labels = _two_blobs()
  assignments, centroids = clustering.weighted_kmeans(
    points, np.ones(len(points), np.float32), num_clusters=2
  )
  assert _same_partition(np.asarray(assignments), labels)
  for cluster in range(2):
    np.testing.assert_allclose(
      centroids[cluster],
      points[assignments == cluster].mean(axis=0),
      rtol=1e-5,
      atol=1e-5,
    )


def test_weightless_outlier_is_not_a_seed_and_does_not_move_centroids():
  points, labels = _two_blobs(seed=1)
  outlier = np.array([[100.0, 100.0, 100.0]], np.float32)
  weights = np.concatenate([np.ones(len(points)), [0.0]]).astype(np.float32)
  assignments, centroids = clustering.weighted_kmeans(
    np.concatenate([points, outlier]), weights, num_clusters=2
  )
  assert _same_partition(np.asarray(assignments[:-1]), labels)
  assert np.all(np.abs(centroids) < 10)


def test_farthest_point_seeds_start_from_the_heaviest_point():
  points = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]], np.float32)
  weights = np.array([1.0, 3.0, 1.0], np.float32)
  np.testing.assert_array_equal(
    clustering.farthest_point_centroids(points, weights, 2),
    [[1.0, 0.0], [5.0, 0.0]],
  )


def test_cluster_masks_are_binary_and_partition_every_bin():
  points, labels = _two_blobs(per_blob=12)
  embeddings = jnp.asarray(points.reshape(1, 4, 6, 3))
  mixture_spec = jnp.ones((1, 4, 6), jnp.complex64)
  masks = np.asarray(clustering.cluster_masks(embeddings, mixture_spec))
  assert masks.shape == (1, 2, 4, 6)
  np.testing.assert_array_equal(masks.sum(axis=1), 1.0)
  assert _same_partition(masks[0, 1].reshape(-1).astype(int), labels)
