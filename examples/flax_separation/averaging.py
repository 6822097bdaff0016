"""An exponential moving average of the parameters, kept by the optimizer.

`param_average(decay)` goes last in an optax chain: it passes the updates
on unchanged and averages the parameters they lead to. Its state is part of
the optimizer state, so it is checkpointed, replicated over the devices and
skipped with a non-finite step (inside `optax.apply_if_finite`) like the
rest. `averaged_model` is the network with the average in place of its
parameters, which is what a run validates, keeps and tests.

References:
  Polyak & Juditsky, `Acceleration of stochastic approximation by averaging
  <https://doi.org/10.1137/0330046>`_, 1992.
"""

from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import optax


class ParamAverageState(NamedTuple):
  """State of `param_average`.

  Attributes:
    count: int32, the steps averaged.
    average: the moving average of the parameters, biased towards zero by
      its zero start (`averaged_model` corrects it).
  """

  count: jax.Array
  average: optax.Params


def param_average(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the parameters after each step.

  Args:
    decay: the weight of the previous average, in [0, 1); 0 keeps no average
      (the trained network is its own "average").

  Returns:
    An `optax.GradientTransformation` that returns its updates unchanged and
    needs the parameters; with ``decay`` 0, `optax.identity()`.

  Raises:
    ValueError: unless ``decay`` is in [0, 1).

  Example:
    >>> tx = optax.chain(optax.sgd(1.0), param_average(0.5))
    >>> params = {'w': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> for _ in range(2):
    ...   updates, state = tx.update({'w': -jnp.ones(2)}, state, params)
    ...   params = optax.apply_updates(params, updates)
    >>> print(params['w'], state[1].average['w'])
    [2. 2.] [1.25 1.25]
  """
  if not 0 <= decay < 1:
    raise ValueError(f'decay must be in [0, 1), got {decay}')
  if decay == 0:
    return optax.identity()

  def init_fn(params):
    return ParamAverageState(
      count=jnp.zeros([], jnp.int32), average=optax.tree.zeros_like(params)
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
        'param_average needs the parameters: call '
        'update(updates, state, params)'
      )
    average = optax.incremental_update(
      optax.apply_updates(params, updates), state.average, 1 - decay
    )
    return updates, ParamAverageState(
      optax.safe_increment(state.count), average
    )

  return optax.GradientTransformation(init_fn, update_fn)


def averaged_model(
  model: nnx.Module, optimizer: nnx.Optimizer, decay: float
) -> nnx.Module:
  """A copy of ``model`` whose parameters are the optimizer's average.

  Args:
    model: the trained network; its other state (the input normalisation's
      running statistics) is copied as it is.
    optimizer: its optimizer, whose chain holds one `param_average`.
    decay: that `param_average`'s decay, to correct the average's bias; 0
      (no average kept) copies ``model`` as it is.

  Returns:
    The copy; ``model`` itself is not changed. With ``decay`` 0, or before
    any step, the copy's parameters are ``model``'s, bit for bit.
  """
  averaged = nnx.clone(model)
  if decay == 0:
    return averaged
  state = optax.tree_utils.tree_get(optimizer.opt_state, 'ParamAverageState')
  count = state.count[...]
  params = nnx.state(averaged, nnx.Param)
  # Selected on the device, not branched on the host: on several hosts the
  # count spans other processes' devices, and `int(count)` would fail.
  nnx.replace_by_pure_dict(
    params,
    jax.tree.map(
      lambda average, trained: jnp.where(count > 0, average, trained),
      optax.tree_utils.tree_bias_correction(
        nnx.to_pure_dict(nnx.as_pure(state.average)), decay, count
      ),
      nnx.to_pure_dict(params),
    ),
  )
  nnx.update(averaged, params)
  return averaged
