"""Flags and error reporting that the example's commands share."""

import contextlib
import pathlib
import sys
from collections.abc import Iterator, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from examples.flax_separation import checkpointing
from examples.flax_separation import workdirs

FLAGS = flags.FLAGS
CONFIGS = pathlib.Path(__file__).parent / 'configs'


def define_common_flags(
  default_percentiles: Sequence[float],
  percentiles_help: str,
  default_config: str = 'default.py',
) -> None:
  """Defines --workdir (required), --percentiles, --config, --parallel_runs
  and --multihost.

  Called by each command when it runs, not on import, so that the commands'
  modules can be imported together.

  Args:
    default_percentiles: the command's AutoClip percentiles.
    percentiles_help: what one percentile stands for in the command.
    default_config: the file under ``configs/`` that ``--config`` reads
      unless given.
  """
  flags.DEFINE_string('workdir', None, 'Where everything is written.')
  flags.DEFINE_list(
    'percentiles',
    [f'{p:g}' for p in default_percentiles],
    f'{percentiles_help}; 100 never clips.',
  )
  config_flags.DEFINE_config_file(
    'config',
    str(CONFIGS / default_config),
    'Hyperparameters.',
    lock_config=True,
  )
  flags.DEFINE_integer(
    'parallel_runs',
    2,
    'Runs trained at once, each in a process of its own (runs.train_runs); '
    'their results do not depend on it. 1 trains them in turn in this '
    'process, as on one accelerator. Always 1 with --multihost.',
  )
  flags.DEFINE_bool(
    'multihost',
    False,
    'One process of a run over several hosts: calls '
    'jax.distributed.initialize() before anything else, which finds the '
    'other processes on Cloud TPU, SLURM, Open MPI and Kubernetes.',
  )
  flags.mark_flags_as_required(['workdir'])
  app.call_after_init(_initialize_multihost)


def _initialize_multihost() -> None:
  if FLAGS.multihost:
    jax.distributed.initialize()


def parallel_runs() -> int:
  """Reads ``--parallel_runs``: 1 with ``--multihost``, else at least 1."""
  if FLAGS.parallel_runs < 1:
    raise app.UsageError(
      f'--parallel_runs must be at least 1, got {FLAGS.parallel_runs}'
    )
  return 1 if FLAGS.multihost else FLAGS.parallel_runs


def parse_percentiles(values: Sequence[str]) -> list[float]:
  """Reads ``--percentiles``; raises ``app.UsageError`` unless in [0, 100]."""
  if not values:
    raise app.UsageError(
      '--percentiles must be one or more numbers in [0, 100], got none'
    )
  try:
    percentiles = [float(value) for value in values]
  except ValueError as error:
    raise app.UsageError(f'--percentiles must be numbers: {error}') from None
  if not all(0 <= p <= 100 for p in percentiles):
    raise app.UsageError(f'--percentiles must be in [0, 100], got {values}')
  return percentiles


def run_config(
  config: ml_collections.ConfigDict,
  workdir: pathlib.Path,
  percentile: float,
  seed: int | None = None,
) -> ml_collections.ConfigDict:
  """A copy of ``config`` for one run of a command that trains several.

  Args:
    config: the settings shared by the command's runs.
    workdir: the command's work directory; the runs share the espeak2mix set
      generated under ``<workdir>/data`` unless ``config.data_dir`` is set.
    percentile: the run's AutoClip percentile.
    seed: the run's ``config.seed``; ``config``'s own if None.

  Returns:
    The run's config.
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.autoclip_percentile = float(percentile)
    if seed is not None:
      config.seed = seed
    if config.dataset == 'espeak2mix' and not config.data_dir:
      config.data_dir = str(pathlib.Path(workdir) / 'data')
  return config


@contextlib.contextmanager
def errors_as_messages() -> Iterator[None]:
  """Ends a command with only the message of an error its user acts on.

  A busy work directory (``workdirs.WorkdirInUseError``) or a damaged
  checkpoint (``checkpointing.DamagedCheckpointError``) says what to do;
  a traceback would bury it.
  """
  try:
    yield
  except (
    workdirs.WorkdirInUseError,
    checkpointing.DamagedCheckpointError,
  ) as error:
    sys.exit(f'Error: {error}')
