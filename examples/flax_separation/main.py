"""Trains the separation network with AutoClip and without, and compares.

Example (the README's main job):

  python -m examples.flax_separation.main --workdir=workdir

Trains one run per percentile in ``--percentiles`` (default AutoClip p=10
against p=100, no clipping) and seed in ``--seeds`` (default 0) under
``<workdir>/seed<seed>/p<percentile>``, on data under ``<workdir>/data``,
then prints a table of every run's test SI-SDRi, and, per percentile, their
mean and standard deviation over the seeds and the difference to the last
percentile seed by seed. Writes ``<workdir>/comparison.json`` and
``<workdir>/training_curves.png``. ``--parallel_runs`` runs train at once,
each in a process of its own (``runs.train_runs``).
A run whose ``results.json`` was written with its config is not trained
again, so adding seeds trains only the new runs. The command holds
``<workdir>/lock`` while it runs: a second one on the same work directory
stops at once.
"""

import json
import pathlib
import sys
from collections.abc import Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from examples.flax_separation import cli
from examples.flax_separation import loss_registry
from examples.flax_separation import markdown
from examples.flax_separation import plots
from examples.flax_separation import runs
from examples.flax_separation import workdirs

FLAGS = cli.FLAGS
# What one row of the per-run table shows, as in each run's results.json.
_RUN_FIELDS = (
  'test_si_sdri',
  'test_si_sdr',
  'best_valid_si_sdri',
  'steps',
  'train_seconds',
)


def _label(percentile: float) -> str:
  return f'p={percentile:g}'


def _mean_std(values: Sequence[float], sign: str = '') -> str:
  if len(values) == 1:
    return f'{values[0]:{sign}.2f}'
  return f'{np.mean(values):{sign}.2f} ± {np.std(values, ddof=1):.2f}'


def summarise(
  results: Mapping[tuple[float, int], dict],
  percentiles: Sequence[float],
  seeds: Sequence[int],
) -> dict:
  """Test SI-SDRi per percentile over seeds, and paired differences.

  Args:
    results: ``train_and_evaluate``'s results of each (percentile, seed).
    percentiles: the compared percentiles; the last is the reference.
    seeds: the seeds every percentile was trained with.

  Returns:
    ``{'runs': ..., 'test_si_sdri': ..., 'differences': ...}``: each run's
    ``_RUN_FIELDS`` by percentile label and seed, each percentile's test
    SI-SDRi per seed, and each other percentile's test SI-SDRi minus the
    reference's, per seed (same seed: same initialisation and data order).
  """
  reference = percentiles[-1]
  scores = {
    _label(p): {seed: results[p, seed]['test_si_sdri'] for seed in seeds}
    for p in percentiles
  }
  return {
    'runs': {
      _label(p): {
        seed: {key: results[p, seed][key] for key in _RUN_FIELDS}
        for seed in seeds
      }
      for p in percentiles
    },
    'test_si_sdri': scores,
    'differences': {
      f'{_label(p)} - {_label(reference)}': {
        seed: scores[_label(p)][seed] - scores[_label(reference)][seed]
        for seed in seeds
      }
      for p in percentiles[:-1]
    },
  }


