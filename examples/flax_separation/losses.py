"""Training losses for the separation example: AutoClip's eqs. 4 to 8.

The five losses of the AutoClip experiments: mask inference `psa_mask_loss`
(L_MI, eq. 4), deep clustering `deep_clustering_loss` (L_DC, eq. 5), whitened
k-means `whitened_kmeans_loss` (L_WKM, eq. 6), their Chimera combination
`chimera_loss` (L_MI+WKM, eq. 7) and the waveform `snr_loss` (L_SNR, eq. 8).

References:
  Seetharaman, Wichern, Pardo & Le Roux, `AutoClip: Adaptive Gradient Clipping
  for Source Separation Networks <https://arxiv.org/abs/2007.14469>`_, 2020.

  Hershey, Chen, Le Roux & Watanabe, `Deep clustering: Discriminative
  embeddings for segmentation and separation
  <https://arxiv.org/abs/1508.04306>`_, ICASSP 2016.

  Wang, Le Roux & Hershey, `Alternative Objective Functions for Deep Clustering
  <https://doi.org/10.1109/ICASSP.2018.8462507>`_, ICASSP 2018.

  Kolbaek, Yu, Tan & Jensen, `Multi-talker Speech Separation with
  Utterance-level Permutation Invariant Training of Deep Recurrent Neural
  Networks <https://arxiv.org/abs/1703.06284>`_, 2017.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np


def scores_by_permutation(pairwise_scores):
  """Lists the paired scores of every one-to-one matching of two sets.

  Works on NumPy and JAX arrays alike (it only indexes), so the training loss
  and the host-side metrics share it.

  Args:
    pairwise_scores: `[..., C, C]`; entry `[..., i, j]` scores item `i` of one
      set (e.g. an estimate) against item `j` of the other (e.g. a target).

  Returns:
    `[..., C!, C]`: for the `p`-th ordering `perm` of `range(C)` (in
    `itertools.permutations` order), entry `[..., p, i]` is
    `pairwise_scores[..., i, perm[i]]`.
  """
  num_sources = pairwise_scores.shape[-1]
  permutations = np.array(list(itertools.permutations(range(num_sources))))
  return pairwise_scores[..., np.arange(num_sources), permutations]


def permutation_invariant(pairwise_losses: jax.Array) -> jax.Array:
  """Returns the loss of the best assignment of estimates to targets.

  Args:
    pairwise_losses: `[..., C, C]`; entry `[..., i, j]` is the loss of estimate
      `i` against target `j`.

  Returns:
    `[...]`: the smallest, over the `C!` permutations, mean over sources of the
    paired losses.
  """
  losses = scores_by_permutation(pairwise_losses)
  return jnp.min(jnp.mean(losses, axis=-1), axis=-1)


def truncated_phase_sensitive_target(
  mixture_spec: jax.Array, source_specs: jax.Array
) -> jax.Array:
  """Returns `T_0^{|X|}(|S_c| cos(angle(S_c) - angle(X)))`.

  The phase-sensitive approximation projects each source onto the mixture's
  phase, and truncation to `[0, |X|]` makes it reachable by a mask in [0, 1].

  Args:
    mixture_spec: complex `[..., frames, freqs]`.
    source_specs: complex `[..., sources, frames, freqs]`.

  Returns:
    Real `[..., sources, frames, freqs]`.
  """
  mixture_spec = mixture_spec[..., None, :, :]
  mixture_magnitude = jnp.abs(mixture_spec)
  # |S| cos(angle(S) - angle(X)) = Re(S conj(X)) / |X|, without the atan2s of
  # `jnp.angle` (7% of a CPU training step); where |X| = 0 the clip gives 0.
  projection = jnp.real(source_specs * jnp.conj(mixture_spec)) / jnp.maximum(
    mixture_magnitude, jnp.finfo(mixture_magnitude.dtype).tiny
  )
  return jnp.clip(projection, 0.0, mixture_magnitude)


def psa_mask_loss(
  masks: jax.Array, mixture_spec: jax.Array, source_specs: jax.Array
) -> jax.Array:
  """Permutation-invariant truncated phase-sensitive approximation L1 loss.

  This is the mask-inference loss `L_MI` of AutoClip (eq. 4), from Chimera++:
  for each source `c`, the L1 distance between the masked mixture magnitude
  `M_c |X|` and the truncated phase-sensitive target, averaged over
  time-frequency bins and sources, minimised over the assignment of masks to
  sources per example, and averaged over the batch.

  Args:
    masks: `[batch, sources, frames, freqs]` in [0, 1].
    mixture_spec: complex `[batch, frames, freqs]`.
    source_specs: complex `[batch, sources, frames, freqs]`.

  Returns:
    A scalar loss.
  """
  estimates = masks * jnp.abs(mixture_spec)[:, None]
  targets = truncated_phase_sensitive_target(mixture_spec, source_specs)
  pairwise_losses = jnp.mean(
    jnp.abs(estimates[:, :, None] - targets[:, None, :]), axis=(-2, -1)
  )
  return jnp.mean(permutation_invariant(pairwise_losses))


def ideal_binary_assignments(source_specs: jax.Array) -> jax.Array:
  """Returns the one-hot dominant source of every time-frequency bin, `Y`.

  Args:
    source_specs: complex `[batch, sources, frames, freqs]`.

  Returns:
    `[batch, frames, freqs, sources]`, 1 where a source has the largest
    magnitude (the first such source on ties), 0 elsewhere.
  """
  dominant = jnp.argmax(jnp.abs(source_specs), axis=1)
  return jax.nn.one_hot(dominant, source_specs.shape[1])


def magnitude_ratio_weights(mixture_spec: jax.Array) -> jax.Array:
  """Returns each bin's share of the mixture magnitude, `w = |X| / sum |X|`.

  These are the magnitude-ratio weights of Wang et al. (2018). They sum to one
  over each mixture's bins, which normalises the clustering losses for the
  number of time-frequency bins, and they make silent bins, whose assignment
  does not matter, count for (almost) nothing.

  Args:
    mixture_spec: complex `[batch, frames, freqs]`.

  Returns:
    `[batch, frames, freqs]`, non-negative, summing to one per mixture (all
    zeros for an all-zero mixture).
  """
  magnitude = jnp.abs(mixture_spec)
  total = jnp.sum(magnitude, axis=(-2, -1), keepdims=True)
  return magnitude / jnp.maximum(total, jnp.finfo(magnitude.dtype).tiny)


def _weighted_gram_matrices(embeddings, mixture_spec, source_specs):
  """Returns `V^T W V`, `V^T W Y` and `Y^T W Y` per mixture.

  With `W = diag(w)`, each is `[batch, ., .]`: `[D, D]`, `[D, C]`, `[C, C]`.
  Nothing of size bins x bins is formed.
  """
  weights = magnitude_ratio_weights(mixture_spec)
  assignments = ideal_binary_assignments(source_specs)
  vwv = jnp.einsum('btfd,btf,btfe->bde', embeddings, weights, embeddings)
  vwy = jnp.einsum('btfd,btf,btfc->bdc', embeddings, weights, assignments)
  ywy = jnp.einsum('btfc,btf,btfk->bck', assignments, weights, assignments)
  return vwv, vwy, ywy


def deep_clustering_loss(
  embeddings: jax.Array, mixture_spec: jax.Array, source_specs: jax.Array
) -> jax.Array:
  """Weighted deep clustering loss `L_DC` (AutoClip eq. 5).

  The affinity of the embeddings `V` ([bins, D], unit-norm rows) should match
  that of the ideal binary assignments `Y` ([bins, C]), on every pair of
  bins, weighted by magnitude ratios `w` (Wang et al. 2018):

    `||W^{1/2} (V V^T - Y Y^T) W^{1/2}||_F^2
       = ||V^T W V||_F^2 - 2 ||V^T W Y||_F^2 + ||Y^T W Y||_F^2`,

  computed on the right, with `[D, D]`, `[D, C]` and `[C, C]` matrices. With
  weights summing to one the loss lies in [0, 2] whatever the number of bins.
  It is invariant to the order of the sources, so needs no permutation search.

  Args:
    embeddings: `[batch, frames, freqs, D]`, unit norm per bin.
    mixture_spec: complex `[batch, frames, freqs]`.
    source_specs: complex `[batch, sources, frames, freqs]`.

  Returns:
    A scalar loss, the mean over the batch.
  """
  vwv, vwy, ywy = _weighted_gram_matrices(
    embeddings, mixture_spec, source_specs
  )
  per_mixture = (
    jnp.sum(vwv**2, axis=(-2, -1))
    - 2.0 * jnp.sum(vwy**2, axis=(-2, -1))
    + jnp.sum(ywy**2, axis=(-2, -1))
  )
  return jnp.mean(per_mixture)


def whitened_kmeans_loss(
  embeddings: jax.Array,
  mixture_spec: jax.Array,
  source_specs: jax.Array,
  ridge: float = 1e-4,
) -> jax.Array:
  """Weighted whitened k-means loss `L_WKM` (AutoClip eq. 6).

  The k-means objective of the whitened embeddings `V (V^T W V)^{-1/2}`
  clustered by the ideal binary assignments `Y`, with bin weights `w`
  (Wang et al. 2018):

    `D - tr((V^T W V)^{-1} V^T W Y (Y^T W Y)^{-1} Y^T W V)`,

  computed with `[D, D]` and `[C, C]` matrices. It lies in `[D - C, D]`.
  `ridge * I` is added to both matrices before they are solved against:
  `Y^T W Y` is singular when a source dominates no bin (a silent source in a
  training excerpt), and `V^T W V` nearly so when the embeddings span fewer
  than `D` directions. As `w` sums to one and the embeddings have unit norm,
  `tr(V^T W V) = 1`: the default ridge is 0.2% of its mean eigenvalue `1/D`
  for `D = 20`.

  Args:
    embeddings: `[batch, frames, freqs, D]`, unit norm per bin.
    mixture_spec: complex `[batch, frames, freqs]`.
    source_specs: complex `[batch, sources, frames, freqs]`.
    ridge: added to the diagonal of `V^T W V` and `Y^T W Y`.

  Returns:
    A scalar loss, the mean over the batch.
  """
  vwv, vwy, ywy = _weighted_gram_matrices(
    embeddings, mixture_spec, source_specs
  )
  embedding_dim, num_sources = vwy.shape[-2:]
  whitened = jnp.linalg.solve(vwv + ridge * jnp.eye(embedding_dim), vwy)
  cluster_sizes_inverse = jnp.linalg.inv(ywy + ridge * jnp.eye(num_sources))
  # tr(A B^T) = sum(A * B) for A = (V^T W V)^{-1} V^T W Y (Y^T W Y)^{-1}, with
  # (Y^T W Y)^{-1} symmetric, and B = V^T W Y.
  trace = jnp.sum((whitened @ cluster_sizes_inverse) * vwy, axis=(-2, -1))
  return jnp.mean(embedding_dim - trace)


def chimera_loss(
  masks: jax.Array,
  embeddings: jax.Array,
  mixture_spec: jax.Array,
  source_specs: jax.Array,
  alpha: float = 0.75,
) -> jax.Array:
  """Chimera loss `alpha L_MI + (1 - alpha) L_WKM` (AutoClip eq. 7).

  Args:
    masks: `[batch, sources, frames, freqs]` in [0, 1], from the mask head.
    embeddings: `[batch, frames, freqs, D]`, unit norm, from the embedding
      head.
    mixture_spec: complex `[batch, frames, freqs]`.
    source_specs: complex `[batch, sources, frames, freqs]`.
    alpha: weight of the mask-inference loss, 0.75 in the paper.

  Returns:
    A scalar loss.
  """
  return alpha * psa_mask_loss(masks, mixture_spec, source_specs) + (
    1.0 - alpha
  ) * whitened_kmeans_loss(embeddings, mixture_spec, source_specs)


def snr_loss(
  estimates: jax.Array, sources: jax.Array, eps: float = 1e-8
) -> jax.Array:
  """Permutation-invariant negative SNR of waveforms, `L_SNR` (eq. 8).

  `-10 log10(||s||^2 / ||s - s_hat||^2)` for each estimate `s_hat` and
  target `s`, averaged over sources under the best assignment of estimates to
  targets per example, and over the batch. Unlike SI-SDR, SNR is not scale
  invariant: the estimate must match the target's scale too.

  Args:
    estimates: `[batch, sources, samples]`.
    sources: `[batch, sources, samples]`.
    eps: added to both energies, which keeps a silent target's loss finite.

  Returns:
    A scalar loss in dB.
  """
  target_energy = jnp.sum(sources**2, axis=-1)[:, None, :]
  error_energy = jnp.sum(
    (sources[:, None, :, :] - estimates[:, :, None, :]) ** 2, axis=-1
  )
  pairwise_losses = -10.0 * jnp.log10(
    (target_energy + eps) / (error_energy + eps)
  )
  return jnp.mean(permutation_invariant(pairwise_losses))
