"""BLSTM mask-inference and embedding networks for two-speaker separation.

References:
  Seetharaman, Wichern, Pardo & Le Roux, `AutoClip: Adaptive Gradient Clipping
  for Source Separation Networks <https://arxiv.org/abs/2007.14469>`_, 2020.

  Wang, Le Roux & Hershey, `Alternative Objective Functions for Deep Clustering
  <https://doi.org/10.1109/ICASSP.2018.8462507>`_, ICASSP 2018.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from examples.flax_separation import spectral

_FORWARD, _BACKWARD = 0, 1


def _gate_scale(hidden_size, dtype):
  """`s` such that the gates' activations are `s * tanh(s * x) + 1 - s`.

  Since `sigmoid(x) = (1 + tanh(x / 2)) / 2`, the scale is 1/2 for the
  input, forget and output gates and 1 for the cell gate: all four gates are
  one `tanh` over one contiguous array, which XLA vectorises. Four
  activations over slices of the gates were 5x slower on CPU.
  """
  halves = jnp.full((hidden_size,), 0.5, dtype)
  return jnp.concatenate([halves, halves, jnp.ones_like(halves), halves])


def _lstm_cell(cell, gates, scale):
  """One LSTM step from pre-activation gates; also returns the activations."""
  activations = scale * jnp.tanh(scale * gates) + (1.0 - scale)
  input_gate, forget_gate, cell_gate, output_gate = jnp.split(
    activations, 4, axis=-1
  )
  cell = forget_gate * cell + input_gate * cell_gate
  hidden = output_gate * jnp.tanh(cell)
  return cell, hidden, activations


def _lstm_recurrence_with_residuals(input_gates, recurrent_kernel):
  """Runs the recurrence; returns hidden states and what the VJP needs."""
  hidden_size = recurrent_kernel.shape[-2]
  zeros = jnp.zeros(input_gates.shape[1:-1] + (hidden_size,), input_gates.dtype)
  scale = _gate_scale(hidden_size, input_gates.dtype)

  def step(carry, input_gates_t):
    cell, hidden = carry
    gates = input_gates_t + jnp.einsum('dbh,dhg->dbg', hidden, recurrent_kernel)
    cell, hidden, activations = _lstm_cell(cell, gates, scale)
    return (cell, hidden), (cell, hidden, activations)

  _, (cells, hiddens, activations) = jax.lax.scan(
    step, (zeros, zeros), input_gates
  )
  return hiddens, (cells, hiddens, activations, recurrent_kernel)


@jax.custom_vjp
def lstm_recurrence(input_gates: jax.Array, recurrent_kernel: jax.Array):
  """Runs several independent LSTMs in lockstep from zero initial state.

  Args:
    input_gates: `[frames, directions, batch, 4 * hidden]`, the input
      projection plus bias of every frame, gates ordered (i, f, g, o).
    recurrent_kernel: `[directions, hidden, 4 * hidden]`.

  Returns:
    Hidden states `[frames, directions, batch, hidden]`.
  """
  return _lstm_recurrence_with_residuals(input_gates, recurrent_kernel)[0]


def _lstm_recurrence_backward(residuals, hidden_grads):
  """Backpropagates through time, leaving the kernel gradient to one matmul.

  Differentiating the scan automatically would add the `[hidden, 4 * hidden]`
  kernel gradient into the loop carry at every step; instead the loop only
  emits each step's gate gradients and the kernel gradient is one large matmul
  over all frames afterwards.
  """
  cells, hiddens, activations, recurrent_kernel = residuals
  initial_state = jnp.zeros_like(cells[:1])
  previous_cells = jnp.concatenate([initial_state, cells[:-1]])
  previous_hiddens = jnp.concatenate([initial_state, hiddens[:-1]])

  # The derivative of `s * tanh(s * x) + 1 - s` is `s**2 - (a - 1 + s)**2`
  # in terms of the activation `a`: `a * (1 - a)` for the sigmoid gates and
  # `1 - a**2` for the cell gate, again one expression over all four gates.
  scale = _gate_scale(recurrent_kernel.shape[-2], cells.dtype)
  # Transposed once here, not inside the loop (1.6x faster matmuls on CPU).
  transposed_kernel = jnp.swapaxes(recurrent_kernel, -1, -2)

  def step(carry, inputs):
    hidden_grad_from_next, cell_grad_from_next = carry
    hidden_grad_t, cell, previous_cell, activations_t = inputs
    input_gate, forget_gate, cell_gate, output_gate = jnp.split(
      activations_t, 4, axis=-1
    )
    hidden_grad = hidden_grad_t + hidden_grad_from_next
    cell_tanh = jnp.tanh(cell)
    cell_grad = cell_grad_from_next + hidden_grad * output_gate * (
      1.0 - cell_tanh**2
    )
    activation_grads = jnp.concatenate(
      [
        cell_grad * cell_gate,
        cell_grad * previous_cell,
        cell_grad * input_gate,
        hidden_grad * cell_tanh,
      ],
      axis=-1,
    )
    gate_grads = activation_grads * (
      scale**2 - (activations_t - 1.0 + scale) ** 2
    )
    previous_hidden_grad = jnp.einsum(
      'dbg,dgh->dbh', gate_grads, transposed_kernel
    )
    return (previous_hidden_grad, cell_grad * forget_gate), gate_grads

  zeros = jnp.zeros_like(cells[0])
  _, gate_grads = jax.lax.scan(
    step,
    (zeros, zeros),
    (hidden_grads, cells, previous_cells, activations),
    reverse=True,
  )
  kernel_grad = jnp.einsum('tdbh,tdbg->dhg', previous_hiddens, gate_grads)
  return gate_grads, kernel_grad


lstm_recurrence.defvjp(
  _lstm_recurrence_with_residuals, _lstm_recurrence_backward
)


class BidirectionalLSTM(nnx.Module):
  """A bidirectional LSTM layer, both directions in one time-major scan.

  Standard LSTM gates (input, forget, cell, output) with a forget-gate bias of
  one, Glorot-uniform input kernels and orthogonal recurrent kernels. The
  forward direction reads frames `0..T-1`, the backward direction reads
  `T-1..0`; their outputs are concatenated per frame.

  Attributes:
    input_kernel: `[2, in_features, 4 * hidden_size]`, one per direction.
    recurrent_kernel: `[2, hidden_size, 4 * hidden_size]`, one per direction.
    bias: `[2, 4 * hidden_size]`, one per direction.
  """

  def __init__(self, in_features: int, hidden_size: int, *, rngs: nnx.Rngs):
    """Initialises the layer.

    Args:
      in_features: size of each input frame.
      hidden_size: LSTM units per direction.
      rngs: random streams; `rngs.params` initialises the weights.
    """
    gates = 4 * hidden_size
    glorot = jax.nn.initializers.glorot_uniform(batch_axis=0)
    orthogonal = jax.nn.initializers.orthogonal()
    self.input_kernel = nnx.Param(
      glorot(rngs.params(), (2, in_features, gates))
    )
    self.recurrent_kernel = nnx.Param(
      orthogonal(rngs.params(), (2, hidden_size, gates))
    )
    forget_gate = slice(hidden_size, 2 * hidden_size)
    self.bias = nnx.Param(jnp.zeros((2, gates)).at[:, forget_gate].set(1.0))

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Runs both directions over a time-major sequence.

    Args:
      inputs: `[frames, batch, in_features]`.

    Returns:
      `[frames, batch, 2 * hidden_size]`: forward then backward hidden states.
    """
    # Only `h @ recurrent_kernel` depends on the previous step, so the input
    # projection runs outside the recurrence as one large matmul over every
    # frame, and the two directions share one scan (a batched matmul of their
    # recurrent kernels per step), which halves the sequential steps. With the
    # hand-written VJP of `lstm_recurrence`, a training step on 2 CPU cores is
    # about 2.1x faster than with `nnx.Bidirectional` over `nnx.RNN`s
    # (benchmarks/bench_blstm.py).
    both_directions = jnp.stack([inputs, inputs[::-1]])
    input_gates = (
      jnp.einsum('dtbi,dig->tdbg', both_directions, self.input_kernel[...])
      + self.bias[...][:, None, :]
    )
    hidden_states = lstm_recurrence(input_gates, self.recurrent_kernel[...])
    return jnp.concatenate(
      [hidden_states[:, _FORWARD], hidden_states[::-1, _BACKWARD]], axis=-1
    )


