"""Separation quality metrics, computed with NumPy on the host.

Evaluation scores whole utterances of varying length one at a time; under
`jax.jit` every new length would trigger a compilation, so these metrics use
NumPy (in float64) instead.

References:
  Le Roux, Wisdom, Erdogan & Hershey, `SDR - half-baked or well done?
  <https://arxiv.org/abs/1811.02508>`_, ICASSP 2019.
"""

import numpy as np

from examples.flax_separation import losses


def si_sdr(estimate, target, *, zero_mean: bool = True) -> np.ndarray:
  """Scale-invariant signal-to-distortion ratio in dB.

  The target is rescaled to best fit the estimate, and SI-SDR is the energy
  ratio of that scaled target to the remaining error.

  Args:
    estimate: `[..., samples]`.
    target: `[..., samples]`, broadcastable against `estimate`.
    zero_mean: subtract each signal's mean first, as in the paper's reference
      implementation.

  Returns:
    `[...]` SI-SDR in dB.
  """
  estimate = np.asarray(estimate, np.float64)
  target = np.asarray(target, np.float64)
  if zero_mean:
    estimate = estimate - estimate.mean(axis=-1, keepdims=True)
    target = target - target.mean(axis=-1, keepdims=True)
  scale = np.sum(estimate * target, axis=-1, keepdims=True) / np.sum(
    target**2, axis=-1, keepdims=True
  )
  scaled_target = scale * target
  distortion = estimate - scaled_target
  return 10.0 * np.log10(
    np.sum(scaled_target**2, axis=-1) / np.sum(distortion**2, axis=-1)
  )


def permutation_resolved_si_sdr(estimates, targets) -> np.ndarray:
  """SI-SDR of each target under the best assignment of estimates to targets.

  Args:
    estimates: `[..., sources, samples]`.
    targets: `[..., sources, samples]`.

  Returns:
    `[..., sources]`: SI-SDR of the estimate assigned to each target, using the
    assignment with the highest mean SI-SDR.
  """
  # Rows are targets, so the scores of each permutation come out in target
  # order.
  pairwise = si_sdr(
    np.asarray(estimates)[..., None, :, :], np.asarray(targets)[..., :, None, :]
  )
  scores = losses.scores_by_permutation(pairwise)
  best = np.argmax(scores.mean(axis=-1), axis=-1)
  return np.take_along_axis(scores, best[..., None, None], axis=-2)[..., 0, :]


def si_sdr_improvement(estimates, targets, mixture) -> np.ndarray:
  """SI-SDR gain of the permutation-resolved estimates over the mixture.

  Args:
    estimates: `[..., sources, samples]`.
    targets: `[..., sources, samples]`.
    mixture: `[..., samples]`.

  Returns:
    `[..., sources]`: permutation-resolved SI-SDR minus the SI-SDR of the
    mixture itself as an estimate of each target.
  """
  mixture_si_sdr = si_sdr(np.asarray(mixture)[..., None, :], targets)
  return permutation_resolved_si_sdr(estimates, targets) - mixture_si_sdr
