"""Weighted k-means that turns deep-clustering embeddings into binary masks.

A network trained with `L_DC` or `L_WKM` separates by clustering its
time-frequency embeddings into one cluster per source; each cluster is a binary
mask. Everything here has static shapes and a fixed number of iterations, so
it runs under `jax.jit` and `jax.vmap`.

Each bin counts in proportion to its share of the mixture magnitude (the
magnitude-ratio weights the losses use), so silent bins, whose embeddings the
losses leave unconstrained, do not move the centroids; they are still
assigned to their nearest centroid, so the masks cover every bin.

References:
  Hershey, Chen, Le Roux & Watanabe, `Deep clustering: Discriminative
  embeddings for segmentation and separation
  <https://arxiv.org/abs/1508.04306>`_, ICASSP 2016.

  Arthur & Vassilvitskii, `k-means++: The Advantages of Careful Seeding
  <https://dl.acm.org/doi/10.5555/1283383.1283494>`_, SODA 2007 (the seeding
  here is its deterministic, greedy counterpart).
"""

import jax
import jax.numpy as jnp

from examples.flax_separation import losses


def _squared_distances(points, centroids):
  """`[N, D]` and `[K, D]` to `[N, K]` squared Euclidean distances."""
  return (
    jnp.sum(points**2, axis=-1, keepdims=True)
    - 2.0 * points @ centroids.T
    + jnp.sum(centroids**2, axis=-1)
  )


def farthest_point_centroids(
  points: jax.Array, weights: jax.Array, num_clusters: int
) -> jax.Array:
  """Deterministic seeding: the heaviest point, then the farthest ones.

  The first centroid is the point of largest weight; each next one is the
  point that maximises its weight times its squared distance to the nearest
  centroid so far, so a far but weightless outlier is never chosen.

  Args:
    points: `[N, D]`.
    weights: `[N]`, non-negative.
    num_clusters: number of centroids `K`.

  Returns:
    `[K, D]` initial centroids.
  """
  centroids = [points[jnp.argmax(weights)]]
  for _ in range(num_clusters - 1):
    nearest = jnp.min(_squared_distances(points, jnp.stack(centroids)), axis=-1)
    centroids.append(points[jnp.argmax(weights * nearest)])
  return jnp.stack(centroids)


def weighted_kmeans(
  points: jax.Array,
  weights: jax.Array,
  num_clusters: int,
  num_iterations: int = 20,
) -> tuple[jax.Array, jax.Array]:
  """Lloyd's k-means with weighted points and a fixed number of iterations.

  Each iteration assigns every point to its nearest centroid and moves each
  centroid to the weighted mean of its points; a centroid with no weight
  assigned stays where it is.

  Args:
    points: `[N, D]`.
    weights: `[N]`, non-negative.
    num_clusters: number of clusters `K`.
    num_iterations: Lloyd iterations after `farthest_point_centroids`.

  Returns:
    `(assignments, centroids)`: the `[N]` cluster index of every point, its
    nearest final centroid, and the `[K, D]` centroids.
  """

  def assign(centroids):
    return jnp.argmin(_squared_distances(points, centroids), axis=-1)

  def update(_, centroids):
    membership = (
      jax.nn.one_hot(assign(centroids), num_clusters) * weights[:, None]
    )
    mass = jnp.sum(membership, axis=0)[:, None]
    means = membership.T @ points / jnp.where(mass > 0, mass, 1.0)
    return jnp.where(mass > 0, means, centroids)

  centroids = jax.lax.fori_loop(
    0,
    num_iterations,
    update,
    farthest_point_centroids(points, weights, num_clusters),
  )
  return assign(centroids), centroids


def cluster_masks(
  embeddings: jax.Array, mixture_spec: jax.Array, num_sources: int = 2
) -> jax.Array:
  """Binary masks from k-means on each mixture's embeddings.

  Args:
    embeddings: `[batch, frames, freqs, D]`.
    mixture_spec: complex `[batch, frames, freqs]`; its magnitude ratios
      weight the bins.
    num_sources: number of clusters, one mask each.

  Returns:
    `[batch, num_sources, frames, freqs]` masks of zeros and ones that sum to
    one over sources; the order of the sources is arbitrary.
  """
  batch_size, frames, freqs, embedding_dim = embeddings.shape
  weights = losses.magnitude_ratio_weights(mixture_spec)
  assignments, _ = jax.vmap(weighted_kmeans, in_axes=(0, 0, None))(
    embeddings.reshape(batch_size, frames * freqs, embedding_dim),
    weights.reshape(batch_size, frames * freqs),
    num_sources,
  )
  masks = jax.nn.one_hot(assignments, num_sources, axis=1)
  return masks.reshape(batch_size, num_sources, frames, freqs)
