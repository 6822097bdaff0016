"""The history of gradient norms: a ring buffer and the rank of each slot.

Every transform that clips or skips against a percentile of past norms keeps
the same six fields in its state and updates them the same way: the ring
buffer says which norm is the oldest, the ranks give any percentile in the
same pass that records a norm (see ``_window``). This module is that one
piece of code; the states hold its fields flat
(so that ``optax.tree_utils.tree_get(state, 'history')`` finds them), and
:func:`of` and :meth:`NormHistory._asdict` move between the two.

Only finite norms are recorded. Recording a NaN or an infinity changes
nothing, which is also how a caller declines to record a norm.

:func:`with_history` and :func:`recorded_norms` are the public side: they
seed a state's window from logged norms, or read it out oldest first, on the
host, outside ``jit``.
"""

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from autoclip_optax import _percentile
from autoclip_optax import _window


class NormHistory(NamedTuple):
  """The fields of a state that hold its history; see ``AutoClipState``."""

  count: chex.Array
  history: chex.Array
  ranks: chex.Array
  newest_rank: chex.Array
  oldest: chex.Array
  next_slot: chex.Array


def of(state) -> NormHistory:
  """The history fields of ``state``, a NamedTuple that has all of them."""
  return NormHistory(*(getattr(state, field) for field in NormHistory._fields))


def empty(max_history: int, batch_shape: tuple[int, ...]) -> NormHistory:
  """A history with nothing recorded, one per ``batch_shape`` entry."""
  ranks, newest_rank = _window.initial_ranks(batch_shape, max_history)
  # Separate buffers, so that the state can be donated.
  return NormHistory(
    count=jnp.zeros(batch_shape, jnp.int32),
    history=jnp.full(batch_shape + (max_history,), jnp.inf, jnp.float32),
    ranks=ranks,
    newest_rank=newest_rank,
    oldest=jnp.full(batch_shape, jnp.inf, jnp.float32),
    next_slot=jnp.zeros(batch_shape, jnp.int32),
  )


def _clipped_percentile(percentile_value) -> jax.Array:
  """A traced percentile may be out of range: [0, 100], NaN counting as 100."""
  return jnp.clip(
    jnp.nan_to_num(jnp.asarray(percentile_value, jnp.float32), nan=100.0),
    0.0,
    100.0,
  )


def _where_percentile_sits(count, max_history: int, percentile_value):
  """How many norms a window holds, and where their percentile sits.

  Returns:
    The number of norms, the two ranks to interpolate between, and the
    upper one's weight (:func:`_percentile.ranks_and_weight`).
  """
  num_filled = jnp.minimum(count, max_history)
  return num_filled, *_percentile.ranks_and_weight(
    _clipped_percentile(percentile_value), num_filled
  )


def record(
  history: NormHistory, norm: jax.Array, percentile_value
) -> tuple[NormHistory, jax.Array]:
  """Records ``norm`` if finite, and takes a percentile of the new window.

  Args:
    history: a history; with a batch of windows, ``norm`` has the batch
      shape.
    norm: float32, the norm to record, the oldest one leaving when the window
      is full; a NaN or an infinity changes nothing.
    percentile_value: a number or float32 (a scalar, or of the batch
      shape); a traced one may be out of range, so it is clipped to
      [0, 100], NaN counting as 100.

  Returns:
    The new history, and the ``percentile_value``-th percentile of its
    recorded norms (float32, as ``np.percentile``; ``+inf`` when none is
    recorded).
  """
  finite = jnp.isfinite(norm)
  count = jnp.where(finite, optax.safe_increment(history.count), history.count)
  num_filled, lower, upper, weight = _where_percentile_sits(
    count, history.history.shape[-1], percentile_value
  )
  replaced = _window.replace_and_select(
    history.history,
    history.ranks,
    history.newest_rank,
    history.next_slot,
    history.oldest,
    norm,
    finite,
    lower,
    upper,
  )
  return NormHistory(
    count=count,
    history=replaced.values,
    ranks=replaced.ranks,
    newest_rank=replaced.newest_rank,
    oldest=replaced.next_leaving,
    next_slot=replaced.next_slot,
  ), _percentile.interpolate(
    replaced.lower_value, replaced.upper_value, weight, num_filled
  )


def percentile(history: NormHistory, percentile_value) -> jax.Array:
  """The ``percentile_value``-th percentile of the recorded norms.

  Args:
    history: a history.
    percentile_value: as for :func:`record`.

  Returns:
    float32, as ``np.percentile`` over the recorded norms; ``+inf`` when none
    is recorded.
  """
  num_filled, lower, upper, weight = _where_percentile_sits(
    history.count, history.history.shape[-1], percentile_value
  )
  lower_value, upper_value = _window.select(
    history.history,
    history.ranks,
    history.newest_rank,
    history.next_slot,
    lower,
    upper,
  )
  return _percentile.interpolate(lower_value, upper_value, weight, num_filled)


