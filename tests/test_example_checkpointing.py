"""Runs killed at any moment, or with damaged checkpoints, resume exactly.

Every run here is the same tiny run of two epochs of 4 steps, validated and
checkpointed after steps 3, 4, 6 and 8; whatever happened to it, it must end
with the results and logs of the same run left alone (``straight_run``, in
``conftest.py``).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from examples.flax_separation import checkpointing
from examples.flax_separation import train
from tests.example_helpers import assert_same_run
from tests.example_helpers import tiny_config
from tests.example_helpers import train_until


def run_config(data_dir):
  config = tiny_config(data_dir, 2)
  config.log_every_steps = 1
  return config


@pytest.fixture(scope='module')
def interrupted(tmp_path_factory, espeak2mix_dir):
  """The run stopped after step 6: checkpoints 4 and 6, best model 3."""
  workdir = tmp_path_factory.mktemp('interrupted')
  train_until(6, run_config(espeak2mix_dir), workdir)
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == [
    '4',
    '6',
  ]
  assert [path.name for path in (workdir / 'best').iterdir()] == ['3']
  return workdir


def copy_of(workdir, tmp_path):
  return shutil.copytree(workdir, tmp_path / 'run')


def largest_file(step_dir):
  return max(
    (path for path in step_dir.rglob('*') if path.is_file()),
    key=lambda path: path.stat().st_size,
  )


def write_random_bytes(step_dir):
  path = largest_file(step_dir)
  with path.open('r+b') as file:
    file.seek(path.stat().st_size // 2)
    file.write(np.random.default_rng(0).bytes(64))
  return path


def truncate(step_dir):
  path = largest_file(step_dir)
  os.truncate(path, path.stat().st_size // 2)
  return path


def empty_progress(step_dir):
  path = step_dir / 'progress' / 'metadata'
  path.write_text('')
  return path


DAMAGES = {
  'random_bytes': write_random_bytes,
  'truncated': truncate,
  'empty_progress': empty_progress,
}


@pytest.mark.parametrize('damage', DAMAGES)
def test_damaged_checkpoint_is_set_aside_and_the_one_before_resumes(
  interrupted, straight_run, espeak2mix_dir, tmp_path, caplog, damage
):
  workdir = copy_of(interrupted, tmp_path)
  step_dir = workdir / 'checkpoints' / '6'
  damaged_file = DAMAGES[damage](step_dir)
  damaged_bytes = damaged_file.read_bytes()
  train.train_and_evaluate(run_config(espeak2mix_dir), workdir)
  assert (
    f'Checkpoint step 6 is damaged: {damaged_file} does not match its checksum'
  ) in caplog.text
  assert 'resuming from step 4' in caplog.text
  set_aside = workdir / 'damaged' / 'checkpoints-6'
  assert (set_aside / damaged_file.relative_to(step_dir)).read_bytes() == (
    damaged_bytes
  )
  assert_same_run(workdir, straight_run)


def test_every_checkpoint_damaged_is_one_error_naming_each_file(
  interrupted, espeak2mix_dir, tmp_path
):
  workdir = copy_of(interrupted, tmp_path)
  newer = write_random_bytes(workdir / 'checkpoints' / '6')
  older = empty_progress(workdir / 'checkpoints' / '4')
  message = (
    f'every checkpoint in {workdir / "checkpoints"} is damaged: '
    f'step 6: {newer} does not match its checksum, written when it '
    f'was saved; step 4: {older} does not match'
  )
  with pytest.raises(
    checkpointing.DamagedCheckpointError, match=re.escape(message)
  ):
    train.train_and_evaluate(run_config(espeak2mix_dir), workdir)
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == [
    '4',
    '6',
  ]


def test_damaged_best_model_is_one_error_naming_the_file_and_step(
  interrupted, espeak2mix_dir, tmp_path
):
  workdir = copy_of(interrupted, tmp_path)
  damaged_file = write_random_bytes(workdir / 'best' / '3')
  with pytest.raises(
    checkpointing.DamagedCheckpointError,
    match=re.escape(
      f'saved at step 3, is damaged: {damaged_file} does not match'
    ),
  ):
    train.train_and_evaluate(run_config(espeak2mix_dir), workdir)
  assert not (workdir / 'results.json').exists()


def test_log_line_cut_by_a_kill_is_dropped_on_resume(
  interrupted, straight_run, espeak2mix_dir, tmp_path
):
  workdir = copy_of(interrupted, tmp_path)
  for log, cut_line in (
    ('log.jsonl', '{"step": 7, "loss": 0.2'),
    ('validation.jsonl', '{"step": 8, "si_sd'),
  ):
    with (workdir / log).open('a') as file:
      file.write(cut_line)
  train.train_and_evaluate(run_config(espeak2mix_dir), workdir)
  assert_same_run(workdir, straight_run)


def test_log_line_before_the_last_that_is_not_json_is_an_error(
  interrupted, espeak2mix_dir, tmp_path
):
  workdir = copy_of(interrupted, tmp_path)
  lines = (workdir / 'log.jsonl').read_text().splitlines()
  lines[2] = 'not json'
  (workdir / 'log.jsonl').write_text('\n'.join(lines) + '\n')
  with pytest.raises(
    ValueError,
    match=re.escape(
      f"{workdir / 'log.jsonl'}, line 3, is not JSON: 'not json'"
    ),
  ):
    train.train_and_evaluate(run_config(espeak2mix_dir), workdir)


# The run in a process of its own, which kills itself with SIGKILL at
# `point`: 'best-saved' once the best model of step `step` is saved and
# before the latest checkpoint is (the two saves of a validation);
# 'before-checksums' once orbax has finished the latest checkpoint of step
# `step` and before its checksums are written; 'none' never.
_KILLED_RUN = """
import os
import signal
import sys

