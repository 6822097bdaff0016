"""AutoClip and skip_spikes written plainly in NumPy, the tests' reference."""

import numpy as np


def _wide(leaf) -> np.ndarray:
  """``leaf`` in float64, or complex128 if it is complex."""
  leaf = np.asarray(leaf)
  return leaf.astype(np.result_type(leaf.dtype, np.float64))


def global_norm(updates) -> float:
  """Global L2 norm of a dict of (real or complex) arrays, in float64."""
  return float(
    np.sqrt(sum(np.sum(np.abs(_wide(leaf)) ** 2) for leaf in updates.values()))
  )


def autoclip_reference(
  update_sequence, percentiles, max_history, min_history=0
):
  """Runs AutoClip (paper Algorithm 1) over a sequence of updates.

  Args:
    update_sequence: list of dicts of arrays, one dict per step.
    percentiles: one percentile per step.
    max_history: how many recent finite norms the window keeps.
    min_history: no clipping until this many finite norms were recorded.

  Returns:
    Per step: (clipped updates, norm, threshold, window of recorded norms).
  """
  recorded = []
  num_recorded = 0
  steps = []
  for updates, percentile in zip(update_sequence, percentiles):
    norm = global_norm(updates)
    if np.isfinite(norm):
      recorded = (recorded + [norm])[-max_history:]
      num_recorded += 1
    warmed_up = recorded and num_recorded >= min_history
    threshold = np.percentile(recorded, percentile) if warmed_up else np.inf
    scale = threshold / norm if norm > threshold else 1.0
    with np.errstate(invalid='ignore'):  # inf * 0 on non-finite steps.
      clipped = {name: _wide(leaf) * scale for name, leaf in updates.items()}
    steps.append((clipped, norm, threshold, list(recorded)))
  return steps


def grouped_autoclip_reference(
  update_sequence, percentiles, max_history, label_of
):
  """Runs :func:`autoclip_reference` on each group of leaves on its own.

  Args:
    update_sequence: list of dicts of arrays, one dict per step.
    percentiles: one percentile per step.
    max_history: how many recent finite norms each group's window keeps.
    label_of: a function from a leaf's name to its group's label.

  Returns:
    Per step: (clipped updates, norms, thresholds, windows), the last three
    lists with one entry per group in sorted label order.
  """
  names = list(update_sequence[0])
  labels = sorted({label_of(name) for name in names})
  per_group = [
    autoclip_reference(
      [
        {name: updates[name] for name in names if label_of(name) == label}
        for updates in update_sequence
      ],
      percentiles,
      max_history,
    )
    for label in labels
  ]
  steps = []
  for group_steps in zip(*per_group):
    clipped_parts, norms, thresholds, windows = zip(*group_steps)
    clipped = {
      name: leaf for part in clipped_parts for name, leaf in part.items()
    }
    steps.append((clipped, list(norms), list(thresholds), list(windows)))
  return steps


def skip_spikes_reference(
  norms, factor, percentile, max_history, min_history, max_consecutive_skips
):
  """Per step: (skipped, spike threshold), the rule written plainly."""
  window, num_recorded, in_a_row, steps = [], 0, 0, []
  for norm in norms:
    if num_recorded >= min_history and window:
      spike_threshold = factor * np.percentile(window, percentile)
    else:
      spike_threshold = np.inf
    finite = np.isfinite(norm)
    spike = finite and norm > spike_threshold
    skipped = not finite or (spike and in_a_row < max_consecutive_skips)
    if spike:
      in_a_row += 1
    elif finite:
      in_a_row = 0
    if not skipped:
      window = (window + [norm])[-max_history:]
      num_recorded += 1
    steps.append((skipped, spike_threshold))
  return steps


def ranks_of(ring) -> np.ndarray:
  """The rank of each slot of ``ring`` in ascending (value, slot) order."""
  # A stable sort keeps tied values in slot order.
  order = np.argsort(np.asarray(ring, np.float64), kind='stable')
  ranks = np.empty(len(ring), np.int64)
  ranks[order] = np.arange(len(ring))
  return ranks


def assert_ranks_match(history, ranks, newest_rank, next_slot):
  """Asserts that a window's ranks are those of its ring, newest held apart."""
  history, ranks = np.asarray(history), np.array(ranks)
  newest = (int(next_slot) - 1) % len(history)
  assert ranks[newest] == -1
  ranks[newest] = newest_rank
  np.testing.assert_array_equal(ranks, ranks_of(history))
