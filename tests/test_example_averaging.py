"""Tests of the parameter average the separation example evaluates."""

from flax import nnx
import jax
import numpy as np
import optax
import pytest

from examples.flax_separation import averaging
from examples.flax_separation import optimization
from examples.flax_separation import train
from examples.flax_separation.configs import default


def _params_after_each_step(decay, num_steps):
  """Trains a tiny network; returns it, its optimizer and its params."""
  config = default.get_config()
  config.hidden_size = 4
  config.num_layers = 1
  config.param_average_decay = decay
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(model, config, num_steps=100)
  rng = np.random.default_rng(0)
  history = []
  for sources in rng.normal(size=(num_steps, 2, 2, 640)).astype(np.float32):
    train.train_step(model, optimizer, sources.sum(axis=1), sources)
    history.append(
      [
        np.asarray(leaf)
        for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))
      ]
    )
  return model, optimizer, history


def _leaves(model, variable_type):
  return [
    np.asarray(leaf)
    for leaf in jax.tree.leaves(nnx.state(model, variable_type))
  ]


def test_param_average_is_the_numpy_moving_average_of_the_stepped_params():
  rng = np.random.default_rng(1)
  params = {
    'w': rng.normal(size=(3, 4)).astype(np.float32),
    'b': rng.normal(size=4).astype(np.float32),
  }
  transform = averaging.param_average(0.9)
  state = transform.init(params)
  expected = {key: np.zeros_like(value) for key, value in params.items()}
  for _ in range(6):
    updates = {
      key: rng.normal(size=value.shape).astype(np.float32)
      for key, value in params.items()
    }
    passed_on, state = transform.update(updates, state, params)
    params = optax.apply_updates(params, passed_on)
    expected = {
      key: 0.9 * expected[key] + 0.1 * np.asarray(params[key])
      for key in expected
    }
    for key in updates:
      np.testing.assert_array_equal(passed_on[key], updates[key])
  assert int(state.count) == 6
  for key in expected:
    np.testing.assert_allclose(state.average[key], expected[key], rtol=1e-6)


def test_averaged_model_is_the_bias_corrected_average_of_the_trained_one():
  # The default decay: the same step as test_example_train.py's tiny ones,
  # compiled once for both (the session's compilation cache).
  model, optimizer, history = _params_after_each_step(0.99, 4)
  averaged = averaging.averaged_model(model, optimizer, 0.99)
  weights = 0.01 * 0.99 ** np.arange(3, -1, -1)
  for index, leaf in enumerate(_leaves(averaged, nnx.Param)):
    expected = sum(
      weight * params[index] for weight, params in zip(weights, history)
    )
    np.testing.assert_allclose(
      leaf, expected / weights.sum(), rtol=1e-5, atol=1e-7
    )
  # The trained network is left as it was, and lends its running statistics.
  for leaf, trained in zip(_leaves(model, nnx.Param), history[-1]):
    np.testing.assert_array_equal(leaf, trained)
  for leaf, trained in zip(
    _leaves(averaged, nnx.BatchStat), _leaves(model, nnx.BatchStat)
  ):
    np.testing.assert_array_equal(leaf, trained)
  assert not np.array_equal(_leaves(averaged, nnx.Param)[0], history[-1][0])


@pytest.mark.parametrize('decay, num_steps', [(0.0, 3), (0.99, 0)])
def test_averaged_model_is_the_trained_network_with_decay_zero_or_no_step(
  decay, num_steps
):
  model, optimizer, _ = _params_after_each_step(decay, num_steps)
  averaged = averaging.averaged_model(model, optimizer, decay)
  for leaf, trained in zip(
    _leaves(averaged, nnx.Param), _leaves(model, nnx.Param)
  ):
    np.testing.assert_array_equal(leaf, trained)


@pytest.mark.parametrize('decay', [-0.1, 1.0])
def test_param_average_rejects_a_decay_outside_zero_to_one(decay):
  with pytest.raises(ValueError, match=r'decay must be in \[0, 1\)'):
    averaging.param_average(decay)


def test_param_average_needs_the_params():
  transform = averaging.param_average(0.5)
  params = {'w': np.ones(3, np.float32)}
  with pytest.raises(ValueError, match='needs the parameters'):
    transform.update(params, transform.init(params))


def test_param_average_with_decay_zero_keeps_no_state():
  params = {'w': np.ones((3, 4), np.float32)}
  assert jax.tree.leaves(averaging.param_average(0.0).init(params)) == []
