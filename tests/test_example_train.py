"""End-to-end tests of the separation example's training loop (tiny sizes)."""

import json

from flax import nnx
import jax
import numpy as np
import optax
import pytest

from examples.flax_separation import averaging
from examples.flax_separation import checkpointing
from examples.flax_separation import configs
from examples.flax_separation import evaluation
from examples.flax_separation import optimization
from examples.flax_separation import train
from examples.flax_separation.configs import default
from tests.example_helpers import assert_same_run
from tests.example_helpers import read_log
from tests.example_helpers import tiny_config
from tests.example_helpers import train_until


def test_run_interrupted_mid_epoch_resumes_with_identical_log_and_results(
  tmp_path, espeak2mix_dir, straight_run
):
  # Epochs of 4 steps, checkpoints after steps 3, 4, 6 and 8: killed after
  # step 7, in the second epoch, with step 7 already logged.
  config = tiny_config(espeak2mix_dir, 2)
  config.log_every_steps = 1
  workdir = tmp_path / 'resumed'
  train_until(7, config, workdir)
  assert [r['step'] for r in read_log(workdir)] == list(range(1, 8))
  # The restart is from step 6, two steps into the second epoch (step 4 is
  # kept in case step 6 is damaged).
  assert sorted(path.name for path in (workdir / 'checkpoints').iterdir()) == [
    '4',
    '6',
  ]
  train.train_and_evaluate(config, workdir)
  assert [r['step'] for r in read_log(straight_run)] == list(range(1, 9))
  assert_same_run(workdir, straight_run)


def test_run_writes_its_log_and_separated_wavs(straight_run):
  assert sorted(
    path.name for path in (straight_run / 'separated').iterdir()
  ) == ['00000_estimate1.wav', '00000_estimate2.wav', '00000_mix.wav']
  log = read_log(straight_run)
  assert all(np.isfinite(r['threshold']) and r['step_size'] > 0 for r in log)
  assert all(r['clipped'] in (0.0, 1.0) for r in log)
  np.testing.assert_allclose(
    [r['clip_rate'] for r in log],
    np.cumsum([r['clipped'] for r in log]) / np.arange(1, len(log) + 1),
  )


def test_autoclip_threshold_bounds_the_applied_step(tmp_path, espeak2mix_dir):
  # Percentile 0 clips every step to the smallest norm seen so far.
  config = tiny_config(espeak2mix_dir, 1)
  config.autoclip_percentile = 0.0
  results = train.train_and_evaluate(config, tmp_path / 'p0')
  written = json.loads((tmp_path / 'p0' / 'results.json').read_text())
  assert written == results
  assert written['steps'] == 4 and np.isfinite(written['test_si_sdri'])
  log = read_log(tmp_path / 'p0')
  smallest_so_far = np.minimum.accumulate([r['grad_norm'] for r in log])
  np.testing.assert_allclose(
    [r['threshold'] for r in log], smallest_so_far, rtol=1e-6
  )
  np.testing.assert_array_equal(
    [r['clipped'] for r in log], [r['grad_norm'] > r['threshold'] for r in log]
  )


def test_unknown_dataset_is_rejected(tmp_path):
  config = tiny_config(tmp_path, 1)
  config.dataset = 'timit'
  with pytest.raises(ValueError, match='config.dataset must be'):
    train.train_and_evaluate(config, tmp_path / 'run')


def test_real_dataset_needs_data_dir(tmp_path):
  config = tiny_config('', 1)
  config.dataset = 'wsj0-2mix'
  with pytest.raises(ValueError, match='config.data_dir must point at'):
    train.train_and_evaluate(config, tmp_path / 'run')


def tiny_model_and_optimizer():
  config = default.get_config()
  config.hidden_size = 4
  config.num_layers = 1
  model = train.create_model(config)
  return model, optimization.create_optimizer(model, config, num_steps=100)


def autoclip_state(optimizer):
  return optax.tree_utils.tree_get(optimizer.opt_state, 'AutoClipState')


def param_average_state(optimizer):
  return optax.tree_utils.tree_get(optimizer.opt_state, 'ParamAverageState')


