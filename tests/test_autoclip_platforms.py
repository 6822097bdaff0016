"""The GPU path: straight-line code, bit-identical to the other platforms'.

The window's sums are one reduction over the stacked terms on GPU and one
reduction per term elsewhere. Both run here: the CPU path as it is, the GPU
path by swapping it in for the CPU one.
"""

import re

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from autoclip_optax import _window
from autoclip_optax import autoclip
from autoclip_optax import skip_spikes
from tests.autoclip_helpers import assert_bit_identical
from tests.autoclip_helpers import assert_matches_grouped_reference
from tests.autoclip_helpers import assert_matches_reference
from tests.autoclip_helpers import run_autoclip
from tests.autoclip_reference import autoclip_reference
from tests.autoclip_reference import grouped_autoclip_reference


def unlabelled_groups(params):
  """Labels that are neither sorted nor adjacent in leaf order."""
  return {
    name: {'a': 'z', 'b': 'y', 'c': 'z', 'd': 'x'}[name] for name in params
  }


def num_while_loops(function, *args, platform='cuda'):
  module = export.export(jax.jit(function), platforms=[platform])(
    *args
  ).mlir_module()
  return len(re.findall(r'stablehlo\.while', module))


def _cpu_loop_or_double(x):
  return jax.lax.platform_dependent(
    x,
    cpu=lambda x: jax.lax.fori_loop(0, 3, lambda _, y: y + 1, x),
    default=lambda x: x * 2,
  )


# Older jax (before 0.6) exports every branch of platform_dependent inside a
# conditional on a constant, which XLA drops when it compiles; the text then
# shows the CPU branch's loops too.
exports_one_branch = num_while_loops(_cpu_loop_or_double, jnp.zeros(3)) == 0


def no_wrapper(inner):
  return inner


def with_skip_spikes(inner):
  return skip_spikes(inner, max_history=100_000)


@pytest.mark.skipif(
  not exports_one_branch, reason='this jax exports the CPU branch too'
)
@pytest.mark.parametrize('platform', ['cuda', 'tpu'])
@pytest.mark.parametrize('group_by', [None, 'leaf', unlabelled_groups])
@pytest.mark.parametrize('max_history', [100_000, 1_000_000])
@pytest.mark.parametrize('wrap', [no_wrapper, with_skip_spikes])
def test_accelerator_lowering_has_no_loops(
  platform, group_by, max_history, wrap
):
  tx = wrap(
    optax.chain(
      autoclip(10, max_history, group_by=group_by, min_history=100),
      optax.adam(1e-3),
    )
  )
  params = {name: jnp.zeros((8, 8)) for name in 'abcd'}

  def train_step(grads, state, params):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  assert (
    num_while_loops(
      train_step,
      params,
      jax.eval_shape(tx.init, params),
      params,
      platform=platform,
    )
    == 0
  )


def adversarial_updates(num_steps, seed):
  """Four leaves with few distinct norms (ties), zeros, NaN and inf steps."""
  rng = np.random.default_rng(seed)
  levels = np.array([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 1e4], np.float32)
  sequence = []
  for _ in range(num_steps):
    updates = {}
    for name in 'abcd':
      leaf = np.zeros(3, np.float32)
      leaf[0] = rng.choice(levels)  # The leaf's norm is one of the levels.
      roll = rng.random()
      if roll < 0.04:
        leaf[1] = np.nan
      elif roll < 0.08:
        leaf[2] = rng.choice([np.inf, -np.inf])
      updates[name] = leaf
    sequence.append(updates)
  return sequence


def spiky_random_updates(num_steps, seed):
  rng = np.random.default_rng(seed)
  return [
    {
      name: (rng.lognormal(0, 1) * rng.normal(size=5)).astype(np.float32)
      for name in 'abcd'
    }
    for _ in range(num_steps)
  ]


def run_on_both_paths(sequence, monkeypatch, *autoclip_args, **kwargs):
  """Runs autoclip with the CPU path, then with GPU's; returns host copies."""
  cpu = run_autoclip(sequence, *autoclip_args, **kwargs)
  with monkeypatch.context() as patch:
    patch.setattr(_window, 'sum_terms', _window.sum_stacked_terms)
    # run_autoclip traces a new update for this way of summing.
    accelerator = run_autoclip(sequence, *autoclip_args, **kwargs)
  return jax.device_get((cpu, accelerator))


@pytest.mark.parametrize(
  'make_sequence', [adversarial_updates, spiky_random_updates]
)
@pytest.mark.parametrize('percentile', [0, 10, 50, 100])
@pytest.mark.parametrize('max_history', [1, 5, 64])
def test_global_paths_are_bit_identical_and_match_numpy(
  make_sequence, percentile, max_history, monkeypatch
):
  sequence = make_sequence(300, seed=max_history)
  cpu, accelerator = run_on_both_paths(
    sequence, monkeypatch, percentile, max_history
  )
  assert_bit_identical(cpu, accelerator)
  reference = autoclip_reference(
    sequence, [percentile] * len(sequence), max_history
  )
  assert_matches_reference(*accelerator, reference)


@pytest.mark.parametrize(
  'group_by, label_of',
  [
    ('leaf', lambda name: name),
    (unlabelled_groups, lambda name: unlabelled_groups({name: 0})[name]),
  ],
)
@pytest.mark.parametrize('percentile', [0, 10, 100])
def test_grouped_paths_are_bit_identical_and_match_numpy(
  group_by, label_of, percentile, monkeypatch
):
  sequence = adversarial_updates(200, seed=percentile)
  cpu, accelerator = run_on_both_paths(
    sequence, monkeypatch, percentile, 6, group_by=group_by
  )
  assert_bit_identical(cpu, accelerator)
  reference = grouped_autoclip_reference(
    sequence, [percentile] * len(sequence), 6, label_of
  )
  assert_matches_grouped_reference(*accelerator, reference)
