"""The optimizer a run trains with: Adam behind AutoClip.

``create_optimizer`` is where AutoClip enters the example:
``optax.chain(autoclip(...), optax.adam(...))``, as in the paper, with the
parameter average (``averaging``) last and ``optax.apply_if_finite`` around
it all. ``learning_rate`` is Adam's rate over a run.
"""

from flax import nnx
import ml_collections
import optax

from autoclip_optax import autoclip
from examples.flax_separation import averaging

# Steps with a non-finite update skipped in a row before training gives up.
MAX_CONSECUTIVE_NONFINITE_STEPS = 5


def create_optimizer(
  model: nnx.Module, config: ml_collections.ConfigDict, num_steps: int
) -> nnx.Optimizer:
  """Adam behind AutoClip, skipping steps whose update is not finite.

  Percentile 100 never clips (the paper's baseline). AutoClip never records
  a non-finite gradient norm, but passes the update on;
  ``optax.apply_if_finite`` drops such a step whole, and gives up after
  ``MAX_CONSECUTIVE_NONFINITE_STEPS`` in a row. The chain ends with
  ``averaging.param_average``, whose average a run evaluates.

  Args:
    model: the network whose ``nnx.Param``s it updates.
    config: the run's config.
    num_steps: the run's training steps, over which ``learning_rate``
      schedules the rate.

  Returns:
    The optimizer.
  """
  tx = optax.apply_if_finite(
    optax.chain(
      autoclip(
        config.autoclip_percentile,
        config.autoclip_max_history,
        min_history=config.autoclip_min_history,
      ),
      optax.adam(learning_rate(config, num_steps)),
      averaging.param_average(config.param_average_decay),
    ),
    max_consecutive_errors=MAX_CONSECUTIVE_NONFINITE_STEPS,
  )
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def learning_rate(
  config: ml_collections.ConfigDict, num_steps: int
) -> optax.ScalarOrSchedule:
  """Adam's learning rate: constant, then a half cosine to 0.

  ``config.learning_rate_decay_start`` is the share of the run's
  ``num_steps`` after which the rate decays (1.0: constant, as the paper
  trains). Returns ``config.learning_rate`` or an optax schedule.
  """
  boundary = round(config.learning_rate_decay_start * num_steps)
  if boundary >= num_steps:
    return config.learning_rate
  return optax.join_schedules(
    [
      optax.constant_schedule(config.learning_rate),
      optax.cosine_decay_schedule(config.learning_rate, num_steps - boundary),
    ],
    [boundary],
  )
