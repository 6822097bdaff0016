"""AutoClip: clip by global norm to a percentile of the norms seen so far."""

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

# 100k norms cover the paper's whole-history runs (~80k steps) and cost
# 800 KB of state: a float32 norm and its int32 rank per slot.
DEFAULT_MAX_HISTORY = 100_000


class AutoClipState(NamedTuple):
  """State of :func:`autoclip`.

  Shapes are those of the default global mode. With ``group_by``, every field
  gains a leading axis of ``num_groups``, one row per group: the scalars
  become ``[num_groups]``, ``history`` and ``ranks``
  ``[num_groups, max_history]``.

  Attributes:
    count: int32, finite gradient norms recorded since ``init`` (saturates at
      the int32 maximum).
    grad_norm: float32, the global norm of the updates at the last step,
      before clipping (NaN or inf when those updates were not finite); per
      group, the norm of that group's leaves.
    threshold: float32, the clipping threshold used at the last step; ``+inf``
      (no clipping) while fewer than ``max(min_history, 1)`` finite norms
      are recorded.
    history: float32 ``[max_history]`` ring buffer of recorded norms, oldest
      overwritten first; slots not yet written hold ``+inf``.
    ranks: int32 ``[max_history]``, the rank of each slot of ``history`` in
      ascending order (ties broken by slot; unwritten slots rank last), so
      that a percentile is read without sorting. The newest slot's entry is
      -1: its rank is ``newest_rank``, written into ``ranks`` one step
      later, when the pass that ranks the next norm comes by.
    newest_rank: int32, the rank of the newest slot, ``next_slot - 1``
      (modulo ``max_history``).
    oldest: float32, the value of ``history`` that the next recorded norm
      replaces. Carried from the last step so that the next one never reads
      ``history`` before writing it: XLA then updates it in place.
    next_slot: int32 in ``[0, max_history)``, the slot of ``history`` that
      the next recorded norm is written to.
    num_clipped: int32, steps whose updates were scaled down (a finite norm
      above the threshold) since ``init``; ``num_clipped / count`` is the
      clip rate. Saturates at the int32 maximum.
    num_nonfinite: int32, steps whose norm was NaN or inf (not recorded)
      since ``init``. Saturates at the int32 maximum.
  """

  count: chex.Array
  grad_norm: chex.Array
  threshold: chex.Array
  history: chex.Array
  ranks: chex.Array
  newest_rank: chex.Array
  oldest: chex.Array
  next_slot: chex.Array
  num_clipped: chex.Array
  num_nonfinite: chex.Array


def _empty_state(max_history, num_groups) -> AutoClipState:
  """A state with nothing recorded; ``num_groups=None`` is the global mode."""
  groups = () if num_groups is None else (num_groups,)
  return AutoClipState(
    grad_norm=jnp.zeros(groups, jnp.float32),
    threshold=jnp.full(groups, jnp.inf, jnp.float32),
    num_clipped=jnp.zeros(groups, jnp.int32),
    num_nonfinite=jnp.zeros(groups, jnp.int32),
    **_history.empty(max_history, groups)._asdict(),
  )


def _groups_text(num_groups) -> str:
  return (
    'no groups (group_by=None)'
    if num_groups is None
    else f'{num_groups} groups'
  )


def _check_state_fits(state, num_groups, max_history) -> None:
  """Raises unless ``state`` has the windows this transform keeps.

  A state from a transform with another ``group_by`` or ``max_history``
  (a checkpoint of another run, say) would otherwise fail deep inside, or
  broadcast silently.
  """
  expected = () if num_groups is None else (num_groups,)
  if state.count.shape != expected:
    found = None if not state.count.shape else state.count.shape[0]
    raise ValueError(
      f'the state was initialised for {_groups_text(found)}, but this '
      f'autoclip has {_groups_text(num_groups)} for these updates: init '
      'and update need the same group_by and params of the same structure'
    )
  if state.history.shape[-1] != max_history:
    raise ValueError(
      f'the state holds windows of {state.history.shape[-1]} norms, but '
      f'max_history is {max_history}; move the norms with '
      'recorded_norms and with_history'
    )


def _record_and_threshold(state, grad_norm, percentile, min_history):
  """Records the finite norms, returns the scale and the new state.

  Args:
    state: an :class:`AutoClipState`, one window or a batch of them.
    grad_norm: float32, each window's norm at this step.
    percentile: a number or float32 scalar, clipped to [0, 100].
    min_history: how many finite norms must be recorded before clipping.

  Returns:
    The factor to multiply each window's updates by, and the new state.
  """
  finite = jnp.isfinite(grad_norm)
  history, window_percentile = _history.record(
    _history.of(state), grad_norm, percentile
  )
  threshold = jnp.where(
    history.count >= min_history, window_percentile, jnp.inf
  )
  above = grad_norm > threshold
  # Division-free when not clipping; threshold 0 gives 0, not 0/0.
  scale = jnp.where(above, threshold / grad_norm, 1.0)
  return scale, state._replace(
    grad_norm=grad_norm,
    threshold=threshold,
    num_clipped=jnp.where(
      above & finite, optax.safe_increment(state.num_clipped), state.num_clipped
    ),
    num_nonfinite=jnp.where(
      finite, state.num_nonfinite, optax.safe_increment(state.num_nonfinite)
    ),
    **history._asdict(),
  )


