"""The paper's Table 1: test SI-SDR for every loss and AutoClip percentile.

Example (the README's sweep with the CPU default, ``configs/sweep_cpu.py``):

  python -m examples.flax_separation.sweep --workdir=workdir_sweep

Trains and evaluates one run per cell (loss, percentile) with
``train.train_and_evaluate`` under ``<workdir>/<loss>/p<percentile>``, on one
espeak2mix set under ``<workdir>/data``. A cell whose ``results.json`` was
written with the cell's config is finished and skipped; any other cell is
trained, resuming from its checkpoint where it has one. Afterwards the table
of every cell finished so far is written to ``<workdir>/table1.md`` and
printed, with '–' for cells not run yet.
"""

from collections.abc import Mapping, Sequence
import pathlib

from absl import app
from absl import flags
from absl import logging
import ml_collections

from examples.flax_separation import cli
from examples.flax_separation import loss_registry
from examples.flax_separation import markdown
from examples.flax_separation import runs
from examples.flax_separation import workdirs

FLAGS = flags.FLAGS

PAPER_PERCENTILES = (0.0, 1.0, 10.0, 25.0, 50.0, 90.0, 100.0)
# Config fields that vary per cell or only affect bookkeeping; the rest are
# the sweep's settings, listed above the table.
_PER_CELL_FIELDS = (
  'loss',
  'autoclip_percentile',
  'data_dir',
  'checkpoint_every_steps',
  'eval_batch_size',
  'num_example_wavs',
)


def cell_config(
  config: ml_collections.ConfigDict,
  workdir: pathlib.Path,
  loss: str,
  percentile: float,
) -> ml_collections.ConfigDict:
  """Returns ``config`` set up for one cell of the sweep.

  Args:
    config: the settings shared by every cell.
    workdir: the sweep's work directory; espeak2mix is generated under
      ``<workdir>/data`` unless ``config.data_dir`` says otherwise.
    loss: a key of ``loss_registry.LOSSES``.
    percentile: the AutoClip percentile.

  Raises:
    ValueError: if ``loss`` is not a key of ``loss_registry.LOSSES``.
  """
  loss_registry.get(loss)
  config = cli.run_config(config, workdir, percentile)
  with config.unlocked():
    config.loss = loss
  return config


def cell_dir(
  workdir: pathlib.Path, loss: str, percentile: float
) -> pathlib.Path:
  return pathlib.Path(workdir) / loss / f'p{percentile:g}'


def _settings(config: ml_collections.ConfigDict) -> str:
  return ', '.join(
    f'`{key}={value}`'
    for key, value in config.items()
    if key not in _PER_CELL_FIELDS
  )


def _percentile_header(percentile: float) -> str:
  return 'no clipping (p=100)' if percentile == 100 else f'p={percentile:g}'


def _table(
  metric: str,
  losses: Sequence[str],
  percentiles: Sequence[float],
  results: Mapping[tuple[str, float], dict],
) -> list[str]:
  """Markdown rows of one metric, the best finished cell of a row in bold."""
  rows = []
  for loss in losses:
    values = {
      p: results[loss, p][metric] for p in percentiles if (loss, p) in results
    }
    best = max(values.values(), default=None)
    rows.append(
      [
        f'{loss_registry.LOSSES[loss].title} ({loss})',
        *(
          '–'
          if p not in values
          else f'**{values[p]:.2f}**'
          if values[p] == best and len(values) > 1
          else f'{values[p]:.2f}'
          for p in percentiles
        ),
      ]
    )
  return markdown.table(
    ['loss', *map(_percentile_header, percentiles)], rows, right_aligned=True
  )


