"""The history of gradient norms: a ring buffer and its sorted copy.

Every transform that clips or skips against a percentile of past norms keeps
the same five fields in its state and updates them the same way: the ring
buffer says which norm is the oldest, the sorted copy gives any percentile by
index. This module is that one piece of code; the states hold its fields flat
(so that ``optax.tree_utils.tree_get(state, 'history')`` finds them), and
:func:`of` and :meth:`NormHistory._asdict` move between the two.

Only finite norms are recorded. Recording a NaN or an infinity changes
nothing, which is also how a caller declines to record a norm.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from autoclip_optax import _percentile
from autoclip_optax import _window


class NormHistory(NamedTuple):
  """The fields of a state that hold its history; see ``AutoClipState``."""

  count: jax.Array
  history: jax.Array
  sorted_history: jax.Array
  oldest: jax.Array
  next_slot: jax.Array


def of(state) -> NormHistory:
  """The history fields of ``state``, a NamedTuple that has all of them."""
  return NormHistory(*(getattr(state, field) for field in NormHistory._fields))


def empty(max_history: int, batch_shape: tuple[int, ...]) -> NormHistory:
  """A history with nothing recorded, one per ``batch_shape`` entry."""

  def full(shape, value, dtype=jnp.float32):
    # Separate buffers, so that the state can be donated.
    return jnp.full(batch_shape + shape, value, dtype)

  return NormHistory(
      count=full((), 0, jnp.int32),
      history=full((max_history,), jnp.inf),
      sorted_history=full((max_history,), jnp.inf),
      oldest=full((), jnp.inf),
      next_slot=full((), 0, jnp.int32),
  )


def record(history: NormHistory, norm: jax.Array) -> NormHistory:
  """Records ``norm`` if it is finite, overwriting the oldest when full.

  Args:
    history: one history (no batch axis; ``jax.vmap`` for a batch).
    norm: float32 scalar.

  Returns:
    The new history.
  """
  max_history = history.history.shape[-1]
  finite = jnp.isfinite(norm)
  leaving = history.oldest
  # A non-finite norm swaps the leaving value for itself: nothing changes.
  arriving = jnp.where(finite, norm, leaving)
  ring = jax.lax.dynamic_update_index_in_dim(history.history, arriving,
                                             history.next_slot, axis=0)
  next_slot = jnp.where(finite, (history.next_slot + 1) % max_history,
                        history.next_slot)
  return NormHistory(
      count=jnp.where(finite, optax.safe_increment(history.count),
                      history.count),
      history=ring,
      sorted_history=_window.replace_in_sorted(history.sorted_history,
                                               leaving, arriving),
      oldest=ring[next_slot],
      next_slot=next_slot,
  )


def percentile(history: NormHistory, percentile_value: jax.Array) -> jax.Array:
  """The ``percentile_value``-th percentile of the recorded norms.

  Returns:
    float32, as ``np.percentile`` over the recorded norms; ``+inf`` when none
    is recorded.
  """
  num_filled = jnp.minimum(history.count, history.history.shape[-1])
  return _percentile.sorted_percentile(history.sorted_history, num_filled,
                                       percentile_value)