def autoclip(
  percentile: jax.typing.ArrayLike = 10.0,
  max_history: int = DEFAULT_MAX_HISTORY,
  group_by: _groups.GroupBy = None,
  min_history: jax.typing.ArrayLike = 0,
) -> optax.GradientTransformation:
  """Clips updates by norm to a percentile of their past norms.

  At each step the global L2 norm of the updates is recorded in a window of
  the last ``max_history`` finite norms (the current one included), and the
  updates are scaled down to the ``percentile``-th percentile of that window
  whenever their norm exceeds it. The percentile is ``np.percentile``'s
  (linear interpolation) over the recorded norms only.

  With ``group_by``, the leaves are split into groups and each group keeps
  its own window and threshold: its leaves are clipped by their own norm
  against their own percentile, independently of the other groups.

  Non-finite norms are never recorded, so one bad batch cannot poison the
  threshold; wrap the chain in :func:`skip_spikes` (or
  :func:`optax.apply_if_finite`) to skip such steps. With
  groups, only the groups whose norm is non-finite skip recording; the others
  record theirs as usual. Nothing is clipped until ``min_history`` finite
  norms (and at least one) are recorded; they are recorded as usual
  meanwhile. A threshold of 0 yields zero updates, never NaN.

  Args:
    percentile: which percentile of the recorded norms to clip to, in
      [0, 100]; 100 never clips. May be an array (for example through
      :func:`optax.inject_hyperparams`); a traced value is clipped to
      [0, 100], NaN counting as 100. The same percentile for every group.
    max_history: how many recent norms the window holds. The paper kept the
      whole history (about 80k steps in its runs); the default 100,000 covers
      that and costs 800 KB of state (8 bytes a slot) per group. Each step
      reads and writes the window once, so its cost grows linearly with this
      size.
    group_by: ``None`` (the default) for one global norm and threshold;
      ``'leaf'`` for one group per leaf, numbered in ``jax.tree.leaves``
      order; or labels in the style of :func:`optax.multi_transform`'s
      ``param_labels``: a pytree of hashable, sortable labels (str or int)
      with the structure of the params or a prefix of it, or a function
      returning one given the params. Groups are numbered in sorted label
      order. A function is called on the params in ``init`` and on the
      updates in ``update`` (which may get no params), so it must depend on
      the tree's structure only. Under :func:`optax.inject_hyperparams`,
      name it in ``static_args``.
    min_history: a warm-up: how many finite norms, the current one
      included, must be recorded before anything is clipped, in
      ``[0, max_history]``. With few norms the percentile rests on the
      first, often small ones; 0 (the paper) clips from the first step.

  Returns:
    A :class:`optax.GradientTransformation` whose state is an
    :class:`AutoClipState`: scalars and ``[max_history]`` windows in the
    global mode; with ``group_by``, ``[num_groups]`` and
    ``[num_groups, max_history]``.

  Raises:
    ValueError: ``percentile`` outside [0, 100] or NaN; ``max_history``
      outside [1, 2**24]; ``min_history`` outside [0, max_history];
      ``group_by`` a string other than ``'leaf'``. At
      ``init`` or ``update``: labels that do not match the tree's structure,
      a state with other groups or another ``max_history`` than this
      transform's, or a ``percentile`` or ``min_history`` that is not a
      scalar.
    TypeError: ``percentile`` not a real number, or ``max_history`` or
      ``min_history`` not an int (bools and floats are rejected); labels
      that cannot be sorted. At ``update``: leaves that are not floating
      point or complex (``float0`` leaves pass through unchanged).

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

    One threshold per leaf:

    >>> tx = autoclip(10.0, max_history=1000, group_by='leaf')
    >>> state = tx.init({'b': jnp.zeros(1), 'w': jnp.zeros(2)})
    >>> for b, w in [(1.0, 5.0), (10.0, 5.0)]:
    ...   updates, state = tx.update(
    ...       {'b': jnp.array([b]), 'w': jnp.array([w, 0.0])}, state)
    >>> print(state.threshold, updates['b'], updates['w'])
    [1.9 5. ] [1.9] [5. 0.]
  """
  _arguments.check_percentile('percentile', percentile)
  _arguments.check_int('max_history', max_history, 1, _percentile.MAX_WINDOW)
  _arguments.check_int(
    'min_history', min_history, 0, max_history, traceable=True
  )
  _groups.validate(group_by)

  def init_fn(params: optax.Params) -> AutoClipState:
    _, num_groups = _groups.assign(group_by, params)
    return _empty_state(max_history, None if group_by is None else num_groups)

  def update_fn(
    updates: optax.Updates,
    state: AutoClipState,
    params: optax.Params | None = None,
  ) -> tuple[optax.Updates, AutoClipState]:
    del params
    _arguments.check_scalar('percentile', percentile)
    _arguments.check_scalar('min_history', min_history)
    group_of_leaf, num_groups = _groups.assign(group_by, updates)
    _check_state_fits(
      state, None if group_by is None else num_groups, max_history
    )
    leaves, treedef = jax.tree.flatten(updates)
    grad_norms = _groups.group_norms(leaves, group_of_leaf, num_groups)
    # All groups' windows in one batch: one pass for them all.
    scale, state = _record_and_threshold(
      state,
      grad_norms if group_by is not None else grad_norms[0],
      percentile,
      min_history,
    )
    if group_by is None:
      scale_of_leaf = (scale,) * len(leaves)
    else:
      scale_of_leaf = _groups.leaf_scales(scale, group_of_leaf)
    clipped = [
      leaf if _groups.is_float0(leaf) else leaf * leaf_scale.astype(leaf.dtype)
      for leaf, leaf_scale in zip(leaves, scale_of_leaf)
    ]
    return jax.tree.unflatten(treedef, clipped), state

  return optax.GradientTransformation(init_fn, update_fn)
