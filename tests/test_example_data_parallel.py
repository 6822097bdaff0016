"""The example's training step and evaluation on 8 devices match 1 device."""

import subprocess
import sys

from tests.processes import REPO_ROOT
from tests.processes import cpu_environment


def test_step_and_evaluation_on_eight_devices_match_one_device(tmp_path):
  result = subprocess.run(
    [sys.executable, '-m', 'tests.example_data_parallel_child', str(tmp_path)],
    cwd=REPO_ROOT,
    env=cpu_environment(8),
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.strip().endswith('ok')
