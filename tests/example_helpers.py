"""What the separation example's tests share: tiny configs, runs, logs.

Every end-to-end test trains the same tiny network on the session's one
espeak2mix set (``conftest.py``'s ``espeak2mix_dir``): 8 training mixtures
in batches of 2, so an epoch is 4 steps, validated and checkpointed after
steps 3 and 4 (and 6, 8, ... in later epochs).
"""

import json
import os
import subprocess
import sys

import pytest

from examples.flax_separation import train
from examples.flax_separation.configs import default

# espeak2mix's counts in every test that generates it.
ESPEAK2MIX_COUNTS = {'num_train': 8, 'num_valid': 2, 'num_test': 2}


def tiny_config(data_dir, num_epochs=1):
  """The default config at a size that trains in seconds."""
  config = default.get_config()
  config.update(
    data_dir=str(data_dir),
    **ESPEAK2MIX_COUNTS,
    hidden_size=8,
    num_layers=1,
    batch_size=2,
    excerpt_frames=40,
    num_epochs=num_epochs,
    checkpoint_every_steps=3,
    eval_batch_size=2,
    num_example_wavs=1,
  )
  return config


def read_log(workdir, name='log.jsonl'):
  """The records of a run's JSON-lines log."""
  return [
    json.loads(line) for line in (workdir / name).read_text().splitlines()
  ]


def assert_same_run(workdir, expected_workdir):
  """The results and the logs are the expected run's.

  Only the time taken and how often the metrics were fetched
  (``log_every_steps``) may differ.
  """
  results, expected = (
    json.loads((directory / 'results.json').read_text())
    for directory in (workdir, expected_workdir)
  )
  for run_results in (results, expected):
    del run_results['train_seconds'], run_results['config']['log_every_steps']
  assert results == expected
  for log in ('log.jsonl', 'validation.jsonl'):
    assert (workdir / log).read_text() == (expected_workdir / log).read_text()


class Interrupted(Exception):
  """Stands for a run killed between two steps."""


def train_until(steps, config, workdir):
  """Runs ``train_and_evaluate``, interrupted before step ``steps + 1``."""
  real_train_step, steps_taken = train.train_step, 0

  def train_step(*args, **kwargs):
    nonlocal steps_taken
    if steps_taken == steps:
      raise Interrupted
    steps_taken += 1
    return real_train_step(*args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, 'train_step', train_step)
    with pytest.raises(Interrupted):
      train.train_and_evaluate(config, workdir)


def config_flags_for(config, defaults):
  """The ``--config.<field>`` flags that turn ``defaults`` into ``config``.

  Args:
    config: the config a command is to run with.
    defaults: the config the command reads without ``--config``.
  """
  return [
    f'--config.{key}={value}'
    for key, value in config.items()
    if defaults[key] != value
  ]


def run_command(command, *arguments, timeout=300):
  """Runs ``python -m examples.flax_separation.<command>``; returns it ended.

  The environment is this process's, so the commands share the session's
  compilation cache (``conftest.py``).
  """
  return subprocess.run(
    [sys.executable, '-m', f'examples.flax_separation.{command}', *arguments],
    capture_output=True,
    text=True,
    timeout=timeout,
    env=dict(os.environ),
  )