def _blstm_stack(num_freqs, hidden_size, num_layers, rngs):
  layer_inputs = [num_freqs] + [2 * hidden_size] * (num_layers - 1)
  return nnx.List(
    [
      BidirectionalLSTM(in_features, hidden_size, rngs=rngs)
      for in_features in layer_inputs
    ]
  )


def _run_blstm_stack(blstm_layers, log_magnitude):
  """`[batch, frames, freqs]` to time-major features `[frames, batch, 2H]`."""
  features = jnp.swapaxes(log_magnitude, 0, 1)
  for blstm in blstm_layers:
    features = blstm(features)
  return features


def _sigmoid_masks(mask_layer, features, num_sources, num_freqs):
  """Time-major features to masks `[batch, sources, frames, freqs]`."""
  masks = jax.nn.sigmoid(mask_layer(features))
  frames, batch_size = features.shape[:2]
  masks = masks.reshape(frames, batch_size, num_sources, num_freqs)
  return jnp.transpose(masks, (1, 2, 0, 3))


HEADS = ('masks', 'embeddings')


class Estimates(NamedTuple):
  """What `BLSTMNet` estimates for a batch of mixtures.

  Attributes:
    masks: `[batch, sources, frames, freqs]` in (0, 1), or None without a
      mask head.
    embeddings: `[batch, frames, freqs, embedding_dim]`, unit norm per
      time-frequency bin, or None without an embedding head.
  """

  masks: jax.Array | None
  embeddings: jax.Array | None


