"""Ranked-window arithmetic: order statistics of a ring buffer in one pass.

A percentile of the last ``H`` norms needs their order. Sorting them costs
``O(H log H)`` a step; keeping a sorted copy up to date costs one pass, but
every slot of that copy takes a neighbour's value when a norm arrives, and a
kernel that reads its neighbours cannot write in place: on GPU and TPU the
copy is then written to a new buffer and copied back, and the passes around
it are not fused.

Here each slot of the ring buffer keeps its *rank* instead: its position in
the window's order, ties broken by slot. Replacing one norm moves every other
rank by at most one, decided by comparing that slot's own norm with the
leaving and the arriving one: an elementwise pass over the ring and the
ranks, which writes the ranks in place. The same pass sums out the norms at
the two ranks a percentile needs, and counts the arriving norm's rank. That
count is a reduction, known only when the pass ends, so the newest slot's
rank is kept aside as a scalar and written into the array by the next pass.
Per step: the ring and the ranks read once, the ranks written once, one
kernel, no loop, no copy.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# The rank array's entry for the newest slot, whose rank is held apart.
PLACEHOLDER_RANK = -1


class Replaced(NamedTuple):
  """What :func:`replace_and_select` returns; shapes ``[...]`` unless said."""

  values: jax.Array  # ``[..., H]``, the ring with the arriving value in.
  ranks: jax.Array  # ``[..., H]``, int32, the placeholder at the newest slot.
  newest_rank: jax.Array  # int32, the newest slot's rank.
  next_slot: jax.Array  # int32, the slot after the newest: the next to go.
  next_leaving: jax.Array  # The value in that slot.
  lower_value: jax.Array  # The value of rank ``lower`` in the new window.
  upper_value: jax.Array  # The value of rank ``upper`` in the new window.


def sum_each_term(*terms: jax.Array) -> jax.Array:
  """The sums of ``terms`` over their last axis, stacked on a new last axis.

  One reduction per term: XLA:TPU fuses them, and the elementwise work that
  feeds them, into one kernel.
  """
  return jnp.stack([term.sum(-1) for term in terms], -1)


def sum_stacked_terms(*terms: jax.Array) -> jax.Array:
  """As :func:`sum_each_term`, as one reduction over the stacked terms.

  XLA:GPU runs a reduction this size as two kernels, so one reduction
  instead of one per term; XLA:TPU would write the stacked array out.
  """
  return jnp.stack(terms, -1).sum(-2)


@jax.custom_jvp
def sum_terms_in_one_reduce(*terms: jax.Array) -> jax.Array:
  """As :func:`sum_each_term`, as one variadic reduction.

  XLA:CPU computes the terms inside that reduction's loop; as separate
  reductions it writes each term out first, 2-3x slower. Its derivative is
  :func:`sum_each_term`'s: JAX cannot transpose a variadic reduction.
  """
  zero = jnp.zeros((), terms[0].dtype)
  sums = jax.lax.reduce(
    terms,
    (zero,) * len(terms),
    lambda totals, values: tuple(
      total + value for total, value in zip(totals, values)
    ),
    (terms[0].ndim - 1,),
  )
  return jnp.stack(sums, -1)


@sum_terms_in_one_reduce.defjvp
def _sum_terms_in_one_reduce_jvp(primals, tangents):
  return sum_terms_in_one_reduce(*primals), sum_each_term(*tangents)


def sum_terms(*terms: jax.Array) -> jax.Array:
  """The sums of ``terms`` over their last axis, the platform's fastest way.

  :func:`sum_stacked_terms` on GPU, :func:`sum_terms_in_one_reduce` on CPU,
  :func:`sum_each_term` on TPU. The sums are of ones, or of one value and
  zeros: exact, so all three give the same bits.
  """
  return jax.lax.platform_dependent(
    *terms,
    cuda=sum_stacked_terms,
    rocm=sum_stacked_terms,
    cpu=sum_terms_in_one_reduce,
    default=sum_each_term,
  )


def initial_ranks(
  batch_shape: tuple[int, ...], size: int
) -> tuple[jax.Array, jax.Array]:
  """The ranks of a window of equal values (``+inf``), slot ``size - 1`` newest.

  Returns:
    The rank array (``[*batch_shape, size]``, int32) and the newest rank.
  """
  ranks = jnp.arange(size, dtype=jnp.int32).at[size - 1].set(PLACEHOLDER_RANK)
  return (
    jnp.broadcast_to(ranks, batch_shape + (size,)).copy(),
    jnp.full(batch_shape, size - 1, jnp.int32),
  )


def replace_and_select(
  values: jax.Array,
  ranks: jax.Array,
  newest_rank: jax.Array,
  slot: jax.Array,
  leaving: jax.Array,
  arriving: jax.Array,
  recorded: jax.Array,
  lower: jax.Array,
  upper: jax.Array,
) -> Replaced:
  """Puts ``arriving`` in ``slot`` and reads two order statistics.

  Every array may carry leading batch axes (one window per group); scalars
  then have those axes alone.

  Args:
    values: ``[..., H]``, the ring buffer, NaN-free, holding ``leaving`` at
      ``slot``.
    ranks: ``[..., H]`` int32, each slot's rank in the order of (value,
      slot), with :data:`PLACEHOLDER_RANK` at the newest slot,
      ``(slot - 1) % H``.
    newest_rank: int32, the newest slot's rank.
    slot: int32, the slot that ``arriving`` replaces; after it, the newest.
    leaving: the value at ``slot``.
    arriving: its replacement, not NaN where ``recorded``.
    recorded: bool, whether ``arriving`` goes in; where not, nothing
      changes and the newest slot stays where it was.
    lower: int32, a rank in ``[0, H)`` to read in the new window.
    upper: int32, another.

  Returns:
    A :class:`Replaced`. The values at ``lower`` and ``upper`` are exact:
    copied, never computed.
  """
  size = values.shape[-1]
  column = lambda scalar: jnp.expand_dims(scalar, -1)
  dtype = values.dtype
  leaving = leaving.astype(dtype)
  arriving = jnp.where(recorded, arriving.astype(dtype), leaving)
  index = jax.lax.iota(jnp.int32, size)
  if values.ndim == 1:  # In place; batched, it would be a scatter (a loop).
    values = jax.lax.dynamic_update_index_in_dim(values, arriving, slot, 0)
  else:
    values = jnp.where(index == column(slot), column(arriving), values)
  is_slot = index == column(slot)
  previous_newest = (slot + size - 1) % size
  ranks = jnp.where(
    index == column(previous_newest), column(newest_rank), ranks
  )

  def above(value):
    """Whether each slot sorts above ``value`` placed at ``slot``."""
    value = column(value)
    return (values > value) | ((values == value) & (index > column(slot)))

  above_arriving = above(arriving)
  ranks = (
    ranks - above(leaving).astype(jnp.int32) + above_arriving.astype(jnp.int32)
  )
  newest = jnp.where(recorded, slot, previous_newest)
  ranks = jnp.where(index == column(newest), PLACEHOLDER_RANK, ranks)
  next_slot = (newest + 1) % size
  # Five sums, all read off the pass with no gather: the arriving value's
  # rank (the others below it; a float32 sum of ones is exact up to 2**24
  # slots); the values of ranks ``lower`` and ``upper``, of the previous
  # newest slot and of the next slot (one slot holds each: a sum of one
  # value and zeros, exact). They read the ranks the pass writes, so that
  # XLA fuses that write into the reduction.
  zero, one = jnp.zeros((), dtype), jnp.ones((), dtype)
  terms = (
    jnp.where(is_slot | above_arriving, zero, one),
    jnp.where(ranks == column(lower), values, zero),
    jnp.where(ranks == column(upper), values, zero),
    jnp.where(index == column(previous_newest), values, zero),
    jnp.where(index == column(next_slot), values, zero),
  )
  sums = sum_terms(*terms)
  arriving_rank = sums[..., 0].astype(jnp.int32)
  newest_rank = jnp.where(recorded, arriving_rank, newest_rank)
  newest_value = jnp.where(recorded, arriving, sums[..., 3])

  def value_of_rank(rank, others):
    return jnp.where(newest_rank == rank, newest_value, others)

  return Replaced(
    values=values,
    ranks=ranks,
    newest_rank=newest_rank,
    next_slot=next_slot,
    next_leaving=sums[..., 4],
    lower_value=value_of_rank(lower, sums[..., 1]),
    upper_value=value_of_rank(upper, sums[..., 2]),
  )


def select(
  values: jax.Array,
  ranks: jax.Array,
  newest_rank: jax.Array,
  next_slot: jax.Array,
  lower: jax.Array,
  upper: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """Reads two order statistics of a window, writing nothing.

  Args:
    values: ``[..., H]``, the ring buffer.
    ranks: ``[..., H]`` int32, as for :func:`replace_and_select`.
    newest_rank: int32, the newest slot's rank.
    next_slot: int32, the slot after the newest.
    lower: int32, a rank in ``[0, H)``.
    upper: int32, another.

  Returns:
    The values of ranks ``lower`` and ``upper``, exact.
  """
  size = values.shape[-1]
  column = lambda scalar: jnp.expand_dims(scalar, -1)
  index = jax.lax.iota(jnp.int32, size)
  newest = (next_slot + size - 1) % size
  ranks = jnp.where(index == column(newest), column(newest_rank), ranks)
  zero = jnp.zeros((), values.dtype)
  sums = sum_terms(
    jnp.where(ranks == column(lower), values, zero),
    jnp.where(ranks == column(upper), values, zero),
  )
  return sums[..., 0], sums[..., 1]
