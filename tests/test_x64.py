"""x64 mode (``jax_enable_x64``) is supported: the oracle tests pass in it.

The flag is global, so the tests run in a subprocess with it set: one, for
both tests, which checks the dtypes and then runs the oracle tests.
"""

import os
import subprocess
import sys

import pytest

from tests.processes import REPO_ROOT

# A few cases of each NumPy-oracle test: each compiles anew.
ORACLE_TESTS = (
  'tests/test_autoclip.py::test_matches_numpy_reference[1-0]',
  'tests/test_autoclip.py::test_matches_numpy_reference[7-10]',
  'tests/test_autoclip.py::test_matches_numpy_reference[1000-33.3]',
  'tests/test_autoclip.py::'
  'test_update_is_differentiable_like_finite_differences',
  'tests/test_autoclip_groups.py::test_leaf_groups_match_numpy_reference[7-10]',
  'tests/test_autoclip_groups.py::'
  'test_label_function_groups_match_numpy_reference[5-10]',
  'tests/test_skip_spikes.py::test_matches_numpy_reference',
  'tests/test_with_history.py::'
  'test_seeded_window_and_next_step_equal_recording_one_by_one',
)
CHECK_DTYPES = """
import jax, jax.numpy as jnp, optax
from autoclip_optax import autoclip, skip_spikes
assert jax.config.jax_enable_x64
for tx in [autoclip(50, 10), autoclip(50, 10, group_by='leaf'),
           skip_spikes(optax.chain(autoclip(50, 10), optax.sgd(1.0)))]:
  updates = {'a': jnp.array([3.0, 4.0]), 'b': jnp.array([1.0])}
  assert updates['a'].dtype == jnp.float64
  clipped, state = jax.jit(tx.update)(updates, tx.init(updates))
  assert clipped['a'].dtype == jnp.float64
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(state)}
  assert dtypes <= {jnp.dtype('int32'), jnp.dtype('float32')}, dtypes
print('dtypes ok')
"""
# Runs argv[1], the dtype check, then pytest with the other arguments.
CHECK_THEN_PYTEST = """
import sys
import traceback

try:
  exec(sys.argv.pop(1))
except Exception:
  traceback.print_exc(file=sys.stdout)

import pytest

sys.exit(pytest.main(sys.argv[1:]))
"""


@pytest.fixture(scope='module')
def x64_run():
  env = dict(os.environ, JAX_ENABLE_X64='1', JAX_PLATFORMS='cpu')
  return subprocess.run(
    [
      sys.executable,
      '-c',
      CHECK_THEN_PYTEST,
      CHECK_DTYPES,
      '-q',
      '-p',
      'no:cacheprovider',
      *ORACLE_TESTS,
    ],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )


def test_updates_keep_their_dtype_and_the_state_its_dtypes(x64_run):
  assert 'dtypes ok' in x64_run.stdout.splitlines(), (
    x64_run.stdout[-5000:] + x64_run.stderr[-2000:]
  )


def test_oracle_tests_pass_in_x64_mode(x64_run):
  result = x64_run
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
  assert ' passed' in result.stdout and 'skipped' not in result.stdout
