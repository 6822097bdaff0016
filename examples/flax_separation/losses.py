"""Training losses for the separation example.

References:
  Seetharaman, Wichern, Pardo & Le Roux, `AutoClip: Adaptive Gradient Clipping
  for Source Separation Networks <https://arxiv.org/abs/2007.14469>`_, 2020
  (eq. 4).

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
    mixture_spec: jax.Array, source_specs: jax.Array) -> jax.Array:
  """Returns `T_0^{|X|}(|S_c| cos(angle(S_c) - angle(X)))`.

  The phase-sensitive approximation projects each source onto the mixture's
  phase, and truncation to `[0, |X|]` makes it reachable by a mask in [0, 1].

  Args:
    mixture_spec: complex `[..., frames, freqs]`.
    source_specs: complex `[..., sources, frames, freqs]`.

  Returns:
    Real `[..., sources, frames, freqs]`.
  """
  mixture_magnitude = jnp.abs(mixture_spec)[..., None, :, :]
  phase_difference = (
      jnp.angle(source_specs) - jnp.angle(mixture_spec)[..., None, :, :])
  projection = jnp.abs(source_specs) * jnp.cos(phase_difference)
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
      jnp.abs(estimates[:, :, None] - targets[:, None, :]), axis=(-2, -1))
  return jnp.mean(permutation_invariant(pairwise_losses))
