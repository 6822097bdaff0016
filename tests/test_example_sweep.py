"""Tests of the separation example's Table 1 sweep: resuming and the table."""

import json

from absl import app
import pytest

from examples.flax_separation import cli
from examples.flax_separation import loss_registry
from examples.flax_separation import runs
from examples.flax_separation import sweep
from examples.flax_separation.configs import sweep_cpu
from tests.example_helpers import config_flags_for
from tests.example_helpers import run_command

PERCENTILES = (10.0, 100.0)


def results_mtimes(workdir):
  return {
    path.relative_to(workdir): path.stat().st_mtime_ns
    for path in sorted(workdir.glob('mi/p*/results.json'))
  }


def test_sweep_trains_and_evaluates_every_cell(sweep_run):
  config, workdir, table = sweep_run
  for percentile in PERCENTILES:
    results = json.loads(
      (workdir / 'mi' / f'p{percentile:g}' / 'results.json').read_text()
    )
    assert results['steps'] == 4
    assert results['config']['autoclip_percentile'] == percentile
  assert (workdir / 'table1.md').read_text() == table
  assert '–' not in table
  assert '| Mask inference (mi) |' in table


def test_second_run_skips_finished_cells(sweep_run, capsys):
  config, workdir, table = sweep_run
  before = results_mtimes(workdir)
  assert len(before) == 2
  assert sweep.run_sweep(config, workdir, ['mi'], PERCENTILES) == table
  assert results_mtimes(workdir) == before
  assert '2 of 2 cells already finished; training 0' in capsys.readouterr().out


def test_command_line_skips_finished_cells(sweep_run):
  config, workdir, table = sweep_run
  before = results_mtimes(workdir)
  completed = run_command(
    'sweep',
    f'--workdir={workdir}',
    '--losses=mi',
    '--percentiles=10,100',
    *config_flags_for(config, sweep_cpu.get_config()),
  )
  assert completed.returncode == 0, completed.stderr
  assert table in completed.stdout
  assert results_mtimes(workdir) == before


def test_deleted_results_rerun_only_that_cell(sweep_run):
  config, workdir, _ = sweep_run
  before = results_mtimes(workdir)
  rerun = workdir / 'mi' / 'p10' / 'results.json'
  rerun.unlink()
  sweep.run_sweep(config, workdir, ['mi'], PERCENTILES)
  after = results_mtimes(workdir)
  assert rerun.exists()
  kept = rerun.parent.parent / 'p100' / 'results.json'
  assert after[kept.relative_to(workdir)] == before[kept.relative_to(workdir)]
  # Resumed from the last checkpoint: evaluated again, not trained again.
  log = (rerun.parent / 'log.jsonl').read_text().splitlines()
  assert [json.loads(line)['step'] for line in log] == [1, 2, 3, 4]


def test_results_of_another_config_do_not_count(tmp_path):
  config = sweep.cell_config(sweep_cpu.get_config(), tmp_path, 'mi', 10.0)
  (tmp_path / 'results.json').write_text(
    json.dumps({'test_si_sdr': 1.0, 'config': config.to_dict()})
  )
  assert runs.finished_results(tmp_path, config)['test_si_sdr'] == 1.0
  other = sweep.cell_config(sweep_cpu.get_config(), tmp_path, 'mi', 25.0)
  assert runs.finished_results(tmp_path, other) is None


def test_truncated_results_do_not_count(tmp_path):
  config = sweep.cell_config(sweep_cpu.get_config(), tmp_path, 'mi', 10.0)
  (tmp_path / 'results.json').write_text('{"test_si_sdr": 1.0, "con')
  assert runs.finished_results(tmp_path, config) is None


def test_results_of_a_moved_sweep_still_count(tmp_path):
  config = sweep.cell_config(sweep_cpu.get_config(), tmp_path / 'old', 'mi', 0)
  (tmp_path / 'results.json').write_text(
    json.dumps({'test_si_sdr': 1.0, 'config': config.to_dict()})
  )
  moved = sweep.cell_config(sweep_cpu.get_config(), tmp_path / 'new', 'mi', 0)
  assert runs.finished_results(tmp_path, moved) is not None


def test_partial_table_shows_dashes_for_cells_not_run():
  results = {
    ('mi', 10.0): {
      'test_si_sdr': 7.125,
      'test_si_sdri': 7.5,
      'steps': 50,
      'num_test_mixtures': 50,
    },
    ('mi', 100.0): {
      'test_si_sdr': 6.0,
      'test_si_sdri': 6.25,
      'steps': 50,
      'num_test_mixtures': 50,
    },
  }
  table = sweep.render_table1(
    sweep_cpu.get_config(), ['mi'], [0.0, 10.0, 100.0], results
  )
  assert '| loss | p=0 | p=10 | no clipping (p=100) |' in table
  assert '| Mask inference (mi) | – | **7.12** | 6.00 |' in table
  assert '| Mask inference (mi) | – | **7.50** | 6.25 |' in table
  assert '2 of 3 cells finished' in table
  assert '`hidden_size=128`' in table
  assert 'autoclip_percentile' not in table


def test_table_of_no_finished_cells_is_all_dashes():
  table = sweep.render_table1(sweep_cpu.get_config(), ['mi'], [0.0, 100.0], {})
  assert table.count('| Mask inference (mi) | – | – |') == 2


def test_unknown_loss_is_rejected(tmp_path):
  with pytest.raises(ValueError, match='config.loss must be one of'):
    sweep.cell_config(sweep_cpu.get_config(), tmp_path, 'pit', 10.0)


@pytest.mark.parametrize('loss', ['mi', 'dc', 'wkm', 'chimera', 'snr'])
def test_each_loss_is_set_in_the_cell_config(tmp_path, loss):
  config = sweep.cell_config(sweep_cpu.get_config(), tmp_path, loss, 10.0)
  assert config.loss == loss and config.autoclip_percentile == 10.0


def test_every_loss_has_a_row_named_by_its_title():
  table = sweep.render_table1(
    sweep_cpu.get_config(), list(loss_registry.LOSSES), [100.0], {}
  )
  for name, loss in loss_registry.LOSSES.items():
    assert f'| {loss.title} ({name}) | – |' in table


def test_espeak2mix_is_shared_under_the_sweep_workdir(tmp_path):
  config = sweep.cell_config(sweep_cpu.get_config(), tmp_path, 'mi', 90.0)
  assert config.data_dir == str(tmp_path / 'data')
  assert sweep.cell_dir(tmp_path, 'mi', 90.0) == tmp_path / 'mi' / 'p90'


@pytest.mark.parametrize('values', [['10', 'ten'], ['-1'], ['100.5'], []])
def test_bad_percentiles_are_a_usage_error(values):
  with pytest.raises(app.UsageError, match='--percentiles must be'):
    cli.parse_percentiles(values)


def test_percentiles_are_read_as_floats():
  assert cli.parse_percentiles(['0', '2.5', '100']) == [0.0, 2.5, 100.0]
