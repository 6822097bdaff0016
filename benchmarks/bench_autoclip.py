"""Per-step cost of autoclip against a fixed clip, and against a naive sort.

Run: python benchmarks/bench_autoclip.py

Every variant is a jit-compiled optimizer step (update + apply_updates) with
the parameters and optimizer state donated, fed a fixed gradient scaled by a
lognormal factor that changes every step, so norms land all over the window.
Autoclip's window starts full of such norms (the steady state of a long run).
Variants are timed in interleaved rounds in one process; figures are medians
over rounds.

1. A 1M-parameter model, window of 100,000 norms: step time of
   chain(autoclip, adam) over chain(clip_by_global_norm(1.0), adam).
2. A 10-parameter model, window of 1,000,000 norms: the time autoclip adds to
   a step, as a multiple of one elementwise pass over 1M float32.
Both for autoclip, for autoclip with one window per leaf (the models have
3 leaves: ``group_by='leaf'``, 3 groups), and for a naive autoclip that takes
``jnp.nanpercentile`` of its ring buffer every step (a full sort).
"""

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoclip_optax import AutoClipState
from autoclip_optax import autoclip

NUM_SCALES = 1024
PER_LEAF = "autoclip group_by='leaf' (3 groups)"


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
  """Fills every AutoClipState in ``state`` with lognormal norms."""

  def fill(leaf):
    if not isinstance(leaf, AutoClipState):
      return leaf
    size = leaf.history.shape[-1]  # Per group when there is a group axis.
    history = rng.lognormal(size=leaf.history.shape).astype(np.float32)
    return leaf._replace(
        count=jnp.full(leaf.count.shape, size, jnp.int32),
        history=jnp.asarray(history),
        sorted_history=jnp.asarray(np.sort(history, axis=-1)),
        oldest=jnp.asarray(history[..., 0]))

  return jax.tree.map(fill, state,
                      is_leaf=lambda x: isinstance(x, AutoClipState))


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


def make_elementwise_pass(size):
  array = [jnp.ones(size, jnp.float32)]
  scale = jax.jit(lambda x: x * 1.0001, donate_argnums=0)

  def run_once():
    array[0] = scale(array[0])
    return array[0]

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
  """Params and a fixed gradient: a few matrices adding up to num_params."""
  rng = np.random.default_rng(seed)
  shapes = {'dense_0': (num_params // 2,), 'dense_1': (num_params // 4,),
            'dense_2': (num_params - num_params // 2 - num_params // 4,)}
  params = {k: jnp.asarray(rng.normal(size=s), jnp.float32)
            for k, s in shapes.items()}
  grads = {k: jnp.asarray(rng.normal(size=s), jnp.float32)
           for k, s in shapes.items()}
  return params, grads


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=31)
  parser.add_argument('--calls', type=int, default=20)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  params, grads = model(1_000_000)
  adam = optax.adam(1e-3)
  ratio_runs = {
      'clip_by_global_norm': make_step(
          optax.chain(optax.clip_by_global_norm(1.0), adam), params, grads,
          rng),
      'autoclip': make_step(
          optax.chain(autoclip(10, max_history=100_000), adam), params,
          grads, rng),
      PER_LEAF: make_step(
          optax.chain(autoclip(10, max_history=100_000, group_by='leaf'),
                      adam), params, grads, rng),
      'naive sort': make_step(
          optax.chain(naive_sorting_autoclip(10, 100_000), adam), params,
          grads, rng),
  }
  tiny_params, tiny_grads = model(10)
  window = 1_000_000
  added_runs = {
      'clip_by_global_norm': make_step(
          optax.chain(optax.clip_by_global_norm(1.0), adam), tiny_params,
          tiny_grads, rng),
      'autoclip': make_step(
          optax.chain(autoclip(10, max_history=window), adam), tiny_params,
          tiny_grads, rng),
      PER_LEAF: make_step(
          optax.chain(autoclip(10, max_history=window, group_by='leaf'),
                      adam), tiny_params, tiny_grads, rng),
      'naive sort': make_step(
          optax.chain(naive_sorting_autoclip(10, window), adam), tiny_params,
          tiny_grads, rng),
      'elementwise pass': make_elementwise_pass(window),
  }
  big = interleaved_medians(ratio_runs, args.rounds, args.calls)
  tiny = interleaved_medians(added_runs, args.rounds, args.calls)

  print(f'jax {jax.__version__}, optax {optax.__version__}, '
        f'{jax.devices()[0].device_kind}, {args.rounds} rounds x '
        f'{args.calls} calls, medians')
  print()
  print('| variant | 1M params, H=100k: step (ms) | ratio to '
        'clip_by_global_norm | 10 params, H=1M: added per step (ms) | '
        'added / elementwise pass |')
  print('|---|---|---|---|---|')
  elementwise = tiny['elementwise pass']
  for name in ('clip_by_global_norm', 'autoclip', PER_LEAF, 'naive sort'):
    added = tiny[name] - tiny['clip_by_global_norm']
    print(f'| {name} | {big[name] * 1e3:.3f} | '
          f'{big[name] / big["clip_by_global_norm"]:.3f}x | '
          f'{added * 1e3:.3f} | {added / elementwise:.2f}x |')
  print(f'\none elementwise pass over 1M float32: {elementwise * 1e3:.3f} ms')


if __name__ == '__main__':
  main()