class BLSTMNet(nnx.Module):
  """Stacked BLSTMs with a mask head, an embedding head, or both.

  The input log magnitude is batch-normalised per frequency first (unless
  `normalize_input` is False). The mask head is a linear layer and a sigmoid
  that estimate one mask per source: the mask-inference network of the
  AutoClip experiments, trained with `L_MI` or, through the inverse STFT,
  `L_SNR`. The embedding head is a linear layer to `embedding_dim` values per
  time-frequency bin, a sigmoid, and a normalisation of each bin's vector to
  unit length ("unit-norm with sigmoid activation", the AutoClip paper's
  section 4.2; deep clustering (Hershey et al.) used a tanh): the network of
  `L_DC` and `L_WKM`, separated by k-means on the embeddings. With both heads
  on one BLSTM stack it is the Chimera++ network. The paper uses 4 layers of
  600 units per direction; the smaller default keeps CPU training practical.

  References:
    Hershey, Chen, Le Roux & Watanabe, `Deep clustering: Discriminative
    embeddings for segmentation and separation
    <https://arxiv.org/abs/1508.04306>`_, ICASSP 2016.

    Wang, Le Roux & Hershey, `Alternative Objective Functions for Deep
    Clustering <https://doi.org/10.1109/ICASSP.2018.8462507>`_, ICASSP 2018.
  """

  def __init__(
    self,
    *,
    heads: tuple[str, ...] = ('masks',),
    num_freqs: int = spectral.NUM_FREQUENCIES,
    hidden_size: int = 128,
    num_layers: int = 2,
    embedding_dim: int = 20,
    num_sources: int = 2,
    normalize_input: bool = True,
    rngs: nnx.Rngs,
  ):
    """Initialises the network.

    Args:
      heads: which of `HEADS` to estimate, one or both.
      num_freqs: frequency bins per frame, of the input, masks and embeddings.
      hidden_size: LSTM units per direction in every layer.
      num_layers: number of stacked bidirectional LSTM layers.
      embedding_dim: length of each time-frequency bin's embedding.
      num_sources: number of masks to estimate.
      normalize_input: batch-normalise each frequency of the input, as nussl
        (the separation library of the paper's first author) builds its
        mask-inference network: `AmplitudeToDB`, then `BatchNorm`.
      rngs: random streams; `rngs.params` initialises the weights.

    Raises:
      ValueError: if `heads` is empty or names something not in `HEADS`.
    """
    if not heads or not set(heads) <= set(HEADS):
      raise ValueError(f'heads must be one or both of {HEADS}, got {heads}')
    self.num_freqs = num_freqs
    self.num_sources = num_sources
    self.embedding_dim = embedding_dim
    # Two-pass variance: E[x^2] - E[x]^2 loses digits on log magnitudes
    # around -10, enough to make a step on 8 devices differ from 1 by 2e-4.
    self.input_normalization = (
      nnx.BatchNorm(num_freqs, use_fast_variance=False, rngs=rngs)
      if normalize_input
      else None
    )
    self.blstm_layers = _blstm_stack(num_freqs, hidden_size, num_layers, rngs)
    self.mask_layer = (
      nnx.Linear(2 * hidden_size, num_sources * num_freqs, rngs=rngs)
      if 'masks' in heads
      else None
    )
    self.embedding_layer = (
      nnx.Linear(2 * hidden_size, num_freqs * embedding_dim, rngs=rngs)
      if 'embeddings' in heads
      else None
    )

  def __call__(
    self, log_magnitude: jax.Array, *, use_running_average: bool = False
  ) -> Estimates:
    """Estimates masks and/or embeddings from the log-magnitude spectrogram.

    Args:
      log_magnitude: `[batch, frames, num_freqs]`.
      use_running_average: with `normalize_input`, normalise with the
        running statistics of training (for evaluation) instead of the
        batch's own (for training, which updates the running statistics).

    Returns:
      The `Estimates`; a head the network lacks gives None.
    """
    if self.input_normalization is not None:
      log_magnitude = self.input_normalization(
        log_magnitude, use_running_average=use_running_average
      )
    features = _run_blstm_stack(self.blstm_layers, log_magnitude)
    masks = embeddings = None
    if self.mask_layer is not None:
      masks = _sigmoid_masks(
        self.mask_layer, features, self.num_sources, self.num_freqs
      )
    if self.embedding_layer is not None:
      embeddings = jax.nn.sigmoid(self.embedding_layer(features))
      frames, batch_size = features.shape[:2]
      embeddings = embeddings.reshape(
        frames, batch_size, self.num_freqs, self.embedding_dim
      )
      # The small floor keeps the normalisation's gradient finite at zero.
      embeddings = embeddings / jnp.sqrt(
        jnp.sum(embeddings**2, axis=-1, keepdims=True) + 1e-12
      )
      embeddings = jnp.swapaxes(embeddings, 0, 1)
    return Estimates(masks, embeddings)
