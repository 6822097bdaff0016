"""Sums of squares, each platform's way, against NumPy.

On GPU each leaf is summed into partial sums and one reduction finishes all
the leaves (``_groups._sum_each_leaf_in_two_stages``); elsewhere each leaf
is one reduction. Both run here, on the CPU.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from autoclip_optax import _groups

PATHS = [_groups._sum_each_leaf, _groups._sum_each_leaf_in_two_stages]
SHAPES = [(), (0,), (1,), (1023,), (1024,), (1025,), (3, 5000), (125_001,)]


def numpy_sum_of_squares(leaf):
  wide = np.asarray(leaf).astype(np.complex128)
  return float(np.sum(np.abs(wide) ** 2))


def random_leaf(rng, shape, dtype):
  values = rng.normal(size=shape)
  if jnp.issubdtype(dtype, jnp.complexfloating):
    values = values + 1j * rng.normal(size=shape)
  return jnp.asarray(values, dtype)


@pytest.mark.parametrize('path', PATHS, ids=lambda path: path.__name__)
def test_each_leaf_sums_its_squares_like_numpy(path):
  rng = np.random.default_rng(0)
  leaves = [random_leaf(rng, shape, jnp.float32) for shape in SHAPES] + [
    random_leaf(rng, (4097,), jnp.bfloat16),
    random_leaf(rng, (3000,), jnp.float16),
    random_leaf(rng, (2, 700), jnp.complex64),
  ]
  sums = jax.jit(path)(*leaves)
  for leaf, total in zip(leaves, sums):
    assert total.dtype == jnp.float32
    np.testing.assert_allclose(
      total, numpy_sum_of_squares(leaf), rtol=2e-6, atol=0
    )


def test_both_paths_give_the_same_dtypes_and_about_the_same_sums():
  rng = np.random.default_rng(1)
  leaves = [random_leaf(rng, shape, jnp.float32) for shape in SHAPES]
  each, two_stages = (jax.jit(path)(*leaves) for path in PATHS)
  assert [total.dtype for total in each] == [
    total.dtype for total in two_stages
  ]
  np.testing.assert_allclose(two_stages, each, rtol=2e-6)


def test_group_norms_take_the_gpu_path_apart_from_float0(monkeypatch):
  monkeypatch.setattr(
    _groups,
    '_sums_of_squares',
    lambda leaves: _groups._sum_each_leaf_in_two_stages(*leaves),
  )
  rng = np.random.default_rng(2)
  leaves = [random_leaf(rng, (2000,), jnp.float32) for _ in range(3)]
  leaves.insert(1, np.zeros((4,), jax.dtypes.float0))
  norms = _groups.group_norms(leaves, (1, 0, 0, 1), 2)
  expected = [
    np.sqrt(numpy_sum_of_squares(leaves[2])),
    np.sqrt(numpy_sum_of_squares(leaves[0]) + numpy_sum_of_squares(leaves[3])),
  ]
  np.testing.assert_allclose(norms, expected, rtol=2e-6)
