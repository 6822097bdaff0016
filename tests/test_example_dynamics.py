"""Tests of the separation example's Figure 1: the smoothness estimate."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples.flax_separation import dynamics
from examples.flax_separation.configs import default
from tests.example_helpers import config_flags_for
from tests.example_helpers import run_command
from tests.example_helpers import tiny_config

EIGENVALUES = np.array([0.5, 2.0, 3.0, 7.0])


def quadratic_hessian(seed=0):
  """A symmetric ``A`` with ``EIGENVALUES``, and its eigenvectors (columns)."""
  rng = np.random.default_rng(seed)
  eigenvectors, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  return eigenvectors @ np.diag(EIGENVALUES) @ eigenvectors.T, eigenvectors


def quadratic_gradient(hessian):
  """The gradient of ``f(theta) = theta^T A theta / 2``: ``A theta``."""
  return jax.grad(lambda theta: 0.5 * theta @ jnp.asarray(hessian) @ theta)


@pytest.mark.parametrize('index', range(len(EIGENVALUES)))
def test_step_along_an_eigenvector_gives_its_eigenvalue(index):
  hessian, eigenvectors = quadratic_hessian()
  before = np.random.default_rng(1).normal(size=4)
  after = before - 0.3 * eigenvectors[:, index]
  estimate = dynamics.local_lipschitz(
    quadratic_gradient(hessian), jnp.asarray(before), jnp.asarray(after)
  )
  np.testing.assert_allclose(estimate, EIGENVALUES[index], rtol=1e-5)


@pytest.mark.parametrize('seed', range(5))
def test_any_step_gives_the_hessian_along_it_at_most_the_largest(seed):
  hessian, _ = quadratic_hessian(seed)
  rng = np.random.default_rng(seed + 10)
  before, direction = rng.normal(size=4), rng.normal(size=4)
  estimate = dynamics.local_lipschitz(
    quadratic_gradient(hessian),
    jnp.asarray(before),
    jnp.asarray(before + 0.01 * direction),
  )
  expected = np.linalg.norm(hessian @ direction) / np.linalg.norm(direction)
  np.testing.assert_allclose(estimate, expected, rtol=1e-4)
  assert EIGENVALUES.min() - 1e-4 <= estimate <= EIGENVALUES.max() + 1e-4


def test_pytree_params_are_one_vector():
  # Two leaves of a block-diagonal quadratic; the step moves both.
  hessian, _ = quadratic_hessian()
  grad_fn = jax.grad(
    lambda params: (
      0.5
      * (
        params['a'] @ jnp.asarray(hessian) @ params['a']
        + 4.0 * jnp.sum(params['b'] ** 2)
      )
    )
  )
  before = {'a': jnp.ones(4), 'b': jnp.ones(2)}
  step = {'a': jnp.array([0.1, -0.2, 0.0, 0.3]), 'b': jnp.array([0.2, 0.1])}
  after = jax.tree.map(jnp.add, before, step)
  full_hessian = np.zeros((6, 6))
  full_hessian[:4, :4] = hessian
  full_hessian[4:, 4:] = 4.0 * np.eye(2)
  flat_step = np.concatenate([step['a'], step['b']])
  np.testing.assert_allclose(
    dynamics.local_lipschitz(grad_fn, before, after),
    np.linalg.norm(full_hessian @ flat_step) / np.linalg.norm(flat_step),
    rtol=1e-5,
  )


def test_log_log_pearson_of_a_power_law_is_one():
  x = np.array([1e-3, 1e-2, 0.1, 1.0])
  assert dynamics.log_log_pearson(x, 5 * x**2) == pytest.approx(1.0)
  assert dynamics.log_log_pearson(x, 1 / x) == pytest.approx(-1.0)


def test_log_log_pearson_ignores_zero_and_non_finite_points():
  x = np.array([1e-3, 1e-2, 0.1, 1.0, 0.0, np.inf])
  y = np.array([1e-3, 1e-2, 0.1, 1.0, 1.0, 1.0])
  assert dynamics.log_log_pearson(x, y) == pytest.approx(1.0)


def test_command_writes_the_logs_and_the_figure(tmp_path, espeak2mix_dir):
  workdir = tmp_path / 'dynamics'
  completed = run_command(
    'dynamics',
    f'--workdir={workdir}',
    '--percentiles=10,100',
    '--record_every=2',
    *config_flags_for(tiny_config(espeak2mix_dir), default.get_config()),
  )
  assert completed.returncode == 0, completed.stderr
  for percentile in (10, 100):
    records = [
      json.loads(line)
      for line in (workdir / f'dynamics_p{percentile}.jsonl')
      .read_text()
      .splitlines()
    ]
    # 4 steps, recorded every 2: the first and the third.
    assert [r['step'] for r in records] == [1, 3]
    for record in records:
      assert set(record) == {
        'step',
        'loss',
        'grad_norm',
        'threshold',
        'step_size',
        'clipped',
        'clip_rate',
        'smoothness',
      }
      assert np.isfinite(record['smoothness']) and record['smoothness'] > 0
  assert (workdir / 'figure1.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
