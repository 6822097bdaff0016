"""Parameter groups: which group each leaf of an updates pytree belongs to.

A grouping is resolved from the structure of a pytree alone, never from its
values, so ``init`` (which sees the params) and every ``update`` (which sees
the updates, often without params) find the same groups. Group indices are
Python ints: they are static under ``jit``.
"""

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

LEAF = 'leaf'

GroupBy = None | str | Callable[[Any], Any] | Any


def validate(group_by: GroupBy) -> None:
  """Raises for a ``group_by`` that cannot give groups for any pytree.

  Args:
    group_by: ``None``, ``'leaf'``, a callable returning a pytree of labels,
      or a pytree of labels.

  Raises:
    ValueError: ``group_by`` is a string other than ``'leaf'``.
    TypeError: a pytree of labels whose labels cannot be sorted.
  """
  if group_by is None or callable(group_by):
    return
  if isinstance(group_by, str):
    if group_by != LEAF:
      raise ValueError(
        f"group_by must be None, '{LEAF}', a callable returning a pytree of "
        f'labels, or a pytree of labels; got the string {group_by!r}'
      )
    return
  _label_order(jax.tree.leaves(group_by))


def _label_order(labels: Sequence[Any]) -> dict[Any, int]:
  """Maps each distinct label to its group index, in sorted label order."""
  try:
    return {label: index for index, label in enumerate(sorted(set(labels)))}
  except TypeError as error:
    raise TypeError(
      'group_by labels must be hashable and mutually orderable (for '
      f'example all str), got {sorted(set(map(repr, labels)))}'
    ) from error


def _leaf_labels(labels, tree) -> list[Hashable]:
  """One label per leaf of ``tree``; ``labels`` may be a prefix of ``tree``."""
  try:
    leaves_per_label = jax.tree.map(
      lambda _, subtree: len(jax.tree.leaves(subtree)), labels, tree
    )
  except (ValueError, TypeError) as error:
    raise ValueError(
      'group_by must give a pytree of labels with the structure of the '
      f'params and updates or a prefix of it; the tree is '
      f'{jax.tree.structure(tree)}, the labels '
      f'{jax.tree.structure(labels)}'
    ) from error
  return [
    label
    for label, num_leaves in zip(
      jax.tree.leaves(labels), jax.tree.leaves(leaves_per_label)
    )
    for _ in range(num_leaves)
  ]


def assign(group_by: GroupBy, tree) -> tuple[tuple[int, ...], int]:
  """The group of each leaf of ``tree``, and how many groups there are.

  Args:
    group_by: as for :func:`validate`. ``None`` puts every leaf in group 0;
      ``'leaf'`` puts leaf ``i`` in group ``i``; labels (returned by the
      callable, called on ``tree``, or given directly) number their groups in
      sorted label order.
    tree: the params or updates pytree.

  Returns:
    The group index of each leaf, in ``jax.tree.leaves`` order, and the
    number of groups.

  Raises:
    ValueError: the labels are not a pytree with the structure of ``tree``
      or a prefix of it.
    TypeError: labels that cannot be sorted.
  """
  num_leaves = len(jax.tree.leaves(tree))
  if group_by is None:
    return (0,) * num_leaves, 1
  if isinstance(group_by, str):
    return tuple(range(num_leaves)), num_leaves
  labels = group_by(tree) if callable(group_by) else group_by
  leaf_labels = _leaf_labels(labels, tree)
  order = _label_order(leaf_labels)
  return tuple(order[label] for label in leaf_labels), len(order)


def is_float0(leaf) -> bool:
  """Whether ``leaf`` is a ``float0`` tangent: it has no values to clip."""
  return getattr(leaf, 'dtype', None) == jax.dtypes.float0


def check_leaves(leaves: Sequence[jax.Array]) -> None:
  """Raises for leaves whose norm means nothing, as ``optax`` clips do.

  Args:
    leaves: the updates' leaves.

  Raises:
    TypeError: a leaf that is not floating point or complex (nor
      ``float0``, which ``jax.grad(..., allow_int=True)`` gives for integer
      params and which passes through unchanged).
  """
  for index, leaf in enumerate(leaves):
    dtype = jnp.result_type(leaf)
    if not (is_float0(leaf) or jnp.issubdtype(dtype, jnp.inexact)):
      raise TypeError(
        'updates must be floating point or complex to be clipped, but '
        f'leaf {index} (in jax.tree.leaves order) has dtype {dtype}'
      )


def _squares(leaf) -> jax.Array:
  """Squared magnitudes, in float32 (or wider) whatever the dtype."""
  wide = leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32))
  return jnp.real(wide * jnp.conj(wide))