def _from_norms(norms: np.ndarray, max_history: int) -> NormHistory:
  """The history left by recording ``norms`` one by one into an empty one."""
  with np.errstate(over='ignore'):  # 1e39 becomes inf, as in a step.
    as_float32 = norms.astype(np.float32)
  finite = as_float32[np.isfinite(as_float32)]
  kept = finite[len(finite) - min(len(finite), max_history) :]
  ring = np.full(max_history, np.inf, np.float32)
  ring[: len(kept)] = kept
  next_slot = len(finite) % max_history
  if len(finite) >= max_history:
    # The oldest kept norm sits where the next one will be written.
    ring = np.roll(ring, next_slot)
  slots = np.arange(max_history)
  ranks = np.empty(max_history, np.int32)
  ranks[np.lexsort((slots, ring))] = slots
  newest = (next_slot - 1) % max_history
  newest_rank = ranks[newest]
  ranks[newest] = _window.PLACEHOLDER_RANK
  return NormHistory(
    count=np.int32(min(len(finite), np.iinfo(np.int32).max)),
    history=ring,
    ranks=ranks,
    newest_rank=np.int32(newest_rank),
    oldest=ring[next_slot],
    next_slot=np.int32(next_slot),
  )


def _has_history(node) -> bool:
  """Whether ``node`` is a state NamedTuple with the history fields."""
  fields = getattr(node, '_fields', ())
  return isinstance(node, tuple) and all(
    field in fields for field in NormHistory._fields
  )


def _histories(state) -> list:
  """The outermost states in ``state`` that have the history fields."""
  return [
    node
    for node in jax.tree.leaves(state, is_leaf=_has_history)
    if _has_history(node)
  ]


def _as_norms(norms) -> np.ndarray:
  """``norms`` as float64, any iterable (a generator too) accepted."""
  if not hasattr(norms, '__len__') and not hasattr(norms, '__array__'):
    norms = list(norms)
  return np.asarray(norms, np.float64)


def _seeded(history: NormHistory, norms) -> NormHistory:
  """``history``'s window holding ``norms``; a row of norms per group."""
  max_history = history.history.shape[-1]
  if history.history.ndim == 1:
    rows = [_as_norms(norms)]
    if rows[0].ndim != 1:
      raise ValueError(
        'norms must be 1-D (oldest first) for a state without groups, got '
        f'shape {rows[0].shape}'
      )
  else:
    rows = [_as_norms(row) for row in norms]
    if len(rows) != history.history.shape[0] or any(
      row.ndim != 1 for row in rows
    ):
      raise ValueError(
        f'norms must hold one 1-D sequence per group '
        f'({history.history.shape[0]} groups), got '
        f'{[row.shape for row in rows]}'
      )
  negative = [row[row < 0] for row in rows]
  if any(len(values) for values in negative):
    raise ValueError(
      'norms must not be negative (log-norms, say), got '
      f'{np.concatenate(negative)[:5].tolist()}'
    )
  seeded = [_from_norms(row, max_history) for row in rows]
  stacked = jax.tree.map(lambda *rows: np.stack(rows), *seeded)
  if history.history.ndim == 1:
    stacked = jax.tree.map(lambda rows: rows[0], stacked)
  return jax.tree.map(jnp.asarray, stacked)


