"""The five training losses of the AutoClip experiments, one entry each.

A loss decides more than what is minimised: which heads the network needs,
and how its output becomes masks when it separates. `LOSSES` says all of it
in one place, and the rest of the example (the model, the training step,
evaluation, the sweep's rows, the plots' axes) reads it from here; adding a
loss is one entry here, with its function in `losses.py`.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax

from examples.flax_separation import clustering
from examples.flax_separation import losses
from examples.flax_separation import models
from examples.flax_separation import spectral


class Targets(NamedTuple):
  """What a loss compares the network's `models.Estimates` with.

  Attributes:
    mixture_spectrogram: complex `[batch, frames, freqs]`.
    source_spectrograms: complex `[batch, 2, frames, freqs]`.
    sources: float32 `[batch, 2, samples]`, the reference waveforms.
  """

  mixture_spectrogram: jax.Array
  source_spectrograms: jax.Array
  sources: jax.Array


class Loss(NamedTuple):
  """One training loss and what it asks of the network.

  Attributes:
    title: its name in tables and on plot axes, as in the paper's Table 1.
    heads: the `models.HEADS` the network needs.
    loss_fn: `(estimates, targets, chimera_alpha) -> scalar`; only Chimera
      reads `chimera_alpha`, the weight of `L_MI` in it.
    masks_fn: `(estimates, mixture_spectrogram) -> masks [batch, 2, frames,
      freqs]`, how a trained network separates.
  """

  title: str
  heads: tuple[str, ...]
  loss_fn: Callable[[models.Estimates, Targets, float], jax.Array]
  masks_fn: Callable[[models.Estimates, jax.Array], jax.Array]


def _mask_head(estimates, mixture_spectrogram):
  del mixture_spectrogram  # The masks are the network's own.
  return estimates.masks


def _clustered_embeddings(estimates, mixture_spectrogram):
  return clustering.cluster_masks(estimates.embeddings, mixture_spectrogram)


def _mask_inference(estimates, targets, chimera_alpha):
  del chimera_alpha
  return losses.psa_mask_loss(
    estimates.masks, targets.mixture_spectrogram, targets.source_spectrograms
  )


def _deep_clustering(estimates, targets, chimera_alpha):
  del chimera_alpha
  return losses.deep_clustering_loss(
    estimates.embeddings,
    targets.mixture_spectrogram,
    targets.source_spectrograms,
  )


def _whitened_kmeans(estimates, targets, chimera_alpha):
  del chimera_alpha
  return losses.whitened_kmeans_loss(
    estimates.embeddings,
    targets.mixture_spectrogram,
    targets.source_spectrograms,
  )


def _chimera(estimates, targets, chimera_alpha):
  return losses.chimera_loss(
    estimates.masks,
    estimates.embeddings,
    targets.mixture_spectrogram,
    targets.source_spectrograms,
    chimera_alpha,
  )


def _snr(estimates, targets, chimera_alpha):
  del chimera_alpha
  return losses.snr_loss(
    spectral.apply_masks(
      estimates.masks, targets.mixture_spectrogram, targets.sources.shape[-1]
    ),
    targets.sources,
  )


# ``config.loss``: AutoClip's eqs. 4 to 8, in the order of its Table 1.
LOSSES = {
  'mi': Loss('Mask inference', ('masks',), _mask_inference, _mask_head),
  'dc': Loss(
    'Deep clustering', ('embeddings',), _deep_clustering, _clustered_embeddings
  ),
  'wkm': Loss(
    'Whitened k-means', ('embeddings',), _whitened_kmeans, _clustered_embeddings
  ),
  'chimera': Loss('Chimera', ('masks', 'embeddings'), _chimera, _mask_head),
  'snr': Loss('SNR', ('masks',), _snr, _mask_head),
}


def get(name: str) -> Loss:
  """Returns ``LOSSES[name]``.

  Raises:
    ValueError: if ``name`` is not a key of ``LOSSES``.
  """
  if name not in LOSSES:
    raise ValueError(
      f'config.loss must be one of {", ".join(LOSSES)}, got {name!r}'
    )
  return LOSSES[name]
