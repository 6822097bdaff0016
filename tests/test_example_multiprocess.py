"""The example's main job as 2 JAX processes, on one machine.

Each process has 2 host devices and they meet through ``jax.distributed``
(``--coordinator_address``), with gloo all-reducing between them: one
4-device mesh, as on 2 hosts. The tiny run (2 epochs of 2 steps,
checkpointed after steps 2 and 4), killed after step 2 and started again,
is compared with 1 uninterrupted process of the same 4 devices. Process 1
runs under ``strace`` where it is installed, to list the files it writes.
"""

import json
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import example_helpers
from tests.processes import REPO_ROOT
from tests.processes import TIMEOUT_SECONDS
from tests.processes import cpu_environment
from tests.processes import free_port
from tests.processes import outputs
from tests.processes import succeeded

NUM_DEVICES = 4
RUN = pathlib.Path('seed0', 'p10')
# The tiny run, as main.py's flags: 8 training mixtures in batches of 4.
FLAGS = (
  '--percentiles=10',
  *(
    f'--config.{name}={value}'
    for name, value in {
      **example_helpers.ESPEAK2MIX_COUNTS,
      'hidden_size': 8,
      'num_layers': 1,
      'batch_size': 4,
      'excerpt_frames': 40,
      'num_epochs': 2,
      'checkpoint_every_steps': 2,
      'eval_batch_size': 4,
      'num_example_wavs': 1,
      'log_every_steps': 1,
      'autoclip_max_history': 100,
    }.items()
  ),
)
# What strace records of process 1: the system calls that write files (it
# may make directories: every process makes the work directory).
_WRITING_CALLS = 'openat,creat,rename,renameat,renameat2,unlink,unlinkat'