def _sum_each_leaf(*leaves: jax.Array) -> tuple[jax.Array, ...]:
  """Each leaf's sum of squares, one reduction per leaf."""
  return tuple(jnp.sum(_squares(leaf)) for leaf in leaves)


# How many partial sums each leaf is summed into first, on GPU.
GPU_PARTIAL_SUMS = 1024


def _sum_each_leaf_in_two_stages(*leaves: jax.Array) -> tuple[jax.Array, ...]:
  """As :func:`_sum_each_leaf`, with one second stage for all the leaves.

  XLA:GPU sums a large array in two kernels, the second adding a few
  hundred partial sums: 16 kernels for 8 leaves. Here each leaf is summed
  into :data:`GPU_PARTIAL_SUMS` partial sums (one kernel; a smaller leaf is
  padded instead), and one reduction over all the leaves' stacked partial
  sums finishes them: 9 kernels for 8 leaves.
  """
  partial_sums = []
  for leaf in leaves:
    squares = _squares(leaf).reshape(-1)
    columns = -(-squares.size // GPU_PARTIAL_SUMS)
    squares = jnp.pad(squares, (0, GPU_PARTIAL_SUMS * columns - squares.size))
    partial_sums.append(
      squares
      if columns == 1
      else squares.reshape(GPU_PARTIAL_SUMS, columns).sum(axis=1)
    )
  dtype = jnp.result_type(*partial_sums)
  sums = jnp.stack([partial.astype(dtype) for partial in partial_sums]).sum(1)
  return tuple(
    total.astype(partial.dtype) for total, partial in zip(sums, partial_sums)
  )


def _sums_of_squares(leaves: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
  """Each leaf's sum of squares, the platform's fastest way.

  Two stages on a single GPU. With several devices, leaves may be sharded,
  and reshaping them into partial sums would move them between devices:
  there, as on other platforms, each leaf is one reduction.
  """
  if not leaves:
    return ()
  if jax.device_count() > 1:
    return _sum_each_leaf(*leaves)
  return jax.lax.platform_dependent(
    *leaves,
    cuda=_sum_each_leaf_in_two_stages,
    rocm=_sum_each_leaf_in_two_stages,
    default=_sum_each_leaf,
  )


def group_norms(
  leaves: Sequence[jax.Array], group_of_leaf: Sequence[int], num_groups: int
) -> jax.Array:
  """The L2 norm of each group's leaves.

  Args:
    leaves: the updates' leaves, of any float or complex dtype.
    group_of_leaf: the group of each leaf, as :func:`assign` gives it.
    num_groups: how many groups there are.

  Returns:
    float32 ``[num_groups]``, each accumulated in float32 (or wider)
    whatever the leaves' dtype, for precision; ``float0`` leaves count as
    zeros.

  Raises:
    TypeError: as :func:`check_leaves`.
  """
  check_leaves(leaves)
  kept = [
    (leaf, group)
    for leaf, group in zip(leaves, group_of_leaf)
    if not is_float0(leaf)
  ]
  squares: list[list[jax.Array]] = [[] for _ in range(num_groups)]
  sums = _sums_of_squares([leaf for leaf, _ in kept])
  for (_, group), leaf_sum in zip(kept, sums):
    squares[group].append(leaf_sum)
  return jnp.asarray(
    [jnp.sqrt(sum(group_squares, jnp.float32(0))) for group_squares in squares],
    jnp.float32,
  )


def leaf_scales(
  scales: jax.Array, group_of_leaf: Sequence[int]
) -> tuple[jax.Array, ...]:
  """Each leaf's group's entry of ``scales``, as a scalar.

  On TPU each is a masked sum over ``scales`` rather than an element read
  from it: an element read leaves a one-element array in on-chip memory,
  and XLA:TPU then stages every leaf's optimizer update through on-chip
  memory too (3x the bytes by its cost model, for 8 groups at 10M params).

  Args:
    scales: float32 ``[num_groups]``.
    group_of_leaf: the group of each leaf, as :func:`assign` gives it.

  Returns:
    One float32 scalar per leaf.
  """
  groups = tuple(group_of_leaf)

  def by_masked_sums(scales):
    index = jnp.arange(scales.shape[0])
    return tuple(
      jnp.sum(jnp.where(index == group, scales, 0)) for group in groups
    )

  def by_indexing(scales):
    return tuple(scales[group] for group in groups)

  return jax.lax.platform_dependent(
    scales, tpu=by_masked_sums, default=by_indexing
  )
