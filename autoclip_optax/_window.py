"""Sorted-window arithmetic: keep a sorted copy of a ring buffer up to date.

Replacing one value of a sorted array by another shifts every element between
the slot that leaves and the slot where the new value lands over by one place.
Both slots are found by binary search, and only the blocks that hold that
range are rewritten, in place: a step costs at most one pass over the window
(O(H), memory-bound), usually a fraction of one, instead of a sort
(O(H log H)).
"""

import functools

import jax
import jax.numpy as jnp

# On CPU, a loop over blocks touches only the shifted range. Elsewhere, where
# each loop iteration costs a kernel launch, the window is one block.
CPU_BLOCK_SIZE = 16384


def replace_in_sorted_blockwise(sorted_values: jax.Array, leaving: jax.Array,
                                arriving: jax.Array,
                                block_size: int) -> jax.Array:
  """Removes one occurrence of ``leaving`` and inserts ``arriving``.

  Args:
    sorted_values: a 1-D array sorted in ascending order, without NaNs.
    leaving: a value present in ``sorted_values``.
    arriving: the value that takes its place; not NaN.
    block_size: how many elements each loop iteration rewrites (static);
      capped at the window's size.

  Returns:
    An array of the same shape and dtype, sorted, holding the same values as
    ``sorted_values`` with ``leaving`` swapped for ``arriving``. When
    ``leaving == arriving`` it is ``sorted_values`` unchanged.
  """
  size = sorted_values.shape[0]
  block_size = min(block_size, size)
  arriving = arriving.astype(sorted_values.dtype)
  leave_at = jnp.searchsorted(sorted_values, leaving, side='left')
  arrive_before = jnp.searchsorted(sorted_values, arriving, side='left')
  # Index of ``arriving`` in the result: one place lower when the slot that
  # leaves is below it, since everything above that slot moves down.
  insert_at = jnp.where(leave_at < arrive_before, arrive_before - 1,
                        arrive_before)
  first = jnp.minimum(leave_at, insert_at)
  last = jnp.maximum(leave_at, insert_at)
  # Values move down (each takes its upper neighbour's) when the leaving slot
  # is below the new one. Blocks are then rewritten upwards, so that every
  # neighbour read is still unwritten; otherwise downwards.
  moving_down = leave_at < insert_at
  offsets = jax.lax.iota(jnp.int32, block_size)

  def rewrite_block(carry):
    block_number, values = carry
    nominal_start = jnp.where(moving_down, first + block_number * block_size,
                              last + 1 - (block_number + 1) * block_size)
    start = jnp.clip(nominal_start, 0, size - block_size)
    block = jax.lax.dynamic_slice(values, (start,), (block_size,))
    below = values[jnp.maximum(start - 1, 0)]  # Unused at the window's ends.
    above = values[jnp.minimum(start + block_size, size - 1)]
    index = start + offsets
    # A block clamped at the window's end overlaps the one before it.
    already_written = jnp.where(moving_down,
                                index < first + block_number * block_size,
                                index > last - block_number * block_size)
    moving = (index >= first) & (index <= last) & ~already_written
    neighbour = jnp.where(
        moving_down,
        jnp.concatenate([block[1:], above[None]]),
        jnp.concatenate([below[None], block[:-1]]),
    )
    rewritten = jnp.where(index == insert_at, arriving,
                          jnp.where(moving, neighbour, block))
    return block_number + 1, jax.lax.dynamic_update_slice(
        values, rewritten, (start,))

  num_blocks = (last - first) // block_size + 1
  _, result = jax.lax.while_loop(lambda carry: carry[0] < num_blocks,
                                 rewrite_block,
                                 (jnp.zeros([], jnp.int32), sorted_values))
  return result


def replace_in_sorted(sorted_values: jax.Array, leaving: jax.Array,
                      arriving: jax.Array) -> jax.Array:
  """:func:`replace_in_sorted_blockwise` with the block size for the platform.

  Args:
    sorted_values: a 1-D array sorted in ascending order, without NaNs.
    leaving: a value present in ``sorted_values``.
    arriving: the value that takes its place; not NaN.

  Returns:
    ``sorted_values`` with ``leaving`` swapped for ``arriving``, sorted.
  """
  return jax.lax.platform_dependent(
      sorted_values, leaving, arriving,
      cpu=functools.partial(replace_in_sorted_blockwise,
                            block_size=CPU_BLOCK_SIZE),
      default=functools.partial(replace_in_sorted_blockwise,
                                block_size=sorted_values.shape[0]),
  )
