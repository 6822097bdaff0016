"""Trains the separation network with AutoClip and without, and compares.

Example (the README's main job):

  python -m examples.flax_separation.main --workdir=workdir \
      --config=examples/flax_separation/configs/default.py

Trains one run per percentile in ``--percentiles`` (default AutoClip p=10
against p=100, no clipping) under ``<workdir>/p<percentile>``, on data under
``<workdir>/data``, then prints a table of test SI-SDRi and writes
``<workdir>/comparison.json`` and ``<workdir>/training_curves.png``.
"""

import json
import pathlib

from absl import app
from absl import logging

from examples.flax_separation import cli
from examples.flax_separation import loss_registry
from examples.flax_separation import plots
from examples.flax_separation import train

FLAGS = cli.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  percentiles = cli.parse_percentiles(FLAGS.percentiles)
  workdir = pathlib.Path(FLAGS.workdir)
  runs = {}
  results = {}
  for percentile in percentiles:
    config = cli.run_config(FLAGS.config, workdir, percentile)
    label = f'p={percentile:g}'
    runs[label] = workdir / f'p{percentile:g}'
    results[label] = train.train_and_evaluate(config, runs[label])

  plots.plot_runs(runs, workdir / 'training_curves.png',
                  loss_registry.get(FLAGS.config.loss).title)
  summary = {label: {key: result[key] for key in (
      'test_si_sdri', 'test_si_sdr', 'best_valid_si_sdri', 'steps',
      'train_seconds')} for label, result in results.items()}
  (workdir / 'comparison.json').write_text(json.dumps(summary, indent=2))
  print()
  print('| run | test SI-SDRi (dB) | test SI-SDR (dB) | best valid SI-SDRi '
        '(dB) | steps | train time (s) |')
  print('|---|---|---|---|---|---|')
  for label, row in summary.items():
    print(f'| {label} | {row["test_si_sdri"]:.2f} | {row["test_si_sdr"]:.2f} '
          f'| {row["best_valid_si_sdri"]:.2f} | {row["steps"]} | '
          f'{row["train_seconds"]:.0f} |')
  print(f'\nplots: {workdir / "training_curves.png"}')


if __name__ == '__main__':
  cli.define_common_flags((10.0, 100.0),
                          'AutoClip percentiles to train with, one run each')
  app.run(main)