def start(workdir, *flags, num_processes=2, trace=None):
  """Starts one process of main.py's job on ``workdir``.

  Args:
    workdir: the job's work directory.
    *flags: more flags, e.g. ``--coordinator_address``.
    num_processes: processes of the job; its 4 devices are split over them.
    trace: a file for strace's record of the files it writes, or None.
  """
  command = [
    sys.executable,
    '-m',
    'examples.flax_separation.main',
    f'--workdir={workdir}',
    *FLAGS,
    *flags,
  ]
  if trace is not None:
    command = [
      'strace',
      '-f',
      '--seccomp-bpf',
      '-qq',
      f'--trace={_WRITING_CALLS}',
      f'--output={trace}',
      *command,
    ]
  return subprocess.Popen(
    command,
    cwd=REPO_ROOT,
    env=cpu_environment(NUM_DEVICES // num_processes),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )


def start_processes(workdir, name, *flags, traced=False):
  """Starts the 2 processes of the job.

  With ``traced``, process 1 runs under strace, which writes to
  ``<name>-process1.strace`` beside ``workdir``.
  """
  address = f'--coordinator_address=127.0.0.1:{free_port()}'
  return [
    start(
      workdir,
      address,
      '--num_processes=2',
      f'--process_id={index}',
      *flags,
      trace=workdir.parent / f'{name}-process1.strace'
      if traced and index
      else None,
    )
    for index in range(2)
  ]


def final_state(run_dir):
  """The run's last checkpoint, as NumPy, by path.

  The paths of the model's state begin with ``['0']``, the optimizer's with
  ``['1']``.
  """
  path = run_dir / 'checkpoints' / '4' / 'state'
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata.tree
    restored = checkpointer.restore(
      path,
      args=ocp.args.PyTreeRestore(
        restore_args=jax.tree.map(
          lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree
        )
      ),
    )
  return {
    jax.tree_util.keystr(path): value
    for path, value in jax.tree_util.tree_leaves_with_path(restored)
  }


def results(run_dir):
  """``results.json`` without what may differ: time and data directory."""
  written = json.loads((run_dir / 'results.json').read_text())
  del written['train_seconds'], written['config']['data_dir']
  return written


@pytest.fixture(scope='module')
def jobs(tmp_path_factory, espeak2mix_dir):
  """The job as 1 process of 4 devices, and as 2 processes, killed once.

  Both start at once: each leaves the cores idle while it starts or waits.
  The 1-process job is uninterrupted. The 2-process job generates its
  espeak2mix set; once its checkpoint 2 is whole, process 1 is killed, and
  process 0 then too (it would wait for process 1 in the next collective
  until JAX's heartbeat timeout, 100 s); both are started again.

  Returns:
    ``(one_process, two_processes, outputs)``: the work directories, and
    each start's output of each of the 2 processes.
  """
  one_process = tmp_path_factory.mktemp('one_process') / 'job'
  two_processes = tmp_path_factory.mktemp('two_processes') / 'job'
  traced = shutil.which('strace') is not None
  checksums = two_processes / RUN / 'checkpoints' / '2' / 'sha256sums.json'
  reference = start(
    one_process, f'--config.data_dir={espeak2mix_dir}', num_processes=1
  )
  try:
    processes = start_processes(two_processes, 'killed', traced=traced)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not checksums.exists():
      assert time.monotonic() < deadline and processes[0].poll() is None
      time.sleep(0.1)
    for process in reversed(processes):
      process.send_signal(signal.SIGKILL)
    killed = [output for _, output in outputs(processes)]
    assert not (two_processes / RUN / 'results.json').exists()
    resumed = succeeded(
      start_processes(two_processes, 'resumed', traced=traced)
    )
    succeeded([reference])
  finally:
    reference.kill()
  return one_process, two_processes, [killed, resumed]


@pytest.fixture(scope='module')
def one_process(jobs):
  """The 1-process job's work directory."""
  return jobs[0]


@pytest.fixture(scope='module')
def two_processes(jobs):
  """The 2-process job's work directory, and its outputs."""
  return jobs[1:]


def test_killed_and_resumed_two_processes_equal_one_uninterrupted_process(
  one_process, two_processes
):
  # Each sums the gradients of 4 shards, gloo between the 2 processes and
  # XLA within one, in orders that need not be the same: the metrics are
  # equal to float32 rounding (1e-5 relative), not bit for bit. Adam moves a
  # parameter by up to its learning rate (1e-3) whatever the size of its
  # gradient, so a gradient near 0, rounded otherwise, can move a parameter
  # by some 1e-6 more (atol 1e-5 for the model's state, 1e-7 for the
  # optimizer's). A resume that lost any state, or took other batches,
  # would move most parameters by about 1e-3 more.
  # The steps and AutoClip's counters are integers, and exact.
  workdir, _ = two_processes
  log, expected_log = (
    example_helpers.read_log(directory / RUN)
    for directory in (workdir, one_process)
  )
  assert [record['step'] for record in log] == [1, 2, 3, 4]
  for record, expected in zip(log, expected_log, strict=True):
    assert record.keys() == expected.keys()
    for key in ('loss', 'grad_norm', 'threshold', 'step_size'):
      np.testing.assert_allclose(record[key], expected[key], rtol=1e-5)
    assert record['clipped'] == expected['clipped']
  state, expected_state = (
    final_state(directory / RUN) for directory in (workdir, one_process)
  )
  assert state.keys() == expected_state.keys()
  for name, value in expected_state.items():
    if np.issubdtype(value.dtype, np.floating):
      of_model = name.startswith("['0']")
      np.testing.assert_allclose(
        state[name],
        value,
        rtol=1e-5,
        atol=1e-5 if of_model else 1e-7,
        err_msg=name,
      )
    else:
      np.testing.assert_array_equal(state[name], value, err_msg=name)
  scores, expected_scores = (
    results(directory / RUN) for directory in (workdir, one_process)
  )
  for key in ('test_si_sdr', 'test_si_sdri', 'best_valid_si_sdri'):
    np.testing.assert_allclose(
      scores.pop(key), expected_scores.pop(key), rtol=1e-5
    )
  assert scores == expected_scores
  assert (workdir / RUN / 'validation.jsonl').read_text().count('\n') == 2


def test_process_0_writes_the_results_logs_wavs_and_plot(two_processes):
  workdir, (_, (output, other_output)) = two_processes
  for path in (
    RUN / 'log.jsonl',
    RUN / 'validation.jsonl',
    RUN / 'results.json',
    'comparison.json',
    'training_curves.png',
  ):
    assert (workdir / path).is_file(), path
  assert len(list((workdir / RUN / 'separated').glob('*.wav'))) == 3
  assert 'test SI-SDRi' in output
  assert 'test SI-SDRi' not in other_output  # Process 0 reports.


@pytest.mark.parametrize('start_name', ['killed', 'resumed'])
def test_process_1_writes_no_file_but_its_checkpoint_shares(
  two_processes, start_name
):
  workdir, _ = two_processes
  trace = workdir.parent / f'{start_name}-process1.strace'
  if not trace.exists():
    pytest.skip('strace is not installed')
  written = set()
  for line in trace.read_text().splitlines():
    if f'"{workdir}' not in line or '= -1' in line:
      continue
    if line.split()[1].startswith('openat') and not any(
      mode in line for mode in ('O_WRONLY', 'O_RDWR', 'O_CREAT')
    ):
      continue
    written.add(line.split('"')[1])
  # Orbax saves each process's shards of a checkpoint in files of its own.
  shares = (f'{workdir / RUN}/checkpoints', f'{workdir / RUN}/best')
  assert not {path for path in written if not path.startswith(shares)}


def test_espeak2mix_is_generated_once_by_process_0(two_processes):
  workdir, ((output, other_output), resumed) = two_processes
  assert 'espeak2mix into' in output
  assert 'espeak2mix into' not in other_output + ''.join(resumed)
  manifest = json.loads((workdir / 'data' / 'espeak2mix.json').read_text())
  assert manifest['settings']['num_mixtures'] == {
    'train': 8,
    'valid': 2,
    'test': 2,
  }


@pytest.fixture(scope='module')
def alone(tmp_path_factory):
  """Process 0 and process 1 of 2, each on its own, with a 2 s timeout.

  Neither's peer ever starts: each has a coordinator address of its own.
  Both start at once, since they mostly wait.

  Returns:
    ``(ended, seconds)``: ``(exit status, output)`` of each process by id,
    and the seconds until both had ended, a bound on each one's time.
  """
  started = time.monotonic()
  ended = outputs(
    [
      start(
        tmp_path_factory.mktemp(f'alone{process_id}') / 'job',
        f'--coordinator_address=127.0.0.1:{free_port()}',
        '--num_processes=2',
        f'--process_id={process_id}',
        '--initialization_timeout=2',
        num_processes=2,
      )
      for process_id in (0, 1)
    ]
  )
  return ended, time.monotonic() - started


def test_unreachable_coordinator_stops_within_the_timeout(alone):
  (_, (status, output)), seconds = alone
  assert status != 0
  assert (
    'could not be reached within --initialization_timeout=2 seconds' in output
  )
  assert seconds < 60


def test_batch_not_divisible_by_processes_times_devices_is_an_error(
  tmp_path, espeak2mix_dir
):
  for status, output in outputs(
    start_processes(
      tmp_path / 'job',
      'divisible',
      f'--config.data_dir={espeak2mix_dir}',
      '--config.batch_size=6',
    )
  ):
    assert status != 0
    assert (
      'config.batch_size (6) must divide by the number of devices '
      '(4: 2 processes x 2 devices each)' in output
    ), output[-3000:]


def test_processes_with_different_configs_stop_naming_both_hashes(tmp_path):
  address = f'--coordinator_address=127.0.0.1:{free_port()}'
  ended = outputs(
    [
      start(
        tmp_path / 'job',
        address,
        '--num_processes=2',
        f'--process_id={index}',
        f'--config.learning_rate={rate}',
      )
      for index, rate in enumerate((0.001, 0.002))
    ]
  )
  for status, output in ended:
    assert status != 0
    assert 'started with different settings' in output, output[-3000:]
    hashes = output.split('process 0 has ')[1]
    assert 'process 1 has ' in hashes


def test_coordinator_address_needs_the_process_count_and_id(tmp_path):
  ((status, output),) = outputs(
    [start(tmp_path / 'job', '--coordinator_address=127.0.0.1:1')]
  )
  assert status != 0
  assert (
    '--coordinator_address needs --num_processes and --process_id' in output
  )


def test_process_0_stops_within_the_timeout_when_another_never_comes(alone):
  ((status, output), _), seconds = alone
  assert status != 0
  assert 'waiting up to 2 s (--initialization_timeout)' in output
  assert 'DEADLINE_EXCEEDED' in output
  assert seconds < 60
