"""One process at a time in a work directory: a second stops at once."""

import os
import re
import signal
import subprocess
import sys

import pytest

from examples.flax_separation import train
from examples.flax_separation import workdirs
from tests.example_helpers import run_command
from tests.example_helpers import tiny_config

# Holds the lock of the directory it is given until its stdin closes.
_HOLDER = """
import sys
from examples.flax_separation import workdirs
with workdirs.lock(sys.argv[1]):
  print('locked', flush=True)
  sys.stdin.read()
"""


def start_holder(workdir):
  holder = subprocess.Popen(
    [sys.executable, '-c', _HOLDER, str(workdir)],
    stdin=subprocess.PIPE,
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline() == 'locked\n'
  return holder


@pytest.fixture(scope='module')
def busy_workdir(tmp_path_factory):
  """A work directory whose lock another process holds, and its pid."""
  workdir = tmp_path_factory.mktemp('busy')
  holder = start_holder(workdir)
  yield workdir, holder.pid
  holder.stdin.close()
  holder.wait()


def in_use_message(workdir, pid):
  return re.escape(
    f'{workdir} is in use by another run, process {pid} '
    f'(it holds {workdir / "lock"})'
  )


def test_run_in_a_busy_workdir_stops_before_reading_data(
  busy_workdir, tmp_path
):
  workdir, pid = busy_workdir
  with pytest.raises(
    workdirs.WorkdirInUseError, match=in_use_message(workdir, pid)
  ):
    train.train_and_evaluate(tiny_config(tmp_path / 'data', 1), workdir)
  assert not (tmp_path / 'data').exists()
  assert sorted(path.name for path in workdir.iterdir()) == ['lock']


@pytest.mark.parametrize('command', ['main', 'sweep', 'dynamics'])
def test_command_in_a_busy_workdir_is_one_line_naming_the_holder(
  busy_workdir, command
):
  workdir, pid = busy_workdir
  completed = run_command(command, f'--workdir={workdir}', '--percentiles=10')
  assert completed.returncode == 1
  assert re.fullmatch(
    'Error: ' + in_use_message(workdir, pid) + '.*\n', completed.stderr
  )
  assert sorted(path.name for path in workdir.iterdir()) == ['lock']


def test_lock_of_a_killed_process_does_not_block_the_next(tmp_path):
  holder = start_holder(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with workdirs.lock(tmp_path):
    assert (tmp_path / 'lock').read_text() == f'{os.getpid()}\n'