def test_optimizer_is_autoclip_then_adam_skipping_nonfinite_steps():
  _, optimizer = tiny_model_and_optimizer()
  assert type(optimizer.opt_state).__name__ == 'ApplyIfFiniteState'
  assert type(autoclip_state(optimizer)).__name__ == 'AutoClipState'
  assert type(param_average_state(optimizer)).__name__ == 'ParamAverageState'
  assert isinstance(optimizer, nnx.Optimizer)


def test_nan_batch_is_skipped_and_optimizer_state_is_as_without_it():
  rng = np.random.default_rng(0)
  batches = [
    (sources.sum(axis=1), sources)
    for sources in rng.normal(size=(4, 2, 2, 640)).astype(np.float32)
  ]
  nan_batch = (np.full_like(batches[0][0], np.nan), batches[0][1])
  clean_model, clean_optimizer = tiny_model_and_optimizer()
  for mixture, sources in batches:
    train.train_step(clean_model, clean_optimizer, mixture, sources)
  model, optimizer = tiny_model_and_optimizer()
  records = [
    train.train_step(model, optimizer, mixture, sources)
    for mixture, sources in batches[:2] + [nan_batch] + batches[2:]
  ]
  assert not np.isfinite(records[2]['loss']) and records[2]['step_size'] == 0
  assert records[3]['step_size'] > 0
  params = jax.tree.leaves(nnx.state(model, nnx.Param))
  batch_stats = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
  assert len(batch_stats) == 2  # The input normalisation's mean and var.
  assert all(np.isfinite(leaf).all() for leaf in params + batch_stats)
  assert int(param_average_state(optimizer).count[...]) == 4
  for leaf, clean_leaf in zip(
    jax.tree.leaves(autoclip_state(optimizer))
    + jax.tree.leaves(param_average_state(optimizer))
    + params
    + batch_stats,
    jax.tree.leaves(autoclip_state(clean_optimizer))
    + jax.tree.leaves(param_average_state(clean_optimizer))
    + jax.tree.leaves(nnx.state(clean_model, nnx.Param))
    + jax.tree.leaves(nnx.state(clean_model, nnx.BatchStat)),
  ):
    np.testing.assert_array_equal(leaf, clean_leaf)


def test_separation_normalises_with_running_statistics_not_the_batch():
  rng = np.random.default_rng(0)
  model, optimizer = tiny_model_and_optimizer()
  sources = rng.normal(size=(2, 2, 640)).astype(np.float32)
  mean_before = np.asarray(model.input_normalization.mean[...])
  train.train_step(model, optimizer, sources.sum(axis=1), sources)
  assert not np.allclose(model.input_normalization.mean[...], mean_before)
  mixtures = rng.normal(size=(2, 640)).astype(np.float32)
  mixtures[1] *= 100.0
  alone = evaluation.separate(model, mixtures[:1])
  beside_a_loud_one = evaluation.separate(model, mixtures)[:1]
  np.testing.assert_allclose(alone, beside_a_loud_one, rtol=1e-5, atol=1e-6)


def test_learning_rate_is_constant_then_a_half_cosine_to_zero():
  config = default.get_config()
  config.learning_rate = 2e-3
  config.learning_rate_decay_start = 0.25
  schedule = optimization.learning_rate(config, num_steps=100)
  steps = np.arange(101)
  expected = np.where(
    steps < 25, 2e-3, 1e-3 * (1 + np.cos(np.pi * (steps - 25) / 75))
  )
  np.testing.assert_allclose(
    [schedule(step) for step in steps], expected, rtol=1e-5, atol=1e-10
  )


def test_learning_rate_decay_start_one_keeps_the_rate_constant():
  config = default.get_config()
  config.learning_rate_decay_start = 1.0
  assert (
    optimization.learning_rate(config, num_steps=100) == config.learning_rate
  )


@pytest.mark.parametrize('decay_start', [-0.1, 1.5])
def test_validate_rejects_a_decay_start_outside_zero_to_one(decay_start):
  config = default.get_config()
  config.learning_rate_decay_start = decay_start
  with pytest.raises(ValueError, match='learning_rate_decay_start'):
    configs.validate(config)


