"""Per-step cost of autoclip against a fixed clip, and against a naive sort.

Run: python benchmarks/bench_autoclip.py [--cases=1M/100k,1k/1M]

Runs on whichever backend JAX finds (CPU, GPU or TPU) and prints its device
kind. Every variant is a jit-compiled optimizer step (update + Adam +
apply_updates) with the parameters and optimizer state donated, fed a fixed
gradient scaled by a lognormal factor that changes every step, so norms land
all over the window. Windows start full of such norms (the steady state of a
long run). The params are 10 float32 leaves. Variants are timed in
interleaved rounds in one process; figures are medians over rounds.

Per case (params, window size H), the variants are:
``chain(clip_by_global_norm(1.0), adam)``, the baseline;
``chain(autoclip(10, H), adam)``;
the same with ``group_by='leaf'`` (10 groups, 10 windows of H);
``skip_spikes`` (its default window of 1000) around autoclip and Adam;
and a naive autoclip that takes ``jnp.nanpercentile`` of its ring buffer
every step (a full sort).
"""

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoclip_optax import AutoClipState
from autoclip_optax import SkipSpikesState
from autoclip_optax import autoclip
from autoclip_optax import skip_spikes
from autoclip_optax import with_history

NUM_SCALES = 1024
NUM_LEAVES = 10
BASELINE = 'clip_by_global_norm'
PER_LEAF = "autoclip group_by='leaf' (10 groups)"
SKIP = 'skip_spikes(autoclip), its window 1000'
NAIVE = 'naive nanpercentile'
DEFAULT_CASES = ('1M/100k', '10M/100k', '1k/1M', '10M/1M')


class NaiveState(NamedTuple):
  count: jax.Array
  history: jax.Array


def naive_sorting_autoclip(percentile, max_history):
  """AutoClip as first written: a NaN-padded ring buffer, nanpercentile."""

  def init_fn(params):
    del params
    return NaiveState(jnp.zeros([], jnp.int32),
                      jnp.full((max_history,), jnp.nan, jnp.float32))

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree_utils.tree_norm(updates)
    history = state.history.at[state.count % max_history].set(norm)
    threshold = jnp.nanpercentile(history, percentile)
    scale = jnp.where(norm > threshold, threshold / norm, 1.0)
    updates = jax.tree.map(lambda leaf: leaf * scale, updates)
    return updates, NaiveState(state.count + 1, history)

  return optax.GradientTransformation(init_fn, update_fn)


def full_window(state, rng):
  """Fills every window in ``state`` with lognormal norms."""

  def fill(node):
    if not isinstance(node, (AutoClipState, SkipSpikesState)):
      return node
    return with_history(node, rng.lognormal(size=node.history.shape))

  # skip_spikes's window first: with_history seeds the states inside it too.
  state = jax.tree.map(fill, state,
                       is_leaf=lambda node: isinstance(node, SkipSpikesState))
  return jax.tree.map(fill, state,
                      is_leaf=lambda node: isinstance(node, AutoClipState))


def make_step(tx, params, grads, rng):
  """A donated, jitted step; returns a zero-argument callable that runs it."""
  scales = jnp.asarray(rng.lognormal(size=NUM_SCALES), jnp.float32)

  def step(params, state, step_number):
    scale = scales[step_number % NUM_SCALES]
    scaled_grads = jax.tree.map(lambda g: g * scale, grads)
    updates, state = tx.update(scaled_grads, state, params)
    return optax.apply_updates(params, updates), state, step_number + 1

  step = jax.jit(step, donate_argnums=(0, 1))
  carry = [(jax.tree.map(jnp.copy, params),
            full_window(tx.init(params), rng), jnp.int32(0))]

  def run_once():
    carry[0] = step(*carry[0])
    return carry[0]

  return run_once


def interleaved_medians(runners, rounds, calls_per_round):
  """Median seconds per call of each runner, over interleaved rounds."""
  for run_once in runners.values():
    for _ in range(3):  # Compile and warm up.
      jax.block_until_ready(run_once())
  samples = {name: [] for name in runners}
  for _ in range(rounds):
    for name, run_once in runners.items():
      start = time.perf_counter()
      for _ in range(calls_per_round):
        result = run_once()
      jax.block_until_ready(result)
      samples[name].append((time.perf_counter() - start) / calls_per_round)
  return {name: float(np.median(times)) for name, times in samples.items()}


def model(num_params, seed=0):
  """Params and a fixed gradient: NUM_LEAVES leaves adding up to num_params."""
  rng = np.random.default_rng(seed)
  sizes = np.diff(np.linspace(0, num_params, NUM_LEAVES + 1).astype(int))
  names = [f'leaf_{index}' for index in range(NUM_LEAVES)]
  params = {name: jnp.asarray(rng.normal(size=size), jnp.float32)
            for name, size in zip(names, sizes)}
  grads = {name: jnp.asarray(rng.normal(size=size), jnp.float32)
           for name, size in zip(names, sizes)}
  return params, grads


def parse_count(text):
  """'1k' -> 1000, '10M' -> 10_000_000."""
  multiplier = {'k': 10**3, 'M': 10**6}.get(text[-1], 1)
  return int(float(text.rstrip('kM')) * multiplier)


def variants(max_history):
  adam = optax.adam(1e-3)
  return {
      BASELINE: optax.chain(optax.clip_by_global_norm(1.0), adam),
      'autoclip': optax.chain(autoclip(10, max_history), adam),
      PER_LEAF: optax.chain(autoclip(10, max_history, group_by='leaf'),
                            adam),
      SKIP: skip_spikes(optax.chain(autoclip(10, max_history), adam)),
      NAIVE: optax.chain(naive_sorting_autoclip(10, max_history), adam),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cases', default=','.join(DEFAULT_CASES),
                      help='comma-separated params/window pairs')
  parser.add_argument('--rounds', type=int, default=15)
  parser.add_argument('--calls', type=int, default=10)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  device = jax.devices()[0]
  print(f'jax {jax.__version__}, optax {optax.__version__}, '
        f'{device.platform}: {device.device_kind}, {args.rounds} rounds x '
        f'{args.calls} calls, medians')
  print()
  print('| params, window | variant | step (ms) | ratio to '
        'clip_by_global_norm | added per step (µs) |')
  print('|---|---|---|---|---|')
  for case in args.cases.split(','):
    num_params, max_history = map(parse_count, case.split('/'))
    params, grads = model(num_params)
    runners = {name: make_step(tx, params, grads, rng)
               for name, tx in variants(max_history).items()}
    medians = interleaved_medians(runners, args.rounds, args.calls)
    baseline = medians[BASELINE]
    for name, seconds in medians.items():
      print(f'| {case} | {name} | {seconds * 1e3:.3f} | '
            f'{seconds / baseline:.2f}x | {(seconds - baseline) * 1e6:.0f} |',
            flush=True)


if __name__ == '__main__':
  main()
