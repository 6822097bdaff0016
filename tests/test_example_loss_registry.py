"""Tests of the separation example's loss registry, at tiny sizes."""

from flax import nnx
import jax
import numpy as np
import pytest

from examples.flax_separation import loss_registry
from examples.flax_separation import models
from examples.flax_separation import spectral

NUM_SAMPLES = 640


def tiny_batch():
  sources = jax.random.normal(jax.random.key(0), (2, 2, NUM_SAMPLES))
  mixture = sources.sum(axis=1)
  mixture_spectrogram = spectral.stft(mixture)
  targets = loss_registry.Targets(
    mixture_spectrogram, spectral.stft(sources), sources
  )
  return spectral.log_magnitude(mixture_spectrogram), targets


@pytest.mark.parametrize('name', list(loss_registry.LOSSES))
def test_network_with_the_heads_a_loss_names_gives_its_loss_and_masks(name):
  loss = loss_registry.get(name)
  model = models.BLSTMNet(
    heads=loss.heads,
    hidden_size=4,
    num_layers=1,
    embedding_dim=3,
    rngs=nnx.Rngs(0),
  )
  features, targets = tiny_batch()
  estimates = model(features)
  value = loss.loss_fn(estimates, targets, 0.75)
  assert value.shape == () and np.isfinite(value)
  masks = loss.masks_fn(estimates, targets.mixture_spectrogram)
  assert masks.shape == (2, 2) + targets.mixture_spectrogram.shape[1:]


def test_unknown_loss_is_rejected_with_the_known_ones():
  with pytest.raises(
    ValueError,
    match=r'config.loss must be one of mi, dc, '
    r"wkm, chimera, snr, got 'pit'",
  ):
    loss_registry.get('pit')


@pytest.mark.parametrize('heads', [(), ('masks', 'spectrum')])
def test_network_rejects_unknown_heads(heads):
  with pytest.raises(ValueError, match='heads must be one or both of'):
    models.BLSTMNet(heads=heads, rngs=nnx.Rngs(0))