def test_config_min_history_holds_clipping_back_while_warming_up():
  config = default.get_config()
  config.hidden_size = 4
  config.num_layers = 1
  config.autoclip_percentile = 0.0
  config.autoclip_min_history = 3
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(model, config, num_steps=100)
  sources = (
    np.random.default_rng(0).normal(size=(4, 2, 2, 640)).astype(np.float32)
  )
  thresholds = [
    float(
      train.train_step(model, optimizer, batch.sum(axis=1), batch)['threshold']
    )
    for batch in sources
  ]
  assert thresholds[:2] == [np.inf, np.inf]
  assert np.isfinite(thresholds[2:]).all()


@pytest.mark.parametrize('loss', ['dc', 'wkm', 'chimera', 'snr'])
def test_every_loss_trains_and_evaluates_to_finite_results(
  tmp_path, espeak2mix_dir, loss
):
  config = tiny_config(espeak2mix_dir, 1)
  config.checkpoint_every_steps = 4
  config.loss = loss
  results = train.train_and_evaluate(config, tmp_path / loss)
  assert results['steps'] == 4 and results['loss'] == loss
  assert np.isfinite(results['test_si_sdri'])
  log = read_log(tmp_path / loss)
  assert all(
    np.isfinite(r['loss']) and np.isfinite(r['grad_norm']) for r in log
  )


def test_unknown_loss_is_rejected_before_data_is_generated(tmp_path):
  config = tiny_config(tmp_path / 'data', 1)
  config.loss = 'sdr'
  with pytest.raises(
    ValueError,
    match=r'config.loss must be one of mi, dc, '
    r"wkm, chimera, snr, got 'sdr'",
  ):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'data').exists()


@pytest.mark.parametrize(
  'setting, value, message',
  [
    (
      'learning_rate_decay_start',
      2.0,
      r'config.learning_rate_decay_start must be in \[0, 1\], got 2.0',
    ),
    (
      'param_average_decay',
      1.0,
      r'config.param_average_decay must be in \[0, 1\), got 1.0',
    ),
    (
      'autoclip_percentile',
      120.0,
      r'config.autoclip_percentile must be in \[0, 100\], got 120.0',
    ),
    ('seed', -1, 'config.seed must be a non-negative integer, got -1'),
    (
      'data_seed',
      -1,
      'config.data_seed must be a non-negative integer, got -1',
    ),
    ('batch_size', 0, 'config.batch_size must be at least 1, got 0'),
    (
      'checkpoint_every_steps',
      0,
      'config.checkpoint_every_steps must be at least 1, got 0',
    ),
  ],
)
def test_bad_setting_is_rejected_before_data_is_generated(
  tmp_path, setting, value, message
):
  config = tiny_config(tmp_path / 'data', 1)
  config[setting] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(config, tmp_path / 'run')
  assert not (tmp_path / 'data').exists()


def test_best_model_is_the_parameter_average_at_its_step(
  tmp_path, espeak2mix_dir
):
  # One epoch of 4 steps, validated once, after its last step; the program
  # is the straight run's (the default decay), compiled already.
  config = tiny_config(espeak2mix_dir, 1)
  config.checkpoint_every_steps = 4
  train.train_and_evaluate(config, tmp_path / 'run')
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(model, config, num_steps=4)
  checkpoints = checkpointing.Checkpoints(tmp_path / 'run')
  checkpoints.restore(model, optimizer)
  expected = averaging.averaged_model(
    model, optimizer, config.param_average_decay
  )
  best = train.create_model(config)
  checkpoints.restore_best(best)
  for leaf, expected_leaf, trained_leaf in zip(
    jax.tree.leaves(nnx.state(best, nnx.Param)),
    jax.tree.leaves(nnx.state(expected, nnx.Param)),
    jax.tree.leaves(nnx.state(model, nnx.Param)),
  ):
    np.testing.assert_array_equal(leaf, expected_leaf)
    assert not np.array_equal(leaf, trained_leaf)
