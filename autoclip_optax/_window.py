"""Sorted-window arithmetic: keep a sorted copy of a ring buffer up to date.

Replacing one value of a sorted array by another shifts every element between
the slot that leaves and the slot where the new value lands over by one place:
a step costs at most one pass over the window (O(H), memory-bound) instead of
a sort (O(H log H)). Two formulations give the same values, bit for bit, each
fastest where it runs:

* On accelerators, every element of the result is a select among its old
  value and its two neighbours, decided by comparing them with the leaving
  and the arriving value: one fused elementwise pass, with no search, no loop
  and no reduction. A loop there costs a kernel launch per iteration and a
  read of its condition back to the host.
* On CPU, where a loop iteration is cheap and a pass over the window is not,
  both slots are found by binary search and only the blocks that hold the
  range between them are rewritten, in place: usually a fraction of a pass. A
  batch of windows (one per parameter group) is updated one window after
  another inside a single loop, each by its own number of blocks, so the work
  is the sum of their shifts. :func:`replace_in_sorted` takes that path under
  ``jax.vmap`` too, where vmap's own rule would run the loop for the longest
  shift with a select over all windows on every iteration.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

# On CPU, each iteration of the loop over blocks rewrites this many values.
CPU_BLOCK_SIZE = 16384


class _Shift(NamedTuple):
  """Where one window's values move: indices into the sorted window."""

  arriving: jax.Array  # The new value, in the window's dtype.
  insert_at: jax.Array  # Its index in the result.
  first: jax.Array  # The lowest index that changes.
  last: jax.Array  # The highest index that changes.
  moving_down: jax.Array  # Whether values take their upper neighbour's.


def _plan_shift(sorted_values: jax.Array, leaving: jax.Array,
                arriving: jax.Array) -> _Shift:
  """Finds the range that replacing ``leaving`` by ``arriving`` shifts."""
  arriving = arriving.astype(sorted_values.dtype)
  leave_at = jnp.searchsorted(sorted_values, leaving, side='left')
  arrive_before = jnp.searchsorted(sorted_values, arriving, side='left')
  # Index of ``arriving`` in the result: one place lower when the slot that
  # leaves is below it, since everything above that slot moves down.
  insert_at = jnp.where(leave_at < arrive_before, arrive_before - 1,
                        arrive_before)
  return _Shift(arriving=arriving,
                insert_at=insert_at,
                first=jnp.minimum(leave_at, insert_at),
                last=jnp.maximum(leave_at, insert_at),
                moving_down=leave_at < insert_at)


def _rewrite_block(rows: jax.Array, row: jax.Array, block_number: jax.Array,
                   shift: _Shift, block_size: int) -> jax.Array:
  """Shifts the ``block_number``-th block of ``shift``'s range of ``row``.

  Blocks are rewritten upwards when values move down (each takes its upper
  neighbour's) and downwards otherwise, so that every neighbour read is still
  unwritten.
  """
  size = rows.shape[1]
  first, last, moving_down = shift.first, shift.last, shift.moving_down
  nominal_start = jnp.where(moving_down, first + block_number * block_size,
                            last + 1 - (block_number + 1) * block_size)
  start = jnp.clip(nominal_start, 0, size - block_size)
  block = jax.lax.dynamic_slice(rows, (row, start), (1, block_size))[0]
  below = rows[row, jnp.maximum(start - 1, 0)]  # Unused at the window's ends.
  above = rows[row, jnp.minimum(start + block_size, size - 1)]
  index = start + jax.lax.iota(jnp.int32, block_size)
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
  rewritten = jnp.where(index == shift.insert_at, shift.arriving,
                        jnp.where(moving, neighbour, block))
  return jax.lax.dynamic_update_slice(rows, rewritten[None], (row, start))


def replace_in_sorted_blockwise(sorted_values: jax.Array, leaving: jax.Array,
                                arriving: jax.Array,
                                block_size: int) -> jax.Array:
  """Removes one occurrence of ``leaving`` and inserts ``arriving``.

  Args:
    sorted_values: a window, ``[size]``, sorted in ascending order, without
      NaNs; or a batch of such windows, ``[..., size]``.
    leaving: a value present in the window; shape ``[...]``, one per window.
    arriving: the value that takes its place, not NaN; one per window.
    block_size: how many elements each loop iteration rewrites (static);
      capped at the window's size.

  Returns:
    An array of the same shape and dtype, each window sorted, holding the
    same values as before with ``leaving`` swapped for ``arriving``. Where
    ``leaving == arriving`` the window is unchanged.
  """
  size = sorted_values.shape[-1]
  block_size = min(block_size, size)
  rows = sorted_values.reshape(-1, size)
  if rows.shape[0] == 0:  # An empty batch: nothing to index.
    return sorted_values
  shifts = jax.vmap(_plan_shift)(rows, jnp.reshape(leaving, (-1,)),
                                 jnp.reshape(arriving, (-1,)))

  def replace_in_row(row, rows):
    shift = jax.tree.map(lambda field: field[row], shifts)
    num_blocks = (shift.last - shift.first) // block_size + 1
    _, rows = jax.lax.while_loop(
        lambda carry: carry[0] < num_blocks,
        lambda carry: (carry[0] + 1, _rewrite_block(
            carry[1], row, carry[0], shift, block_size)),
        (jnp.zeros([], jnp.int32), rows))
    return rows

  rows = jax.lax.fori_loop(0, rows.shape[0], replace_in_row, rows)
  return rows.reshape(sorted_values.shape)


