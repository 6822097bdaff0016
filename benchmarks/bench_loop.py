"""Steps/s of the example's whole training loop against ``train_step`` alone.

The loop (`train.training_loop`) reads batches from disk in background
threads, splits each over the devices, runs `train.train_step`, and fetches
the metrics every `config.log_every_steps`. The baseline runs
`train.train_step` alone on the same batches, already on the devices, and
waits only at the end. Their ratio is the share of the devices' time that the
loop keeps them busy; the goal is 0.95 or more.

Both run on a WSJ0-2mix-layout set of noise (`bench_input_pipeline`), at the
paper's batch of 25 x 400 frames, on a network small enough for a CPU by
default (`--num_layers`, `--hidden_size`). The two alternate for `--rounds`
rounds, so that load from other processes affects both alike, and the
median of each is reported.

Usage:
  python -m benchmarks.bench_loop   # from the repository root
"""

import argparse
import itertools
import pathlib
import statistics
import tempfile
import time

import jax

from benchmarks import bench_input_pipeline
from examples.flax_separation import input_pipeline
from examples.flax_separation import optimization
from examples.flax_separation import sharding
from examples.flax_separation import train


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=40)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--num_layers', type=int, default=1)
  parser.add_argument('--hidden_size', type=int, default=64)
  parser.add_argument('--log_every_steps', type=int, default=50)
  args = parser.parse_args()
  config = bench_input_pipeline.paper_batch_config()
  config.num_layers = args.num_layers
  config.hidden_size = args.hidden_size
  config.log_every_steps = args.log_every_steps
  # One epoch longer than the timed steps: no end-of-epoch fetch among them.
  config.checkpoint_every_steps = args.steps + 1

  with tempfile.TemporaryDirectory() as scratch:
    root = bench_input_pipeline.write_wsj0_2mix_layout(
      pathlib.Path(scratch), config.batch_size * (args.steps + 1)
    )
    split = input_pipeline.load_split(root, 'train')
    model = train.create_model(config)
    optimizer = optimization.create_optimizer(
      model, config, input_pipeline.num_training_steps(len(split), config)
    )
    mesh = sharding.data_parallel_mesh()
    sharding.replicate(mesh, model, optimizer)
    batches = [
      sharding.shard_batch(mesh, rows)
      for rows in itertools.islice(
        input_pipeline.training_stream(split, config), args.steps
      )
    ]

    def train_step_alone():
      for mixture, sources in batches:
        metrics = train.train_step(
          model, optimizer, mixture, sources, config.loss, config.chimera_alpha
        )
      return metrics

    def whole_loop():
      for step in train.training_loop(model, optimizer, split, config):
        if step.number == args.steps:
          return step.metrics

    def steps_per_second(run):
      started = time.perf_counter()
      jax.block_until_ready(run())
      return args.steps / (time.perf_counter() - started)

    steps_per_second(train_step_alone)  # Compiles.
    rates = {train_step_alone: [], whole_loop: []}
    for _ in range(args.rounds):
      for run, runs_rates in rates.items():
        runs_rates.append(steps_per_second(run))
    alone, loop = (statistics.median(r) for r in rates.values())
    print(
      f'{jax.device_count()} x {jax.devices()[0].device_kind}, '
      f'{config.num_layers} x {config.hidden_size} BLSTM, batch '
      f'{config.batch_size} x {config.excerpt_frames} frames, '
      f'{args.steps} steps, median of {args.rounds} rounds:'
    )
    print(f'  train_step alone: {alone:.2f} steps/s')
    print(f'  whole loop:       {loop:.2f} steps/s')
    print(f'  ratio:            {loop / alone:.3f}')


if __name__ == '__main__':
  main()