def with_history(state: optax.OptState, norms) -> optax.OptState:
  """Returns ``state`` with its window holding the last finite ``norms``.

  The window (``history``, ``ranks``, ``newest_rank``, ``oldest``,
  ``next_slot`` and ``count``) becomes exactly what recording ``norms`` one
  by one into a fresh state gives, so the next step is the same, bit for
  bit. Other fields (the last threshold, the counters, a wrapped inner
  state) are kept. Runs on the host: call it outside ``jit``.

  Args:
    state: an :class:`AutoClipState` or :class:`SkipSpikesState`, or any
      optimizer state holding them (a chain's tuple, say): each of them gets
      the same norms.
    norms: the norms, oldest first, any iterable of numbers; they are
      rounded to float32, as a step computes them, and the non-finite ones
      (1e39 included, which is ``inf`` in float32) are skipped, as a step
      skips them; only the last ``max_history`` finite ones are kept. With
      ``group_by``, one such sequence per group, in group order.

  Returns:
    A state of the same structure, shapes and dtypes.

  Raises:
    ValueError: ``state`` holds no window, ``norms`` has the wrong shape,
      or a norm is negative.

  Example:
    >>> import jax.numpy as jnp
    >>> from autoclip_optax import autoclip, with_history
    >>> tx = autoclip(50.0, max_history=3)
    >>> state = with_history(tx.init({'w': jnp.zeros(1)}), [4.0, 1.0, 2.0, 3.0])
    >>> print(state.count, state.history)
    4 [3. 1. 2.]
  """
  if not _histories(state):
    raise ValueError(
      'state holds no AutoClipState or SkipSpikesState to seed, got '
      f'{type(state).__name__}'
    )

  def seed(node):
    if not _has_history(node):
      return node
    others = {
      field: jax.tree.map(seed, value, is_leaf=_has_history)
      for field, value in node._asdict().items()
      if field not in NormHistory._fields
    }
    return node._replace(**others, **_seeded(of(node), norms)._asdict())

  return jax.tree.map(seed, state, is_leaf=_has_history)


def _all_histories(state) -> list:
  """Every state in ``state`` with the history fields, outer before inner."""
  found = []
  for node in _histories(state):
    found.append(node)
    found.extend(
      _all_histories(
        [
          value
          for field, value in node._asdict().items()
          if field not in NormHistory._fields
        ]
      )
    )
  return found


def recorded_norms(
  state: optax.OptState,
  state_type: type | None = None,
) -> np.ndarray | list[np.ndarray]:
  """The finite norms in a state's window, oldest first.

  Feed them to :func:`with_history` to move a window into a state with
  another ``max_history`` (a larger one keeps them all, a smaller one the
  latest).

  Args:
    state: an :class:`AutoClipState` or :class:`SkipSpikesState`, or an
      optimizer state holding them (a chain's tuple, a wrapper's state).
    state_type: which window to read when ``state`` holds several, for
      example ``skip_spikes(optax.chain(autoclip(...), ...))``'s state,
      which holds :func:`skip_spikes`' window and :func:`autoclip`'s:
      :class:`AutoClipState` or :class:`SkipSpikesState`. ``None`` (the
      default) reads the only window there is.

  Returns:
    float32, 1-D; with ``group_by``, a list of them, one per group.

  Raises:
    ValueError: ``state`` holds no window; or several and ``state_type`` is
      ``None``; or several of ``state_type`` (pass the one you want, such
      as ``state[0]``).
    TypeError: ``state_type`` is not a state type with a window.

  Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from autoclip_optax import AutoClipState, autoclip, recorded_norms
    >>> from autoclip_optax import skip_spikes
    >>> tx = skip_spikes(optax.chain(autoclip(10.0, max_history=2),
    ...                              optax.sgd(1.0)),
    ...                  max_history=3, min_history=3)
    >>> state = tx.init({'w': jnp.zeros(1)})
    >>> for g in [1.0, 2.0, 3.0]:
    ...   _, state = tx.update({'w': jnp.array([g])}, state)
    >>> print(recorded_norms(state, AutoClipState))
    [2. 3.]
  """
  if state_type is not None and not (
    isinstance(state_type, type)
    and all(
      field in getattr(state_type, '_fields', ())
      for field in NormHistory._fields
    )
  ):
    raise TypeError(
      'state_type must be AutoClipState or SkipSpikesState (a state type '
      f'with a window), got {state_type!r}'
    )
  found = _all_histories(state)
  if state_type is not None:
    found = [node for node in found if isinstance(node, state_type)]
  names = ', '.join(type(node).__name__ for node in found)
  if not found:
    wanted = (
      'AutoClipState or SkipSpikesState'
      if state_type is None
      else state_type.__name__
    )
    raise ValueError(
      f'state holds no window to read: no {wanted} in a {type(state).__name__}'
    )
  if len(found) > 1:
    if state_type is None:
      raise ValueError(
        f'state holds {len(found)} windows ({names}, outer first): pass '
        'state_type=AutoClipState or state_type=SkipSpikesState to say '
        'which to read'
      )
    raise ValueError(
      f'state holds {len(found)} windows of type {state_type.__name__}: '
      'pass the state of the one you want (state[0], say)'
    )
  history = of(found[0])
  rows = [
    np.roll(np.asarray(ring), -int(slot))
    for ring, slot in zip(
      np.atleast_2d(history.history), np.atleast_1d(history.next_slot)
    )
  ]
  # Unwritten slots hold +inf; recorded norms are finite.
  rows = [row[np.isfinite(row)] for row in rows]
  return rows[0] if history.history.ndim == 1 else rows
