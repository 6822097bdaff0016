"""Training curves as PNGs, and the JSON-lines logs they are drawn from."""

import json
import pathlib

from matplotlib import figure as mpl_figure
import numpy as np


def read_jsonl(path: str | pathlib.Path) -> dict[str, np.ndarray]:
  """Reads a log of one JSON object per line as one array per field."""
  records = [
    json.loads(line) for line in pathlib.Path(path).read_text().splitlines()
  ]
  return {key: np.array([r[key] for r in records]) for key in records[0]}


def moving_average(
  steps: np.ndarray, values: np.ndarray, num_windows: int
) -> tuple[np.ndarray, np.ndarray]:
  """Averages ``values`` over windows of about ``1 / num_windows`` of them.

  Args:
    steps: the step of each value.
    values: as many values, noisy from step to step.
    num_windows: how many windows the curve spans, about.

  Returns:
    ``(steps, averages)``: each average is placed at the last step of its
    window, so the curve starts a window late.
  """
  width = max(1, len(values) // num_windows)
  return steps[width - 1 :], np.convolve(
    values, np.ones(width) / width, mode='valid'
  )


def plot_runs(
  runs: dict[str, pathlib.Path], path: pathlib.Path, loss_title: str
) -> None:
  """Plots loss, step size, grad norm with threshold, and validation SI-SDRi.

  Args:
    runs: a label (e.g. ``'p=10'``) for each run's work directory, each
      holding ``log.jsonl`` and ``validation.jsonl``.
    path: the PNG to write.
    loss_title: the runs' loss, for the loss axis.
  """
  # A Figure of its own draws without pyplot, so without choosing a backend.
  figure = mpl_figure.Figure(figsize=(12, 8))
  axes = figure.subplots(2, 2)
  loss_axis, step_axis, norm_axis, valid_axis = axes.flat
  for index, (label, workdir) in enumerate(runs.items()):
    color = f'C{index}'
    log = read_jsonl(pathlib.Path(workdir) / 'log.jsonl')
    loss_axis.plot(
      *moving_average(log['step'], log['loss'], 50), color=color, label=label
    )
    step_axis.plot(
      *moving_average(log['step'], log['step_size'], 50),
      color=color,
      label=label,
    )
    norm_axis.plot(
      log['step'],
      log['grad_norm'],
      color=color,
      alpha=0.35,
      linewidth=0.6,
      label=f'{label} grad norm',
    )
    if np.isfinite(log['threshold']).any() and label != 'p=100':
      norm_axis.plot(
        log['step'],
        log['threshold'],
        color=color,
        linewidth=1.5,
        label=f'{label} threshold',
      )
    validation = read_jsonl(pathlib.Path(workdir) / 'validation.jsonl')
    valid_axis.plot(
      validation['step'], validation['si_sdri'], 'o-', color=color, label=label
    )
  loss_axis.set(
    title='training loss (moving average)',
    xlabel='step',
    ylabel=f'{loss_title} loss',
  )
  step_axis.set(
    title='step size ||θ_t − θ_{t−1}|| (moving average)',
    xlabel='step',
    yscale='log',
  )
  norm_axis.set(
    title='gradient norm and AutoClip threshold', xlabel='step', yscale='log'
  )
  valid_axis.set(title='validation SI-SDRi', xlabel='step', ylabel='dB')
  for axis in axes.flat:
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
