"""Per-step cost of autoclip against a fixed clip, Adam alone and a sort.

Run: python -m benchmarks.bench_autoclip [--cases=1M/100k,1k/1M]

Runs on whichever backend JAX finds (CPU, GPU or TPU) and prints its device
kind. Every variant (see ``variants.py``) is a jit-compiled optimizer step
(update + Adam + apply_updates) with the parameters and optimizer state
donated, fed a fixed gradient scaled by a lognormal factor that changes every
step, so norms land all over the window. Windows start full of such norms
(the steady state of a long run). Variants are timed in interleaved rounds in
one process; figures are medians over rounds.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoclip_optax import AutoClipState
from autoclip_optax import SkipSpikesState
from autoclip_optax import with_history
from benchmarks import variants

NUM_SCALES = 1024
DEFAULT_CASES = ('1M/100k', '10M/100k', '1k/1M', '10M/1M')


def full_window(state, rng):
  """Fills every window in ``state`` with lognormal norms."""

  def fill(node):
    if not isinstance(node, (AutoClipState, SkipSpikesState)):
      return node
    return with_history(node, rng.lognormal(size=node.history.shape))

  # skip_spikes's window first: with_history seeds the states inside it too.
  state = jax.tree.map(
    fill, state, is_leaf=lambda node: isinstance(node, SkipSpikesState)
  )
  return jax.tree.map(
    fill, state, is_leaf=lambda node: isinstance(node, AutoClipState)
  )


def make_step(tx, params, grads, rng):
  """A donated, jitted step; returns a zero-argument callable that runs it."""
  scales = jnp.asarray(rng.lognormal(size=NUM_SCALES), jnp.float32)

  def step(params, state, step_number):
    scale = scales[step_number % NUM_SCALES]
    scaled_grads = jax.tree.map(lambda g: g * scale, grads)
    updates, state = tx.update(scaled_grads, state, params)
    return optax.apply_updates(params, updates), state, step_number + 1

  step = jax.jit(step, donate_argnums=(0, 1))
  carry = [
    (
      jax.tree.map(jnp.copy, params),
      full_window(tx.init(params), rng),
      jnp.int32(0),
    )
  ]

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    '--cases',
    default=','.join(DEFAULT_CASES),
    help='comma-separated params/window pairs',
  )
  parser.add_argument('--rounds', type=int, default=15)
  parser.add_argument('--calls', type=int, default=10)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  device = jax.devices()[0]
  print(
    f'jax {jax.__version__}, optax {optax.__version__}, '
    f'{device.platform}: {device.device_kind}, {args.rounds} rounds x '
    f'{args.calls} calls, medians'
  )
  print()
  print(
    '| params, window | variant | step (ms) | vs clip_by_global_norm '
    '| vs Adam alone |'
  )
  print('|---|---|---|---|---|')
  for case in args.cases.split(','):
    num_params, max_history = map(variants.parse_count, case.split('/'))
    params, grads = variants.model(num_params)
    runners = {
      name: make_step(tx, params, grads, rng)
      for name, tx in variants.variants(max_history).items()
    }
    medians = interleaved_medians(runners, args.rounds, args.calls)
    for name, seconds in medians.items():
      print(
        f'| {case} | {name} | {seconds * 1e3:.3f} | '
        f'{seconds / medians[variants.BASELINE]:.2f}x | '
        f'{seconds / medians[variants.ADAM]:.2f}x |',
        flush=True,
      )


if __name__ == '__main__':
  main()
