"""Tests for examples/flax_separation/spectral.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from examples.flax_separation import spectral


def _random_waveform(*shape):
  return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def test_stft_has_129_bins_and_one_frame_per_hop():
  spectrogram = spectral.stft(_random_waveform(8000))
  assert spectrogram.shape == (1 + 8000 // 64, 129)
  assert spectrogram.dtype == np.complex64


@pytest.mark.parametrize('num_samples', [1000, 1024, 8000, 8063])
def test_istft_inverts_stft_everywhere_including_edges(num_samples):
  waveform = _random_waveform(num_samples)
  reconstruction = spectral.istft(spectral.stft(waveform), num_samples)
  np.testing.assert_allclose(reconstruction, waveform, atol=1e-5)


def test_stft_and_istft_are_batched_over_leading_axes():
  waveforms = _random_waveform(2, 3, 1000)
  spectrograms = spectral.stft(waveforms)
  assert spectrograms.shape == (2, 3, 16, 129)
  np.testing.assert_allclose(
    spectrograms[1, 2], spectral.stft(waveforms[1, 2]), atol=1e-5
  )
  np.testing.assert_allclose(
    spectral.istft(spectrograms, 1000), waveforms, atol=1e-5
  )


@pytest.mark.parametrize('frame', [0, 1, 7, 15])
def test_stft_frame_matches_numpy_reference(frame):
  waveform = _random_waveform(1000)
  window = np.sqrt(scipy.signal.get_window('hann', 256, fftbins=True))
  padded = np.concatenate([np.zeros(128), waveform, np.zeros(256)])
  segment = padded[64 * frame : 64 * frame + 256]
  expected = np.fft.rfft(segment * window)
  np.testing.assert_allclose(
    spectral.stft(waveform)[frame], expected, rtol=1e-4, atol=1e-4
  )


def test_log_magnitude_of_silence_is_finite():
  features = spectral.log_magnitude(spectral.stft(np.zeros(512, np.float32)))
  assert np.all(np.isfinite(features))
  np.testing.assert_allclose(features, np.log(1e-8), rtol=1e-6)


def test_istft_gradient_is_finite():
  # The overlap-added window is 0 at the first padded sample; dividing there
  # before cutting the padding made every gradient through istft NaN.
  spectrogram = spectral.stft(jax.random.normal(jax.random.key(0), (2, 999)))
  gradient = jax.grad(lambda s: jnp.sum(jnp.abs(spectral.istft(s, 999)) ** 2))(
    spectrogram
  )
  assert np.all(np.isfinite(gradient))
