"""Autoclip on 8 host devices: sharded meshes, and pmap after pmean."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.parametrize('mode', ['auto_mesh', 'explicit_mesh', 'pmap'])
def test_matches_reference_on_eight_devices(mode):
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
  )
  result = subprocess.run(
    [sys.executable, '-m', 'tests.multidevice_child', mode],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().endswith('ok')
