"""The example's training step and evaluation on 8 devices match 1 device."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_step_and_evaluation_on_eight_devices_match_one_device(tmp_path):
  env = dict(
    os.environ,
    JAX_PLATFORMS='cpu',
    XLA_FLAGS='--xla_force_host_platform_device_count=8',
  )
  result = subprocess.run(
    [sys.executable, '-m', 'tests.example_data_parallel_child', str(tmp_path)],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().endswith('ok')