def render(summary: dict, seeds: Sequence[int]) -> str:
  """The per-run table, the per-percentile table and the paired differences."""
  lines = markdown.table(
    [
      'run',
      'seed',
      'test SI-SDRi (dB)',
      'test SI-SDR (dB)',
      'best valid SI-SDRi (dB)',
      'steps',
      'train time (s)',
    ],
    [
      [
        label,
        seed,
        f'{row["test_si_sdri"]:.2f}',
        f'{row["test_si_sdr"]:.2f}',
        f'{row["best_valid_si_sdri"]:.2f}',
        row['steps'],
        f'{row["train_seconds"]:.0f}',
      ]
      for label, by_seed in summary['runs'].items()
      for seed, row in by_seed.items()
    ],
  )
  seed_list = ', '.join(map(str, seeds))
  lines += [
    '',
    f'Test SI-SDRi (dB) over seeds {seed_list}'
    + (' (mean ± standard deviation)' if len(seeds) > 1 else '')
    + ':',
    '',
    *markdown.table(
      ['run', 'test SI-SDRi (dB)'],
      [
        [label, _mean_std(list(by_seed.values()))]
        for label, by_seed in summary['test_si_sdri'].items()
      ],
    ),
  ]
  differences = summary['differences']
  if differences:
    rows = [
      [seed, *(f'{by_seed[seed]:+.2f}' for by_seed in differences.values())]
      for seed in seeds
    ]
    if len(seeds) > 1:
      rows.append(
        [
          'mean ± std',
          *(
            _mean_std(list(by_seed.values()), '+')
            for by_seed in differences.values()
          ),
        ]
      )
    lines += [
      '',
      'Paired differences of test SI-SDRi (dB), seed by seed:',
      '',
      *markdown.table(['seed', *differences], rows),
    ]
  return '\n'.join(lines) + '\n'


def parse_seeds(values: Sequence[str]) -> list[int]:
  """Reads ``--seeds``; raises ``app.UsageError`` unless integers >= 0."""
  if not values or not all(value.strip().isdigit() for value in values):
    raise app.UsageError(
      f'--seeds must be one or more non-negative integers, got {values}'
    )
  return [int(value) for value in values]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  percentiles = cli.parse_percentiles(FLAGS.percentiles)
  seeds = parse_seeds(FLAGS.seeds)
  parallel_runs = cli.parallel_runs()
  workdir = pathlib.Path(FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with cli.errors_as_messages(), workdirs.lock(workdir):
    compare(workdir, percentiles, seeds, parallel_runs)


def compare(
  workdir: pathlib.Path,
  percentiles: Sequence[float],
  seeds: Sequence[int],
  parallel_runs: int,
) -> None:
  """Trains the runs, prints the tables, then writes them and the plot.

  On several hosts every process trains, and process 0 alone prints and
  writes.
  """
  results = dict(
    runs.train_runs(
      {
        (percentile, seed): (
          cli.run_config(FLAGS.config, workdir, percentile, seed),
          workdir / f'seed{seed}' / f'p{percentile:g}',
        )
        for seed in seeds
        for percentile in percentiles
      },
      parallel_runs,
    )
  )
  if not workdirs.writes_files():  # Process 0 reports for every process.
    return
  summary = summarise(results, percentiles, seeds)
  print()
  print(render(summary, seeds))
  if len(seeds) == 1 and len(percentiles) > 1:
    print(
      'One seed cannot decide the comparison: with another seed (another '
      'initialisation and batch order) the difference between the '
      'percentiles can change sign. To compare over three seeds, run\n'
      f'  python -m examples.flax_separation.main --workdir={workdir} '
      '--seeds=0,1,2\n'
      'which reuses the runs finished here.\n'
    )
  # Written after the tables are printed: a work directory that cannot be
  # written to still shows the results of its finished runs.
  try:
    (workdir / 'comparison.json').write_text(json.dumps(summary, indent=2))
    plots.plot_runs(
      {_label(p): workdir / f'seed{seeds[0]}' / f'p{p:g}' for p in percentiles},
      workdir / 'training_curves.png',
      loss_registry.get(FLAGS.config.loss).title,
    )
  except OSError as error:
    sys.exit(f'Error: the comparison above could not be saved: {error}')
  print(f'plots: {workdir / "training_curves.png"}')


if __name__ == '__main__':
  cli.define_common_flags(
    (10.0, 100.0),
    'AutoClip percentiles to train with, one run each; '
    'the last is the reference of the differences',
  )
  flags.DEFINE_list(
    'seeds',
    ['0'],
    'Seeds (config.seed) to train each '
    'percentile with: initialisation and data order.',
  )
  app.run(main)
