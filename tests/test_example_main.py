"""The main job's command line, run for real at a tiny size."""

import functools
import json
import re
import shutil

from absl import app
import pytest

from examples.flax_separation import cli
from examples.flax_separation import main
from examples.flax_separation.configs import default
from tests.example_helpers import assert_same_run
from tests.example_helpers import config_flags_for
from tests.example_helpers import run_command
from tests.example_helpers import tiny_config

run_main = functools.partial(run_command, 'main')


@pytest.fixture(scope='module')
def one_seed_run(tmp_path_factory, espeak2mix_dir):
  """The main job with its default seed, at a tiny size: two runs at once."""
  tmp_path = tmp_path_factory.mktemp('main')
  flags = [
    f'--workdir={tmp_path / "run"}',
    '--percentiles=10,100',
    *config_flags_for(tiny_config(espeak2mix_dir), default.get_config()),
  ]
  return tmp_path / 'run', flags, run_main(*flags)


def test_compares_percentiles_and_writes_table_and_plot(one_seed_run):
  workdir, _, completed = one_seed_run
  assert completed.returncode == 0, completed.stderr
  # The pool's processes exited on their own and released their semaphores.
  assert 'leaked semaphore' not in completed.stderr
  comparison = json.loads((workdir / 'comparison.json').read_text())
  assert list(comparison['runs']) == ['p=10', 'p=100']
  for label, by_seed in comparison['runs'].items():
    row = by_seed['0']
    assert f'| {label} | 0 | {row["test_si_sdri"]:.2f} |' in completed.stdout
  assert (workdir / 'training_curves.png').stat().st_size > 10_000


def test_tables_are_printed_when_the_plot_cannot_be_written(
  one_seed_run, tmp_path
):
  workdir, flags, completed = one_seed_run
  workdir = shutil.copytree(workdir, tmp_path / 'run')
  plot = workdir / 'training_curves.png'
  plot.unlink()
  plot.mkdir()
  flags = [flag for flag in flags if not flag.startswith('--workdir=')]
  rerun = run_main(f'--workdir={workdir}', *flags)
  assert rerun.returncode == 1
  tables = completed.stdout[
    completed.stdout.index('| run |') : completed.stdout.index('One seed')
  ]
  assert tables in rerun.stdout
  assert rerun.stderr.endswith(
    'Error: the comparison above could not be saved: [Errno 21] Is a '
    f"directory: '{plot}'\n"
  )


def test_one_seed_says_it_cannot_decide_and_names_the_command(one_seed_run):
  workdir, _, completed = one_seed_run
  assert 'One seed cannot decide the comparison' in completed.stdout
  assert f'--workdir={workdir} --seeds=0,1,2' in completed.stdout


def test_more_seeds_reuse_finished_runs_and_pair_the_differences(one_seed_run):
  workdir, flags, _ = one_seed_run
  seed0 = workdir / 'seed0' / 'p10' / 'results.json'
  before = seed0.stat().st_mtime_ns
  completed = run_main(*flags, '--seeds=0,1')
  assert completed.returncode == 0, completed.stderr
  assert seed0.stat().st_mtime_ns == before
  comparison = json.loads((workdir / 'comparison.json').read_text())
  scores = comparison['test_si_sdri']
  for seed in ('0', '1'):
    assert comparison['differences']['p=10 - p=100'][seed] == pytest.approx(
      scores['p=10'][seed] - scores['p=100'][seed]
    )
  assert '| mean ± std |' in completed.stdout
  assert 'One seed cannot decide' not in completed.stdout


def test_summary_gives_mean_std_and_paired_differences():
  results = {
    (p, seed): {
      'test_si_sdri': score,
      'test_si_sdr': score,
      'best_valid_si_sdri': score,
      'steps': 10,
      'train_seconds': 1.0,
    }
    for (p, seed), score in {
      (10.0, 0): 3.0,
      (10.0, 1): 2.0,
      (10.0, 2): 4.0,
      (100.0, 0): 2.5,
      (100.0, 1): 2.0,
      (100.0, 2): 3.0,
    }.items()
  }
  summary = main.summarise(results, [10.0, 100.0], [0, 1, 2])
  assert summary['differences'] == {'p=10 - p=100': {0: 0.5, 1: 0.0, 2: 1.0}}
  table = main.render(summary, [0, 1, 2])
  assert '| p=10 | 3.00 ± 1.00 |' in table
  assert '| p=100 | 2.50 ± 0.50 |' in table
  assert '| 2 | +1.00 |' in table
  assert '| mean ± std | +0.50 ± 0.50 |' in table


@pytest.mark.parametrize(
  'flag, message',
  [
    ('--percentiles=10,120', '--percentiles must be in [0, 100]'),
    (
      '--seeds=0,one',
      "--seeds must be one or more non-negative integers, got ['0', 'one']",
    ),
    ('--parallel_runs=0', '--parallel_runs must be at least 1, got 0'),
  ],
  ids=['percentiles', 'seeds', 'parallel_runs'],
)
def test_bad_flag_stops_the_command_before_it_writes(tmp_path, flag, message):
  completed = run_main(f'--workdir={tmp_path}', flag)
  assert completed.returncode != 0
  assert message in completed.stderr
  assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
  'percentiles, message',
  [
    (['10', '120'], '--percentiles must be in [0, 100]'),
    ([], '--percentiles must be one or more numbers in [0, 100], got none'),
  ],
  ids=['out_of_range', 'none'],
)
def test_bad_percentiles_are_a_usage_error(percentiles, message):
  with pytest.raises(app.UsageError, match=re.escape(message)):
    cli.parse_percentiles(percentiles)


@pytest.mark.parametrize(
  'seeds', [['0', 'one'], ['-1'], []], ids=['not_a_number', 'negative', 'none']
)
def test_bad_seeds_are_a_usage_error(seeds):
  with pytest.raises(
    app.UsageError,
    match=re.escape(
      f'--seeds must be one or more non-negative integers, got {seeds}'
    ),
  ):
    main.parse_seeds(seeds)


def test_runs_at_once_give_what_runs_in_turn_gave(one_seed_run, sweep_run):
  # The sweep trained the same two configs one after the other, in-process.
  workdir, _, completed = one_seed_run
  assert completed.returncode == 0, completed.stderr
  _, sweep_workdir, _ = sweep_run
  for run in ('p10', 'p100'):
    at_once, in_turn = workdir / 'seed0' / run, sweep_workdir / 'mi' / run
    assert_same_run(at_once, in_turn)
