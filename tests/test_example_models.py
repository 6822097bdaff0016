"""Tests for examples/flax_separation/models.py."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from examples.flax_separation import losses
from examples.flax_separation import models
from examples.flax_separation import spectral


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_lstm(inputs, input_kernel, recurrent_kernel, bias):
  """Plain per-step LSTM over `[frames, batch, features]`; gates i, f, g, o."""
  hidden_size = recurrent_kernel.shape[0]
  hidden = np.zeros((inputs.shape[1], hidden_size))
  cell = np.zeros((inputs.shape[1], hidden_size))
  outputs = []
  for frame in inputs:
    gates = frame @ input_kernel + hidden @ recurrent_kernel + bias
    i, f, g, o = np.split(gates, 4, axis=-1)
    cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(g)
    hidden = _sigmoid(o) * np.tanh(cell)
    outputs.append(hidden)
  return np.stack(outputs)


def _reference_blstm(layer, inputs):
  inputs = np.asarray(inputs, np.float64)
  directions = []
  for direction, ordered_inputs in enumerate([inputs, inputs[::-1]]):
    hidden = _reference_lstm(
      ordered_inputs,
      np.asarray(layer.input_kernel[direction], np.float64),
      np.asarray(layer.recurrent_kernel[direction], np.float64),
      np.asarray(layer.bias[direction], np.float64),
    )
    directions.append(hidden if direction == 0 else hidden[::-1])
  return np.concatenate(directions, axis=-1)


def test_masks_have_one_map_per_source_in_unit_interval():
  model = models.BLSTMNet(hidden_size=8, rngs=nnx.Rngs(0))
  log_magnitude = jax.random.normal(jax.random.key(1), (3, 11, 129))
  masks = model(log_magnitude).masks
  assert masks.shape == (3, 2, 11, 129)
  assert np.all((masks > 0) & (masks < 1))


def test_forget_gate_bias_is_one():
  layer = models.BidirectionalLSTM(5, 4, rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(layer.bias[...][:, 4:8], 1.0)
  np.testing.assert_array_equal(layer.bias[...][:, :4], 0.0)


def test_bidirectional_lstm_matches_per_step_numpy_reference():
  layer = models.BidirectionalLSTM(5, 4, rngs=nnx.Rngs(0))
  inputs = jax.random.normal(jax.random.key(1), (9, 3, 5))
  np.testing.assert_allclose(
    layer(inputs), _reference_blstm(layer, inputs), rtol=1e-5, atol=1e-5
  )


def test_lstm_recurrence_gradient_matches_autodiff_of_a_plain_loop():
  input_gates = jax.random.normal(jax.random.key(0), (6, 2, 3, 16))
  recurrent_kernel = 0.5 * jax.random.normal(jax.random.key(1), (2, 4, 16))
  output_weights = jax.random.normal(jax.random.key(2), (6, 2, 3, 4))

  def plain_loop(input_gates, recurrent_kernel):
    hidden = cell = jnp.zeros((2, 3, 4))
    hiddens = []
    for gates_t in input_gates:
      gates = gates_t + jnp.einsum('dbh,dhg->dbg', hidden, recurrent_kernel)
      i, f, g, o = jnp.split(gates, 4, axis=-1)
      cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
      hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
      hiddens.append(hidden)
    return jnp.stack(hiddens)

  def objective(recurrence):
    return lambda *args: jnp.sum(output_weights * recurrence(*args))

  # Jitted: the plain loop, op by op, took seconds to differentiate.
  expected = jax.jit(jax.grad(objective(plain_loop), argnums=(0, 1)))(
    input_gates, recurrent_kernel
  )
  actual = jax.jit(jax.grad(objective(models.lstm_recurrence), argnums=(0, 1)))(
    input_gates, recurrent_kernel
  )
  for actual_grad, expected_grad in zip(actual, expected):
    np.testing.assert_allclose(actual_grad, expected_grad, rtol=1e-5, atol=1e-5)


def test_tiny_model_overfits_one_batch():
  rng = np.random.default_rng(0)
  shape = (2, 2, 10, 16)
  source_specs = jnp.asarray(
    rng.standard_normal(shape) + 1j * rng.standard_normal(shape), jnp.complex64
  )
  mixture_spec = source_specs.sum(axis=1)
  model = models.BLSTMNet(
    num_freqs=16, hidden_size=32, num_layers=1, rngs=nnx.Rngs(0)
  )
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    def loss_fn(model):
      masks = model(spectral.log_magnitude(mixture_spec)).masks
      return losses.psa_mask_loss(masks, mixture_spec, source_specs)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  initial_loss = float(train_step(model, optimizer))
  for _ in range(200):
    final_loss = float(train_step(model, optimizer))
  assert final_loss < initial_loss / 5


def test_embedding_net_estimates_unit_norm_embeddings_only():
  model = models.BLSTMNet(
    heads=('embeddings',),
    hidden_size=8,
    num_layers=1,
    embedding_dim=20,
    rngs=nnx.Rngs(0),
  )
  log_magnitude = jax.random.normal(jax.random.key(1), (3, 11, 129))
  estimates = model(log_magnitude)
  assert estimates.masks is None
  assert estimates.embeddings.shape == (3, 11, 129, 20)
  np.testing.assert_allclose(
    np.linalg.norm(estimates.embeddings, axis=-1), 1.0, rtol=1e-5
  )


def test_chimera_net_has_both_heads_on_one_blstm_stack():
  model = models.BLSTMNet(
    heads=('masks', 'embeddings'),
    hidden_size=8,
    num_layers=2,
    embedding_dim=20,
    rngs=nnx.Rngs(0),
  )
  estimates = model(jax.random.normal(jax.random.key(1), (3, 11, 129)))
  assert estimates.embeddings.shape == (3, 11, 129, 20)
  assert estimates.masks.shape == (3, 2, 11, 129)
  assert np.all((estimates.masks > 0) & (estimates.masks < 1))
  assert len(model.blstm_layers) == 2
