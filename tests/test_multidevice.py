"""Autoclip on 8 host devices: sharded meshes, and pmap after pmean."""

import subprocess
import sys

import pytest

from tests.processes import REPO_ROOT
from tests.processes import cpu_environment


MODES = ('auto_mesh', 'explicit_mesh', 'pmap')


@pytest.fixture(scope='module')
def checked_modes():
  """The child's output, every mode checked in one start of JAX."""
  return subprocess.run(
    [sys.executable, '-m', 'tests.multidevice_child', *MODES],
    cwd=REPO_ROOT,
    env=cpu_environment(8),
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.parametrize('mode', MODES)
def test_matches_reference_on_eight_devices(mode, checked_modes):
  result = checked_modes
  assert f'{mode} ok' in result.stdout.splitlines(), (
    result.stdout + result.stderr
  )
