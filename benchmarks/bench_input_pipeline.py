"""Measures the example's streaming input pipeline: memory and throughput.

Writes two WSJ0-2mix-layout training sets of random 16-bit 8 kHz noise, with
mixtures of 2 to 8 seconds (WSJ0-2mix's "min" lengths), of `--mixtures` and
of 8 times as many. For each, `--repeats` fresh processes, alternating
between the sets, train `--steps` steps of the example's loop
(`train.training_loop`, batches of 25 excerpts of 400 frames, the paper's, on
a 1 x 64 BLSTM) and report their peak RSS: the pipeline reads mixtures from
disk as needed, so the two sets should differ by little (under 100 MB). Then it
times the pipeline alone, reading batches of 25 as fast as it can, against
the step time, to show that no step waits for a batch.

Usage:
  python -m benchmarks.bench_input_pipeline   # from the repository root
"""

import argparse
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf

from examples.flax_separation import input_pipeline
from examples.flax_separation import optimization
from examples.flax_separation import spectral
from examples.flax_separation.configs import default


def write_wsj0_2mix_layout(
  root: pathlib.Path, num_mixtures: int, seed: int = 0
) -> pathlib.Path:
  """Writes ``<root>/tr/{mix,s1,s2}/<name>.wav`` noise mixtures; returns root."""
  rng = np.random.default_rng(seed)
  for folder in ('mix', 's1', 's2'):
    (root / 'tr' / folder).mkdir(parents=True, exist_ok=True)
  for index in range(num_mixtures):
    num_samples = int(rng.uniform(2, 8) * spectral.SAMPLE_RATE)
    sources = 0.1 * rng.standard_normal((2, num_samples))
    for folder, samples in zip(
      ('mix', 's1', 's2'), (sources.sum(axis=0), *sources)
    ):
      sf.write(
        root / 'tr' / folder / f'{index:06d}.wav',
        samples,
        spectral.SAMPLE_RATE,
        subtype='PCM_16',
      )
  return root


def paper_batch_config():
  """The paper's batches (25 x 400 frames) on a small BLSTM for a CPU."""
  config = default.get_config()
  config.batch_size = 25
  config.excerpt_frames = 400
  config.num_layers = 1
  config.hidden_size = 64
  return config


def train_and_report_peak_rss(root: str, steps: int) -> None:
  """Trains ``steps`` steps on the set at ``root``; prints the peak RSS."""
  # Imported here: the parent process measures the pipeline without JAX.
  import jax
  from examples.flax_separation import train

  config = paper_batch_config()
  split = input_pipeline.load_split(root, 'train')
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(
    model, config, input_pipeline.num_training_steps(len(split), config)
  )
  started = time.perf_counter()
  for step in train.training_loop(model, optimizer, split, config):
    if step.number == steps:
      break
  jax.block_until_ready(step.metrics)
  seconds_per_step = (time.perf_counter() - started) / steps
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f'{peak_mb:.0f} {seconds_per_step:.3f}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--mixtures', type=int, default=250)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument(
    '--child', nargs=2, metavar=('ROOT', 'STEPS'), help=argparse.SUPPRESS
  )
  args = parser.parse_args()
  if args.child:
    train_and_report_peak_rss(args.child[0], int(args.child[1]))
    return

  with tempfile.TemporaryDirectory() as scratch:
    roots = {}
    for num_mixtures in (args.mixtures, 8 * args.mixtures):
      roots[num_mixtures] = root = write_wsj0_2mix_layout(
        pathlib.Path(scratch) / str(num_mixtures), num_mixtures
      )
      on_disk = sum(path.stat().st_size for path in root.rglob('*.wav'))
      in_memory = 4 * sum(sf.info(path).frames for path in root.rglob('*.wav'))
      print(
        f'{num_mixtures:6d} mixtures: {on_disk / 2**20:.0f} MB on disk, '
        f'{in_memory / 2**20:.0f} MB as float32'
      )
    peaks = {num_mixtures: [] for num_mixtures in roots}
    step_seconds = []
    # Alternating, so that other load affects both sizes alike.
    for _ in range(args.repeats):
      for num_mixtures, root in roots.items():
        child = subprocess.run(
          [
            sys.executable,
            '-m',
            'benchmarks.bench_input_pipeline',
            '--child',
            str(root),
            str(args.steps),
          ],
          capture_output=True,
          text=True,
          check=True,
        )
        peak_mb, seconds = map(float, child.stdout.split()[-2:])
        peaks[num_mixtures].append(peak_mb)
        step_seconds.append(seconds)
    for num_mixtures, peak_mbs in peaks.items():
      print(
        f'{num_mixtures:6d} mixtures: peak RSS of {args.steps} training '
        f'steps, {args.repeats} processes: '
        + ', '.join(f'{peak:.0f}' for peak in peak_mbs)
        + ' MB'
      )
    small, large = (statistics.median(p) for p in peaks.values())
    print(f'difference of the medians: {large - small:.0f} MB')

    config = paper_batch_config()
    batches = input_pipeline.training_stream(
      input_pipeline.load_split(roots[8 * args.mixtures], 'train'), config
    )
    next(batches)  # Starts the reading threads.
    started = time.perf_counter()
    for _ in range(args.steps):
      next(batches)
    batch_seconds = (time.perf_counter() - started) / args.steps
    print(
      f'pipeline alone: {batch_seconds * 1e3:.1f} ms a batch of '
      f'{config.batch_size} x {config.excerpt_frames} frames '
      f'({input_pipeline.READ_THREADS} reading threads); a training step '
      f'above took {min(step_seconds) * 1e3:.0f} ms at best, '
      f'{min(step_seconds) / batch_seconds:.0f}x longer'
    )


if __name__ == '__main__':
  main()
