"""Autoclip as 2 JAX processes (multi-controller, gloo), against 1 process.

Each run trains the same small model for 60 steps on 4 host devices: as 2
processes of 2 devices, which meet through ``jax.distributed``, or as 1
process of 4. See ``multiprocess_child.py``.
"""

import subprocess
import sys

import numpy as np
import pytest

from tests.processes import REPO_ROOT
from tests.processes import cpu_environment
from tests.processes import free_port
from tests.processes import succeeded

VARIANTS = ('global', 'leaf', 'skip_spikes')


def start_processes(tmp_path, num_processes):
  """Starts one job's processes; returns them and their output folders.

  Each process trains every variant in turn: one start of the processes
  (importing JAX, meeting the others) serves them all.
  """
  address = f'127.0.0.1:{free_port()}'
  outputs = [
    tmp_path / f'{num_processes}-{index}' for index in range(num_processes)
  ]
  for out in outputs:
    out.mkdir()
  processes = [
    subprocess.Popen(
      [
        sys.executable,
        '-m',
        'tests.multiprocess_child',
        ','.join(VARIANTS),
        str(out),
        str(num_processes),
        str(index),
        address,
      ],
      cwd=REPO_ROOT,
      env=cpu_environment(4 // num_processes),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for index, out in enumerate(outputs)
  ]
  return processes, outputs


def run_jobs(tmp_path, *jobs):
  """Starts every job's processes at once, waits for all of them.

  Args:
    tmp_path: where the processes write their records.
    *jobs: each job's number of processes.

  Returns:
    Per job, each process's records by variant.
  """
  started = [start_processes(tmp_path, num_processes) for num_processes in jobs]
  succeeded([process for job, _ in started for process in job])
  return [
    [
      {variant: dict(np.load(out / f'{variant}.npz')) for variant in VARIANTS}
      for out in outputs
    ]
    for _, outputs in started
  ]


@pytest.fixture(scope='module')
def all_runs(tmp_path_factory):
  two_processes, (one_process,) = run_jobs(
    tmp_path_factory.mktemp('runs'), 2, 1
  )
  return two_processes, one_process


@pytest.fixture(params=VARIANTS)
def runs(request, all_runs):
  """One variant's records: ``((first, second), one_process)``."""
  (first, second), one_process = all_runs
  return (
    (first[request.param], second[request.param]),
    one_process[request.param],
  )


def test_both_processes_hold_the_same_state_bit_for_bit(runs):
  (first, second), _ = runs
  assert first.keys() == second.keys()
  for name in first:
    np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def test_autoclip_clipped_and_recorded_in_the_two_process_run(runs):
  (first, _), _ = runs
  thresholds = next(
    value for name, value in first.items() if name.endswith('.threshold')
  )
  norms = next(
    value for name, value in first.items() if name.endswith('.grad_norm')
  )
  assert np.isfinite(thresholds[-1]).all()
  assert (norms[1:] > thresholds[1:]).any()  # It did clip.


def test_two_processes_equal_one_process_of_four_devices(runs):
  # Both sum the squares and gradients of 4 shards, in an order that XLA's
  # in-process all-reduce and gloo's need not share, so equal to float32
  # rounding, not bit for bit; the integer state (counts, ranks) is exact.
  (two_processes, _), one_process = runs
  assert two_processes.keys() == one_process.keys()
  for name, value in one_process.items():
    if np.issubdtype(value.dtype, np.integer):
      np.testing.assert_array_equal(two_processes[name], value, err_msg=name)
    else:
      np.testing.assert_allclose(
        two_processes[name], value, rtol=2e-5, atol=1e-6, err_msg=name
      )