def render_table1(
  config: ml_collections.ConfigDict,
  losses: Sequence[str],
  percentiles: Sequence[float],
  results: Mapping[tuple[str, float], dict],
) -> str:
  """Lays the sweep out as the paper's Table 1, in Markdown.

  Args:
    config: the settings shared by every cell, listed above the tables.
    losses: the rows, keys of ``loss_registry.LOSSES``.
    percentiles: the columns.
    results: ``train_and_evaluate``'s results of each finished
      ``(loss, percentile)`` cell; the others are shown as '–'.

  Returns:
    The settings, a table of test SI-SDR and one of test SI-SDRi (dB).
  """
  steps = sorted({r['steps'] for r in results.values()})
  num_test = sorted({r['num_test_mixtures'] for r in results.values()})
  lines = [
    f'Settings: {_settings(config)}.',
    '',
    f'{len(results)} of {len(losses) * len(percentiles)} cells finished; '
    f'training steps per cell: {", ".join(map(str, steps)) or "–"}; '
    f'test mixtures: {", ".join(map(str, num_test)) or "–"}. '
    'The best cell of each row is in bold.',
    '',
    'Test SI-SDR (dB):',
    '',
    *_table('test_si_sdr', losses, percentiles, results),
    '',
    'Test SI-SDR improvement over the mixture, SI-SDRi (dB):',
    '',
    *_table('test_si_sdri', losses, percentiles, results),
  ]
  return '\n'.join(lines) + '\n'


def run_sweep(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  losses: Sequence[str],
  percentiles: Sequence[float],
  parallel_runs: int = 1,
) -> str:
  """Trains every unfinished cell and keeps ``table1.md`` up to date.

  The table is written before the first cell is trained and again after
  each, so an interrupted sweep leaves the table of the cells it finished.
  The sweep holds ``workdirs.lock(workdir)`` while it runs.

  Args:
    config: the settings shared by every cell.
    workdir: the sweep's work directory.
    losses: keys of ``loss_registry.LOSSES``.
    percentiles: AutoClip percentiles.
    parallel_runs: cells trained at once (``runs.train_runs``).

  Returns:
    The final Markdown of ``render_table1``, as in ``<workdir>/table1.md``.

  Raises:
    workdirs.WorkdirInUseError: if another process holds ``workdir``'s lock.
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdirs.lock(workdir):
    cells = [(loss, float(p)) for loss in losses for p in percentiles]
    configs = {cell: cell_config(config, workdir, *cell) for cell in cells}
    results = {}

    def write_table():
      table = render_table1(config, losses, percentiles, results)
      if workdirs.writes_files():
        workdirs.write_atomically(workdir / 'table1.md', table)
      return table

    table = write_table()
    cell_runs = {
      cell: (configs[cell], cell_dir(workdir, *cell)) for cell in cells
    }
    num_finished = sum(
      runs.finished_results(directory, cell_config) is not None
      for cell_config, directory in cell_runs.values()
    )
    print(
      f'{num_finished} of {len(cells)} cells already finished; training '
      f'{len(cells) - num_finished}'
    )
    for cell, cell_results in runs.train_runs(cell_runs, parallel_runs):
      results[cell] = cell_results
      print(f'[{len(results)}/{len(cells)}] {cell_dir(workdir, *cell)}')
      table = write_table()
    return table


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  config = FLAGS.config
  percentiles = cli.parse_percentiles(FLAGS.percentiles)
  try:
    for loss in FLAGS.losses:
      loss_registry.get(loss)
  except ValueError as error:
    raise app.UsageError(str(error)) from None
  with cli.errors_as_messages():
    table = run_sweep(
      config, FLAGS.workdir, FLAGS.losses, percentiles, cli.parallel_runs()
    )
  if workdirs.writes_files():  # Process 0 reports for every process.
    print(table)


if __name__ == '__main__':
  cli.define_common_flags(
    PAPER_PERCENTILES,
    'AutoClip percentiles, one column each',
    default_config='sweep_cpu.py',
  )
  flags.DEFINE_list(
    'losses',
    list(loss_registry.LOSSES),
    'Loss functions (config.loss), one row each.',
  )
  app.run(main)