def replace_in_sorted_elementwise(sorted_values: jax.Array,
                                  leaving: jax.Array,
                                  arriving: jax.Array) -> jax.Array:
  """Removes one occurrence of ``leaving`` and inserts ``arriving``, in one pass.

  With ``s`` the window and ``r`` the window without ``leaving``, ``r[i]`` is
  ``s[i]`` below the first occurrence of ``leaving`` (exactly where
  ``s[i] < leaving``) and ``s[i + 1]`` from there on. ``arriving`` then lands
  at the first index where ``r[i] >= arriving``: the result is ``r[i]`` below
  that index, ``arriving`` at it and ``r[i - 1]`` above it. Each output
  element thus needs only ``s[i - 1]``, ``s[i]`` and ``s[i + 1]``, which XLA
  fuses into a single elementwise kernel. Comparisons only: the values are
  moved, never computed.

  Args:
    sorted_values: a window, ``[size]``, sorted in ascending order, without
      NaNs; or a batch of such windows, ``[..., size]``.
    leaving: a value present in the window; shape ``[...]``, one per window.
    arriving: the value that takes its place, not NaN; one per window.

  Returns:
    The same as :func:`replace_in_sorted_blockwise`, bit for bit.
  """
  arriving = jnp.expand_dims(arriving.astype(sorted_values.dtype), -1)
  leaving = jnp.expand_dims(leaving.astype(sorted_values.dtype), -1)
  edge = sorted_values.shape[:-1] + (1,)
  # Past the ends: +inf above (nothing left to shift down), -inf below (so
  # that ``arriving`` lands at index 0 when it is the smallest).
  above = jnp.concatenate(
      [sorted_values[..., 1:], jnp.full(edge, jnp.inf, sorted_values.dtype)],
      axis=-1)
  below = jnp.concatenate(
      [jnp.full(edge, -jnp.inf, sorted_values.dtype), sorted_values[..., :-1]],
      axis=-1)
  rest = jnp.where(sorted_values < leaving, sorted_values, above)
  rest_below = jnp.where(below < leaving, below, sorted_values)
  return jnp.where(rest < arriving, rest,
                   jnp.where(rest_below < arriving, arriving, rest_below))


def _replace_in_sorted_for_platform(sorted_values: jax.Array,
                                    leaving: jax.Array,
                                    arriving: jax.Array) -> jax.Array:
  return jax.lax.platform_dependent(
      sorted_values, leaving, arriving,
      cpu=functools.partial(replace_in_sorted_blockwise,
                            block_size=CPU_BLOCK_SIZE),
      default=replace_in_sorted_elementwise,
  )


@jax.custom_batching.custom_vmap
def replace_in_sorted(sorted_values: jax.Array, leaving: jax.Array,
                      arriving: jax.Array) -> jax.Array:
  """Swaps ``leaving`` for ``arriving`` in a sorted window, for the platform.

  :func:`replace_in_sorted_blockwise` on CPU, where under ``jax.vmap`` the
  batch of windows is updated one after another in one loop;
  :func:`replace_in_sorted_elementwise` on every other platform, straight-line
  code. Both give the same result, bit for bit.

  Args:
    sorted_values: a 1-D array sorted in ascending order, without NaNs.
    leaving: a value present in ``sorted_values``.
    arriving: the value that takes its place; not NaN.

  Returns:
    ``sorted_values`` with ``leaving`` swapped for ``arriving``, sorted.
  """
  return _replace_in_sorted_for_platform(sorted_values, leaving, arriving)


@replace_in_sorted.def_vmap
def _replace_in_sorted_batch(axis_size, in_batched, *args):
  sorted_values, leaving, arriving = (
      arg if batched else jnp.broadcast_to(arg, (axis_size,) + arg.shape)
      for arg, batched in zip(args, in_batched))
  return _replace_in_sorted_for_platform(sorted_values, leaving,
                                         arriving), True