from examples.flax_separation import checkpointing
from examples.flax_separation import train
from tests.example_helpers import tiny_config

data_dir, workdir, point, kill_step = sys.argv[1:]
config = tiny_config(data_dir, 2)
config.log_every_steps = 1


def kill_before(owner, name, step_of):
  real = getattr(owner, name)

  def killed_at_the_step(*args):
    if step_of(*args) == int(kill_step):
      os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)

  setattr(owner, name, killed_at_the_step)


if point == 'best-saved':
  kill_before(checkpointing.Checkpoints, 'save',
              lambda self, step, *state: step)
elif point == 'before-checksums':
  kill_before(checkpointing, '_write_checksums',
              lambda step_dir: (int(step_dir.name)
                                if step_dir.parent.name == 'checkpoints'
                                else None))
train.train_and_evaluate(config, workdir)
"""


def test_run_killed_at_any_moment_resumes_to_the_uninterrupted_results(
  straight_run, espeak2mix_dir, tmp_path
):
  workdir = tmp_path / 'run'

  def start(point='none', step=0):
    with (tmp_path / 'stderr').open('w') as stderr:
      return subprocess.Popen(
        [
          sys.executable,
          '-c',
          _KILLED_RUN,
          str(espeak2mix_dir),
          str(workdir),
          point,
          str(step),
        ],
        stdout=subprocess.DEVNULL,
        stderr=stderr,
      )

  def ended_by(process, signal_number):
    return_code = process.wait(timeout=300)
    assert return_code == -signal_number, (tmp_path / 'stderr').read_text()

  # Killed between the two saves of step 3: best/3 without checkpoints/3.
  ended_by(start('best-saved', 3), signal.SIGKILL)
  assert list((workdir / 'best').iterdir()) == [workdir / 'best' / '3']
  assert not any((workdir / 'checkpoints').iterdir())
  # From the start again; killed with checkpoints/4 saved but not summed.
  ended_by(start('before-checksums', 4), signal.SIGKILL)
  assert (workdir / 'checkpoints' / '4').is_dir()
  assert not (
    workdir / 'checkpoints' / '4' / checkpointing.CHECKSUMS_NAME
  ).exists()
  # From step 4; killed once the log shows step 6 validated.
  process = start()
  deadline = time.monotonic() + 300
  while '"step": 6' not in (
    (workdir / 'validation.jsonl').read_text()
    if (workdir / 'validation.jsonl').exists()
    else ''
  ):
    assert process.poll() is None and time.monotonic() < deadline
    time.sleep(0.01)
  process.send_signal(signal.SIGKILL)
  ended_by(process, signal.SIGKILL)
  # To the end.
  ended_by(start(), 0)
  assert_same_run(workdir, straight_run)
