"""Short-time Fourier transform used by the separation example.

The analysis settings follow the AutoClip paper's mask-inference setup for
8 kHz speech: a 32 ms square-root Hann window (256 samples), an 8 ms hop
(64 samples), and therefore 129 frequency bins. The square-root Hann window is
used for both analysis and synthesis, so their product is a Hann window whose
overlap-add at 75% overlap is constant, and `istft` inverts `stft` exactly.

All functions are written in `jax.numpy`, are `jax.jit`-compatible (the only
static quantities are array shapes), and broadcast over leading batch axes.

References:
  Seetharaman, Wichern, Pardo & Le Roux, `AutoClip: Adaptive Gradient Clipping
  for Source Separation Networks <https://arxiv.org/abs/2007.14469>`_, 2020.
"""

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 8000
WINDOW_LENGTH = 256
HOP_LENGTH = 64
NUM_FREQUENCIES = WINDOW_LENGTH // 2 + 1

# Half a window of zeros at both ends centres the first frame on sample 0 and
# the last frame within a hop of the last sample, so every sample lies under at
# least two frames with non-zero window weight and the edges reconstruct too.
_EDGE_PADDING = WINDOW_LENGTH // 2


def sqrt_hann_window() -> np.ndarray:
  """Returns the periodic square-root Hann window of `WINDOW_LENGTH` samples."""
  n = np.arange(WINDOW_LENGTH)
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / WINDOW_LENGTH)
  return np.sqrt(hann).astype(np.float32)


def num_frames(num_samples: int) -> int:
  """Returns how many STFT frames `stft` produces for `num_samples` samples."""
  return 1 + num_samples // HOP_LENGTH


def _padded_length(frame_count: int) -> int:
  """Returns the length of the padded signal that `frame_count` frames span."""
  return HOP_LENGTH * (frame_count - 1) + WINDOW_LENGTH


def _frame_indices(frame_count: int) -> np.ndarray:
  """Returns the `[frames, WINDOW_LENGTH]` sample index of every frame entry."""
  starts = HOP_LENGTH * np.arange(frame_count)[:, None]
  return starts + np.arange(WINDOW_LENGTH)[None, :]


def stft(waveform: jax.Array) -> jax.Array:
  """Computes the short-time Fourier transform of a batch of waveforms.

  Args:
    waveform: real array `[..., samples]`.

  Returns:
    A complex64 array `[..., num_frames(samples), NUM_FREQUENCIES]`. Frame `t`
    is centred on sample `t * HOP_LENGTH`.
  """
  waveform = jnp.asarray(waveform, jnp.float32)
  frame_count = num_frames(waveform.shape[-1])
  right_padding = (
    _padded_length(frame_count) - _EDGE_PADDING - waveform.shape[-1]
  )
  padding = [(0, 0)] * (waveform.ndim - 1) + [(_EDGE_PADDING, right_padding)]
  padded = jnp.pad(waveform, padding)
  frames = padded[..., _frame_indices(frame_count)] * sqrt_hann_window()
  return jnp.fft.rfft(frames, n=WINDOW_LENGTH, axis=-1).astype(jnp.complex64)


def _overlap_add(frames: jax.Array) -> jax.Array:
  """Sums `[..., frames, WINDOW_LENGTH]` windows at their hop positions."""
  frame_count = frames.shape[-2]
  output = jnp.zeros(
    frames.shape[:-2] + (_padded_length(frame_count),), frames.dtype
  )
  return output.at[..., _frame_indices(frame_count)].add(frames)


def _squared_window_sum(frame_count: int) -> np.ndarray:
  """Returns the overlap-added squared window that `istft` divides by.

  It depends only on the (static) frame count, so it is computed in NumPy
  at trace time: as a constant scatter-add in the graph, XLA would fold it
  during every compilation, about a second for 8 s of audio.
  """
  indices = _frame_indices(frame_count)
  window_sum = np.zeros(_padded_length(frame_count), np.float32)
  np.add.at(
    window_sum, indices, np.broadcast_to(sqrt_hann_window() ** 2, indices.shape)
  )
  return window_sum


def istft(spectrogram: jax.Array, length: int) -> jax.Array:
  """Inverts `stft` by weighted overlap-add.

  Each frame is windowed again after the inverse FFT, and the sum is divided by
  the overlap-added squared window, which makes `istft(stft(x), len(x)) == x`
  up to float32 rounding, including at the edges.

  Args:
    spectrogram: complex array `[..., frames, NUM_FREQUENCIES]`.
    length: number of samples of the waveform that `stft` was given.

  Returns:
    A float32 array `[..., length]`.
  """
  frames = (
    jnp.fft.irfft(spectrogram, n=WINDOW_LENGTH, axis=-1) * sqrt_hann_window()
  )
  signal = _overlap_add(frames.astype(jnp.float32))
  window_sum = _squared_window_sum(spectrogram.shape[-2])
  # Cut the padding first: its first sample has a window sum of exactly 0,
  # and dividing there would make every gradient through istft NaN. Where
  # samples are kept the sum is 2 inside and more than 0.5 at the edges.
  kept = slice(_EDGE_PADDING, _EDGE_PADDING + length)
  return signal[..., kept] / window_sum[kept]


def apply_masks(
  masks: jax.Array, mixture_spectrogram: jax.Array, length: int
) -> jax.Array:
  """Masks the mixture, keeps its phase, and inverts the STFT.

  Args:
    masks: `[batch, sources, frames, NUM_FREQUENCIES]`.
    mixture_spectrogram: complex `[batch, frames, NUM_FREQUENCIES]`.
    length: number of samples of the mixture.

  Returns:
    `[batch, sources, length]`, one waveform per mask.
  """
  return istft(masks * mixture_spectrogram[:, None], length)


def log_magnitude(spectrogram: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Returns `log(|spectrogram| + eps)`, the network's input features.

  Args:
    spectrogram: complex array of any shape.
    eps: floor that keeps silent bins finite.

  Returns:
    A real array of the same shape.
  """
  return jnp.log(jnp.abs(spectrogram) + eps)
