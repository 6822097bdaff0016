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
from absl import flags
from absl import logging
from ml_collections import config_flags

from examples.flax_separation import plots
from examples.flax_separation import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Where everything is written.')
_PERCENTILES = flags.DEFINE_list(
    'percentiles', ['10', '100'],
    'AutoClip percentiles to train with, one run each; 100 never clips.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', str(pathlib.Path(__file__).parent / 'configs' / 'default.py'),
    'Hyperparameters.', lock_config=True)
flags.mark_flags_as_required(['workdir'])


def _percentiles() -> list[float]:
  try:
    values = [float(p) for p in _PERCENTILES.value]
  except ValueError as error:
    raise app.UsageError(f'--percentiles must be numbers: {error}') from None
  for value in values:
    if not 0 <= value <= 100:
      raise app.UsageError(f'--percentiles must be in [0, 100], got {value}')
  return values


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  percentiles = _percentiles()
  workdir = pathlib.Path(_WORKDIR.value)
  runs = {}
  results = {}
  for percentile in percentiles:
    config = _CONFIG.value.copy_and_resolve_references()
    with config.unlocked():
      config.autoclip_percentile = percentile
      if config.dataset == 'espeak2mix' and not config.data_dir:
        config.data_dir = str(workdir / 'data')
    label = f'p={percentile:g}'
    runs[label] = workdir / f'p{percentile:g}'
    results[label] = train.train_and_evaluate(config, runs[label])

  plots.plot_runs(runs, workdir / 'training_curves.png')
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
  app.run(main)
