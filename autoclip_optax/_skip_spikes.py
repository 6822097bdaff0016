"""Spike skipping: drop a step whose norm is far above its usual norms.

Clipping scales a spike down but still takes a step in its direction, and
the optimizer's moments still see it. Skipping leaves the parameters and the
inner optimizer's state exactly as they were, as :func:`optax.apply_if_finite`
does for non-finite steps, here for finite outliers too. The usual norms are
a percentile of the same window of past norms that :func:`autoclip` keeps.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from autoclip_optax import _arguments
from autoclip_optax import _groups
from autoclip_optax import _history
from autoclip_optax import _percentile


class SkipSpikesState(NamedTuple):
  """State of :func:`skip_spikes`.

  The window's fields (``count``, ``history``, ``ranks``, ``newest_rank``,
  ``oldest``, ``next_slot``) are those of :class:`AutoClipState`, over the
  norms of the steps that went through.

  Attributes:
    inner_state: the wrapped transform's state; unchanged by skipped steps.
    count: int32, norms recorded (steps that went through) since ``init``.
    history: float32 ``[max_history]`` ring buffer of recorded norms.
    ranks: int32 ``[max_history]``, the rank of each slot of ``history``.
    newest_rank: int32, the rank of the newest slot.
    oldest: float32, the value of ``history`` the next norm replaces.
    next_slot: int32, the slot of ``history`` the next norm is written to.
    spike_threshold: float32, the norm above which the last step counted as
      a spike (``factor`` times the percentile); ``+inf`` before
      ``min_history`` norms.
    num_skipped: int32, steps skipped since ``init`` (spikes and non-finite
      updates). Saturates at the int32 maximum.
    consecutive_spikes: int32, spikes in a row up to the last step, skipped
      or let through; reset by a finite norm that is not a spike, left as it
      is by a non-finite one.
  """

  inner_state: optax.OptState
  count: chex.Array
  history: chex.Array
  ranks: chex.Array
  newest_rank: chex.Array
  oldest: chex.Array
  next_slot: chex.Array
  spike_threshold: chex.Array
  num_skipped: chex.Array
  consecutive_spikes: chex.Array


def skip_spikes(
  inner: optax.GradientTransformation,
  factor: jax.typing.ArrayLike = 6.0,
  percentile: jax.typing.ArrayLike = 50.0,
  max_history: int = 1000,
  min_history: jax.typing.ArrayLike = 100,
  max_consecutive_skips: jax.typing.ArrayLike = 10,
) -> optax.GradientTransformationExtraArgs:
  """Skips steps whose update norm is ``factor`` times its usual size.

  Each step takes the global L2 norm of the incoming updates. The step is
  skipped (zero updates, ``inner``'s state unchanged: Adam's moments and
  count do not move) when that norm is not finite, or when it exceeds
  ``factor`` times the ``percentile``-th percentile of the last
  ``max_history`` norms of steps that went through. A skipped norm is not
  recorded. Spikes are never skipped before ``min_history`` norms are
  recorded, nor once ``max_consecutive_skips`` spikes came in a row: from
  then on spikes go through and are recorded until a step that is not a
  spike, so that a genuine change of scale fills the window instead of
  stalling training. Non-finite updates are always skipped, since applying
  them would make the parameters NaN for good.

  Args:
    inner: the transform to guard, e.g.
      ``optax.chain(autoclip(10), optax.adam(1e-3))``.
    factor: how many times the percentile a norm must exceed to be a spike,
      above 0. A traced value is clamped to at least the smallest positive
      float32, NaN counting as ``+inf`` (no spikes).
    percentile: the percentile of past norms that sets the usual size, in
      [0, 100]; the default is the median. A traced value is clipped to
      [0, 100], NaN counting as 100.
    max_history: how many past norms the window holds, in [1, 2**24].
    min_history: how many norms must be recorded before a spike can be
      skipped, in [0, max_history].
    max_consecutive_skips: how many spikes in a row are skipped before
      spikes go through, at least 1.

  Returns:
    A :class:`optax.GradientTransformationExtraArgs` whose state is a
    :class:`SkipSpikesState`.

  The skip is a select on the step's outcome, not a branch: it is not
  differentiable in any useful sense (its gradient is that of the branch
  taken), so differentiate through :func:`autoclip` alone.

  Raises:
    ValueError: an argument outside its range (or NaN); at ``update``, a
      hyperparameter that is not a scalar.
    TypeError: an argument of the wrong type; at ``update``, leaves that are
      not floating point or complex.

  References:
    Groeneveld et al., `OLMo: Accelerating the Science of Language Models
    <https://arxiv.org/abs/2402.00838>`_, 2024 (skipping steps whose loss
    or norm spikes, as Levanter's and MaxText's trainers also do)

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from autoclip_optax import skip_spikes
    >>> tx = skip_spikes(optax.sgd(1.0), factor=4.0, min_history=2)
    >>> params = {'w': jnp.zeros(1)}
    >>> state = tx.init(params)
    >>> for g in [1.0, 2.0, 100.0, 3.0]:
    ...   updates, state = tx.update({'w': jnp.array([g])}, state)
    ...   print(updates['w'], state.num_skipped)
    [-1.] 0
    [-2.] 0
    [0.] 1
    [-3.] 1
  """
  _arguments.check_positive_number('factor', factor)
  _arguments.check_percentile('percentile', percentile)
  _arguments.check_int('max_history', max_history, 1, _percentile.MAX_WINDOW)
  _arguments.check_int(
    'min_history', min_history, 0, max_history, traceable=True
  )
  _arguments.check_int(
    'max_consecutive_skips', max_consecutive_skips, 1, 2**31 - 1, traceable=True
  )
  inner = optax.with_extra_args_support(inner)

  def init_fn(params: optax.Params) -> SkipSpikesState:
    return SkipSpikesState(
      inner_state=inner.init(params),
      spike_threshold=jnp.asarray(jnp.inf, jnp.float32),
      num_skipped=jnp.zeros([], jnp.int32),
      consecutive_spikes=jnp.zeros([], jnp.int32),
      **_history.empty(max_history, ())._asdict(),
    )

  def update_fn(
    updates: optax.Updates,
    state: SkipSpikesState,
    params: optax.Params | None = None,
    **extra_args,
  ) -> tuple[optax.Updates, SkipSpikesState]:
    for name, value in [
      ('factor', factor),
      ('percentile', percentile),
      ('min_history', min_history),
      ('max_consecutive_skips', max_consecutive_skips),
    ]:
      _arguments.check_scalar(name, value)
    leaves = jax.tree.leaves(updates)
    norm = _groups.group_norms(leaves, (0,) * len(leaves), 1)[0]
    history = _history.of(state)
    # A traced factor may be out of range: at least the smallest positive
    # float32, NaN counting as +inf (nothing is a spike).
    usual_factor = jnp.asarray(factor, jnp.float32)
    usual_factor = jnp.where(
      jnp.isnan(usual_factor),
      jnp.inf,
      jnp.maximum(usual_factor, jnp.finfo(jnp.float32).tiny),
    )
    spike_threshold = jnp.where(
      history.count >= min_history,
      usual_factor * _history.percentile(history, percentile),
      jnp.inf,
    )
    finite = jnp.isfinite(norm)
    spike = finite & (norm > spike_threshold)
    skip = ~finite | (
      spike & (state.consecutive_spikes < max_consecutive_skips)
    )
    inner_updates, inner_state = inner.update(
      updates, state.inner_state, params, **extra_args
    )
    updates = jax.tree.map(
      lambda update: (
        update if _groups.is_float0(update) else jnp.where(skip, 0, update)
      ),
      inner_updates,
    )
    inner_state = jax.tree.map(
      lambda old, new: jnp.where(skip, old, new), state.inner_state, inner_state
    )
    recorded, _ = _history.record(
      history, jnp.where(skip, jnp.nan, norm), percentile
    )
    return updates, SkipSpikesState(
      inner_state=inner_state,
      spike_threshold=spike_threshold,
      num_skipped=jnp.where(
        skip, optax.safe_increment(state.num_skipped), state.num_skipped
      ),
      consecutive_spikes=jnp.where(
        spike,
        optax.safe_increment(state.consecutive_spikes),
        jnp.where(finite, 0, state.consecutive_spikes),
      ),
      **recorded._asdict(),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
