"""Autoclip on 8 host devices: sharded meshes, and pmap after pmean."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


MODES = ('auto_mesh', 'explicit_mesh', 'pmap')


@pytest.fixture(scope='module')
def checked_modes():
  """The child's output, every mode checked in one start of JAX."""
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
  )
  return subprocess.run(
    [sys.executable, '-m', 'tests.multidevice_child', *MODES],
    cwd=REPO_ROOT,
    env=env,
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
