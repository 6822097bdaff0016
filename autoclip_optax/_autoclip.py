"""AutoClip: clip by global norm to a percentile of the norms seen so far."""

import numbers
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from autoclip_optax import _percentile
from autoclip_optax import _window

# 100k norms cover the paper's whole-history runs (~80k steps) and cost
# 800 KB of state: two float32 slots (ring buffer and sorted copy) per norm.
DEFAULT_MAX_HISTORY = 100_000


class AutoClipState(NamedTuple):
  """State of :func:`autoclip`.

  Attributes:
    count: int32, finite gradient norms recorded since ``init`` (saturates at
      the int32 maximum).
    grad_norm: float32, the global norm of the updates at the last step,
      before clipping (NaN or inf when those updates were not finite).
    threshold: float32, the clipping threshold used at the last step; ``+inf``
      while no finite norm has been recorded (no clipping).
    history: float32 ``[max_history]`` ring buffer of recorded norms, oldest
      overwritten first; slots not yet written hold ``+inf``.
    sorted_history: float32 ``[max_history]``, the values of ``history``
      sorted ascending, kept up to date incrementally.
    oldest: float32, the value of ``history`` that the next recorded norm
      replaces. Carried from the last step so that the next one never reads
      ``history`` before writing it: XLA then updates it in place.
  """

  count: chex.Array
  grad_norm: chex.Array
  threshold: chex.Array
  history: chex.Array
  sorted_history: chex.Array
  oldest: chex.Array


def _is_concrete_number(value) -> bool:
  return isinstance(value, numbers.Real) or (
      isinstance(value, (jax.Array, jnp.ndarray)) and value.ndim == 0
      and not isinstance(value, jax.core.Tracer))


def _validate(percentile, max_history) -> None:
  if _is_concrete_number(percentile) and not isinstance(percentile, bool):
    value = float(percentile)
    if not 0.0 <= value <= 100.0:  # Also rejects NaN.
      raise ValueError(f'percentile must be in [0, 100], got {value}')
  elif not isinstance(percentile, jax.core.Tracer):
    raise TypeError(
        'percentile must be a real number in [0, 100], got '
        f'{percentile!r} of type {type(percentile).__name__}')
  if (isinstance(max_history, bool)
      or not isinstance(max_history, numbers.Integral)):
    raise TypeError(
        f'max_history must be a positive int, got {max_history!r} of type '
        f'{type(max_history).__name__}')
  if not 1 <= max_history <= _percentile.MAX_WINDOW:
    raise ValueError(
        f'max_history must be in [1, {_percentile.MAX_WINDOW}], got '
        f'{max_history}')


def _global_norm(updates) -> jax.Array:
  """Global L2 norm, accumulated in float32 (or wider) whatever the dtypes."""

  def squared_norm(leaf):
    wide = leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))
    return jnp.sum(jnp.real(wide * jnp.conj(wide)))

  squares = [squared_norm(leaf) for leaf in jax.tree.leaves(updates)]
  return jnp.sqrt(sum(squares, jnp.float32(0))).astype(jnp.float32)


def autoclip(
    percentile: float | jax.Array = 10.0,
    max_history: int = DEFAULT_MAX_HISTORY,
) -> optax.GradientTransformation:
  """Clips updates by global norm to a percentile of their past norms.

  At each step the global L2 norm of the updates is recorded in a window of
  the last ``max_history`` finite norms (the current one included), and the
  updates are scaled down to the ``percentile``-th percentile of that window
  whenever their norm exceeds it. The percentile is ``np.percentile``'s
  (linear interpolation) over the recorded norms only.

  Non-finite norms are never recorded, so one bad batch cannot poison the
  threshold; pair with :func:`optax.apply_if_finite` to skip such steps. Until
  a finite norm is recorded nothing is clipped. A threshold of 0 yields zero
  updates, never NaN.

  Args:
    percentile: which percentile of the recorded norms to clip to, in
      [0, 100]; 100 never clips. May be an array (for example through
      :func:`optax.inject_hyperparams`); a traced value is clipped to
      [0, 100], NaN counting as 100.
    max_history: how many recent norms the window holds. The paper kept the
      whole history (about 80k steps in its runs); the default 100,000 covers
      that and costs 800 KB of state (8 bytes a slot). Each step reads and
      writes the window once, so its cost grows linearly with this size.

  Returns:
    A :class:`optax.GradientTransformation` whose state is an
    :class:`AutoClipState`.

  Raises:
    ValueError: ``percentile`` outside [0, 100] or NaN; ``max_history``
      outside [1, 2**24].
    TypeError: ``percentile`` not a real number, or ``max_history`` not an
      int (bools and floats are rejected).

  References:
    Seetharaman et al., `AutoClip: Adaptive Gradient Clipping for Source
    Separation Networks <https://arxiv.org/abs/2007.14469>`_, MLSP 2020

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from autoclip_optax import autoclip
    >>> tx = optax.chain(autoclip(10.0, max_history=1000), optax.sgd(1.0))
    >>> params = {'w': jnp.zeros(2)}
    >>> state = tx.init(params)
    >>> updates, state = tx.update({'w': jnp.array([3.0, 4.0])}, state)
    >>> print(updates['w'])
    [-3. -4.]
    >>> updates, state = tx.update({'w': jnp.array([30.0, 40.0])}, state)
    >>> print(updates['w'])
    [-5.7 -7.6]
  """
  _validate(percentile, max_history)

  def init_fn(params):
    del params
    def empty_window():
      # Separate buffers, so that the state can be donated.
      return jnp.full((max_history,), jnp.inf, jnp.float32)

    return AutoClipState(
        count=jnp.zeros([], jnp.int32),
        grad_norm=jnp.zeros([], jnp.float32),
        threshold=jnp.full([], jnp.inf, jnp.float32),
        history=empty_window(),
        sorted_history=empty_window(),
        oldest=jnp.full([], jnp.inf, jnp.float32),
    )

  def update_fn(updates, state, params=None):
    del params
    grad_norm = _global_norm(updates)
    finite = jnp.isfinite(grad_norm)
    slot = state.count % max_history
    leaving = state.oldest
    # A non-finite norm swaps the leaving value for itself: nothing changes.
    arriving = jnp.where(finite, grad_norm, leaving)
    history = state.history.at[slot].set(arriving)
    sorted_history = _window.replace_in_sorted(
        state.sorted_history, leaving, arriving)
    count = jnp.where(finite, optax.safe_increment(state.count), state.count)

    clipped_percentile = jnp.clip(
        jnp.nan_to_num(jnp.asarray(percentile, jnp.float32), nan=100.0),
        0.0, 100.0)
    threshold = _percentile.sorted_percentile(
        sorted_history, jnp.minimum(count, max_history), clipped_percentile)
    # Division-free when not clipping; threshold 0 gives 0, not 0/0.
    scale = jnp.where(grad_norm > threshold, threshold / grad_norm, 1.0)
    updates = jax.tree.map(lambda leaf: leaf * scale.astype(leaf.dtype),
                           updates)
    return updates, AutoClipState(
        count=count,
        grad_norm=grad_norm,
        threshold=threshold,
        history=history,
        sorted_history=sorted_history,
        oldest=history[count % max_history],
    )

  return optax.GradientTransformation(init_fn, update_fn)
