"""The example's configs, and what a config must satisfy to train.

``default.py`` (CPU), ``paper.py`` (the paper's size, for a GPU) and
``sweep_cpu.py`` (the percentile sweep's) are read with ``--config``;
``validate`` checks one before a run reads any data.
"""

import jax
import ml_collections

from examples.flax_separation import input_pipeline
from examples.flax_separation import loss_registry

# What each numeric setting must be: (field, test, requirement).
_SETTING_CHECKS = (
  ('autoclip_percentile', lambda value: 0 <= value <= 100, 'in [0, 100]'),
  ('learning_rate_decay_start', lambda value: 0 <= value <= 1, 'in [0, 1]'),
  ('param_average_decay', lambda value: 0 <= value < 1, 'in [0, 1)'),
  *(
    (name, lambda value: value >= 0, 'a non-negative integer')
    for name in ('seed', 'data_seed', 'autoclip_min_history')
  ),
  *(
    (name, lambda value: value >= 1, 'at least 1')
    for name in (
      'num_epochs',
      'batch_size',
      'eval_batch_size',
      'autoclip_max_history',
      'checkpoint_every_steps',
      'log_every_steps',
    )
  ),
)


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a run's settings; raises naming the first bad field.

  ``train.train_and_evaluate`` calls it before any data is generated or
  read, and ``runs.train_runs`` for every run before any trains.

  Raises:
    ValueError: naming the field, e.g. ``config.seed must be a non-negative
      integer, got -1``.
  """
  loss_registry.get(config.loss)
  if config.dataset not in input_pipeline.DATASETS:
    raise ValueError(
      f'config.dataset must be '
      f'{", ".join(input_pipeline.DATASETS)}, got '
      f'{config.dataset!r}'
    )
  if config.dataset != 'espeak2mix' and not config.data_dir:
    raise ValueError(
      f'config.data_dir must point at the {config.dataset} '
      'copy (the folder holding wav8k/min)'
    )
  for name, test, requirement in _SETTING_CHECKS:
    if not test(config[name]):
      raise ValueError(
        f'config.{name} must be {requirement}, got {config[name]}'
      )
  devices = f'{jax.device_count()}'
  if jax.process_count() > 1:
    devices += (
      f': {jax.process_count()} processes x {jax.local_device_count()} '
      'devices each'
    )
  for name in ('batch_size', 'eval_batch_size'):
    if config[name] % jax.device_count():
      raise ValueError(
        f'config.{name} ({config[name]}) must divide by the number of '
        f'devices ({devices}): each device takes an equal share of every '
        'batch'
      )
