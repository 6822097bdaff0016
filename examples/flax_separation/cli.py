"""Flags and error reporting that the example's commands share."""

import contextlib
import hashlib
import json
import pathlib
import socket
import sys
import time
from collections.abc import Iterator, Sequence

from absl import app
from absl import flags
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
import numpy as np

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
  and the flags of a multi-host run.

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
    'other processes on Cloud TPU, SLURM, Open MPI and Kubernetes. '
    'Implied by --coordinator_address.',
  )
  flags.DEFINE_string(
    'coordinator_address',
    None,
    'host:port of process 0, where the processes meet, for a set-up JAX '
    'does not detect (several processes on one machine: 127.0.0.1:<port>). '
    'Needs --num_processes and --process_id.',
  )
  flags.DEFINE_integer('num_processes', None, 'Processes of the run.')
  flags.DEFINE_integer('process_id', None, "This process's index, from 0.")
  flags.DEFINE_integer(
    'initialization_timeout',
    300,
    'Seconds the processes wait for each other (and for the coordinator) '
    'when they start, before they stop with an error.',
  )
  flags.mark_flags_as_required(['workdir'])
  flags.register_multi_flags_validator(
    ['coordinator_address', 'num_processes', 'process_id'],
    lambda values: (
      values['coordinator_address'] is None or None not in values.values()
    ),
    '--coordinator_address needs --num_processes and --process_id',
  )
  app.call_after_init(_initialize_multihost)


class ProcessesDisagreeError(RuntimeError):
  """The processes of a multi-host run were started with other settings."""


def _initialize_multihost() -> None:
  if not multihost():
    return
  # On CPU the processes' devices all-reduce through gloo.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if FLAGS.coordinator_address is not None:
    if FLAGS.process_id != 0:
      _wait_for_coordinator(
        FLAGS.coordinator_address, FLAGS.initialization_timeout
      )
    # JAX's own error, should a process not come, names none of this.
    print(
      f'Process {FLAGS.process_id} of {FLAGS.num_processes}: waiting up to '
      f'{FLAGS.initialization_timeout} s (--initialization_timeout) for '
      f'every process at {FLAGS.coordinator_address}; if one does not '
      'come, JAX stops this one with DEADLINE_EXCEEDED.',
      file=sys.stderr,
      flush=True,
    )
  # Without --coordinator_address, JAX finds the three itself.
  jax.distributed.initialize(
    coordinator_address=FLAGS.coordinator_address,
    num_processes=FLAGS.num_processes,
    process_id=FLAGS.process_id,
    initialization_timeout=FLAGS.initialization_timeout,
  )
  try:
    check_processes_agree(_settings_hash())
  except ProcessesDisagreeError as error:
    sys.exit(f'Error: {error}')


def multihost() -> bool:
  """Whether the command is one process of several (``--multihost``)."""
  return FLAGS.multihost or FLAGS.coordinator_address is not None


def _wait_for_coordinator(address: str, timeout: float) -> None:
  """Returns once ``address`` accepts connections; exits after ``timeout``.

  JAX's own wait ends in an abort whose message names no address.
  """
  host, _, port = address.rpartition(':')
  host = host.strip('[]')  # An IPv6 address is written [::1]:port.
  deadline = time.monotonic() + timeout
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=1).close()
      return
    except OSError:
      if time.monotonic() > deadline:
        sys.exit(
          f'Error: the coordinator at {address} (process 0) could not be '
          f'reached within --initialization_timeout={timeout:g} seconds; '
          'start process 0 with the same --coordinator_address, or check '
          'that this host reaches it'
        )
      time.sleep(0.5)


def _settings_hash() -> str:
  """SHA-256 of the config and the command's flags, but ``--process_id``."""
  settings = {
    flag.name: flag.serialize()
    for module in (__name__, sys.argv[0])
    for flag in FLAGS.get_flags_for_module(module)
    if flag.name not in ('config', 'process_id')
  }
  settings['config'] = FLAGS.config.to_json(sort_keys=True)
  return hashlib.sha256(
    json.dumps(settings, sort_keys=True).encode()
  ).hexdigest()


def check_processes_agree(settings_hash: str) -> None:
  """Checks that every process of the run hashed the same settings.

  Processes with other settings would take other steps, and wait for each
  other in a collective for ever.

  Args:
    settings_hash: this process's hash of its settings, in hex.

  Raises:
    ProcessesDisagreeError: naming each process whose hash differs from
      process 0's, and both hashes.
  """
  digest = np.frombuffer(bytes.fromhex(settings_hash), np.uint8)
  hashes = [
    bytes(row).hex()
    for row in np.asarray(multihost_utils.process_allgather(digest))
  ]
  differing = [
    f'process {index} has {other}'
    for index, other in enumerate(hashes)
    if other != hashes[0]
  ]
  if differing:
    raise ProcessesDisagreeError(
      'the processes were started with different settings (SHA-256 of the '
      f'config and flags): process 0 has {hashes[0]}, '
      + ', '.join(differing)
      + '; start every process with the same command but --process_id'
    )


def parallel_runs() -> int:
  """Reads ``--parallel_runs``: 1 on several hosts, else at least 1."""
  if FLAGS.parallel_runs < 1:
    raise app.UsageError(
      f'--parallel_runs must be at least 1, got {FLAGS.parallel_runs}'
    )
  return 1 if multihost() else FLAGS.parallel_runs


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
