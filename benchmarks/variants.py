"""The optimizer steps that the benchmarks compare, and the model they step.

Every variant is ``adam(1e-3)`` behind a different clip, so that the ratios
between them are the clip's cost: Adam alone (no clipping, the floor), a
fixed ``clip_by_global_norm``, ``autoclip`` (global, per leaf and per label
group), ``skip_spikes`` and ``optax.apply_if_finite`` around autoclip, and a
naive autoclip that takes ``jnp.nanpercentile`` of its ring buffer every step
(a full sort), as most implementations do.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoclip_optax import autoclip
from autoclip_optax import skip_spikes

NUM_LEAVES = 8
ADAM = 'adam alone'
BASELINE = 'clip_by_global_norm'
AUTOCLIP = 'autoclip'
PER_LEAF = f"autoclip group_by='leaf' ({NUM_LEAVES} groups)"
PER_LABEL = 'autoclip group_by=labels (2 groups)'
SKIP = 'skip_spikes(autoclip)'
IF_FINITE = 'apply_if_finite(autoclip)'
NAIVE = 'naive nanpercentile'


class NaiveState(NamedTuple):
  count: jax.Array
  history: jax.Array


def naive_sorting_autoclip(percentile, max_history):
  """AutoClip done the usual way: a NaN-padded ring, ``nanpercentile``."""

  def init_fn(params):
    del params
    return NaiveState(
      jnp.zeros([], jnp.int32), jnp.full((max_history,), jnp.nan, jnp.float32)
    )

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree_utils.tree_norm(updates)
    history = state.history.at[state.count % max_history].set(norm)
    threshold = jnp.nanpercentile(history, percentile)
    scale = jnp.where(norm > threshold, threshold / norm, 1.0)
    updates = jax.tree.map(lambda leaf: leaf * scale, updates)
    return updates, NaiveState(state.count + 1, history)

  return optax.GradientTransformation(init_fn, update_fn)


def _two_labels(params):
  """Half the leaves labelled 'kernel', half 'bias'."""
  return {
    name: ('kernel', 'bias')[index % 2]
    for index, name in enumerate(sorted(params))
  }


def variants(max_history: int) -> dict[str, optax.GradientTransformation]:
  """Each variant's optimizer, windows of ``max_history`` norms."""

  def chain(clip):
    return optax.chain(clip, optax.adam(1e-3))

  return {
    ADAM: optax.adam(1e-3),
    BASELINE: chain(optax.clip_by_global_norm(1.0)),
    AUTOCLIP: chain(autoclip(10, max_history)),
    PER_LEAF: chain(autoclip(10, max_history, group_by='leaf')),
    PER_LABEL: chain(autoclip(10, max_history, group_by=_two_labels)),
    SKIP: skip_spikes(chain(autoclip(10, max_history))),
    IF_FINITE: optax.apply_if_finite(chain(autoclip(10, max_history)), 10),
    NAIVE: chain(naive_sorting_autoclip(10, max_history)),
  }


def model(num_params: int, seed: int = 0):
  """Params and a fixed gradient: NUM_LEAVES leaves adding up to num_params."""
  rng = np.random.default_rng(seed)
  sizes = np.diff(np.linspace(0, num_params, NUM_LEAVES + 1).astype(int))
  names = [f'leaf_{index}' for index in range(NUM_LEAVES)]
  params = {
    name: jnp.asarray(rng.normal(size=size), jnp.float32)
    for name, size in zip(names, sizes)
  }
  grads = {
    name: jnp.asarray(rng.normal(size=size), jnp.float32)
    for name, size in zip(names, sizes)
  }
  return params, grads


def parse_count(text: str) -> int:
  """'1k' -> 1000, '10M' -> 10_000_000."""
  multiplier = {'k': 10**3, 'M': 10**6}.get(text[-1], 1)
  return int(float(text.rstrip('kM')) * multiplier)
