"""The main job's command line, run for real at a tiny size."""

import json
import subprocess
import sys

from tests.test_example_sweep import config_flags_for
from tests.test_example_train import tiny_config


def run_main(*arguments):
  return subprocess.run(
      [sys.executable, '-m', 'examples.flax_separation.main', *arguments],
      capture_output=True, text=True)


def test_compares_percentiles_and_writes_table_and_plot(tmp_path):
  config = tiny_config(tmp_path / 'data', 1)
  completed = run_main(f'--workdir={tmp_path / "run"}',
                       '--percentiles=10,100', *config_flags_for(config))
  assert completed.returncode == 0, completed.stderr
  comparison = json.loads((tmp_path / 'run' / 'comparison.json').read_text())
  assert list(comparison) == ['p=10', 'p=100']
  for label, row in comparison.items():
    assert f'| {label} | {row["test_si_sdri"]:.2f} |' in completed.stdout
  assert (tmp_path / 'run' / 'training_curves.png').stat().st_size > 10_000


def test_bad_percentile_is_a_usage_error(tmp_path):
  completed = run_main(f'--workdir={tmp_path}', '--percentiles=10,120')
  assert completed.returncode != 0
  assert '--percentiles must be in [0, 100]' in completed.stderr
  assert not any(tmp_path.iterdir())
