"""Sorted-window arithmetic: keep a sorted copy of a ring buffer up to date.

Replacing one value of a sorted array by another is a single shifted select:
every element between the slot that leaves and the slot where the new value
lands moves over by one place. Both slots are found by binary search, so a
step reads and writes the window once (O(H), memory-bound) instead of sorting
it (O(H log H)).
"""

import jax
import jax.numpy as jnp


def replace_in_sorted(
    sorted_values: jax.Array, leaving: jax.Array, arriving: jax.Array
) -> jax.Array:
  """Removes one occurrence of ``leaving`` and inserts ``arriving``.

  Args:
    sorted_values: a 1-D array sorted in ascending order, without NaNs.
    leaving: a value present in ``sorted_values``.
    arriving: the value that takes its place; not NaN.

  Returns:
    An array of the same shape and dtype, sorted, holding the same values as
    ``sorted_values`` with ``leaving`` swapped for ``arriving``. When
    ``leaving == arriving`` it is ``sorted_values`` unchanged.
  """
  leave_at = jnp.searchsorted(sorted_values, leaving, side='left')
  arrive_before = jnp.searchsorted(sorted_values, arriving, side='left')
  # Index of ``arriving`` in the result: one place lower when the slot that
  # leaves is below it, since everything above that slot moves down.
  insert_at = jnp.where(leave_at < arrive_before, arrive_before - 1,
                        arrive_before)
  index = jax.lax.iota(jnp.int32, sorted_values.shape[0])
  moving_from = jnp.minimum(leave_at, insert_at)
  moving_to = jnp.maximum(leave_at, insert_at)
  no_value = jnp.zeros((), sorted_values.dtype)  # Never selected.
  # One shifted source for the whole range keeps the select a single pass.
  shifted = jnp.where(
      leave_at < insert_at,
      jax.lax.pad(sorted_values, no_value, [(-1, 1, 0)]),  # value above
      jax.lax.pad(sorted_values, no_value, [(1, -1, 0)]),  # value below
  )
  moving = (index >= moving_from) & (index <= moving_to)
  return jnp.where(index == insert_at, arriving.astype(sorted_values.dtype),
                   jnp.where(moving, shifted, sorted_values))
