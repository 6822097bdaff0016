"""Training curves of one or more runs, as a PNG."""

import json
import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np


def _read_jsonl(path: pathlib.Path) -> dict[str, np.ndarray]:
  records = [json.loads(line) for line in path.read_text().splitlines()]
  return {key: np.array([r[key] for r in records]) for key in records[0]}


def _smooth(values, width):
  width = max(1, min(width, len(values)))
  return np.convolve(values, np.ones(width) / width, mode='valid')


def plot_runs(runs: dict[str, pathlib.Path], path: pathlib.Path) -> None:
  """Plots loss, step size, grad norm with threshold, and validation SI-SDRi.

  Args:
    runs: a label (e.g. ``'p=10'``) for each run's work directory, each
      holding ``log.jsonl`` and ``validation.jsonl``.
    path: the PNG to write.
  """
  figure, axes = plt.subplots(2, 2, figsize=(12, 8))
  loss_axis, step_axis, norm_axis, valid_axis = axes.flat
  for color, (label, workdir) in zip(('C0', 'C1', 'C2', 'C3'), runs.items()):
    log = _read_jsonl(pathlib.Path(workdir) / 'log.jsonl')
    width = max(1, len(log['step']) // 50)
    smoothed_steps = log['step'][width - 1:]
    loss_axis.plot(smoothed_steps, _smooth(log['loss'], width), color=color,
                   label=label)
    step_axis.plot(smoothed_steps, _smooth(log['step_size'], width),
                   color=color, label=label)
    norm_axis.plot(log['step'], log['grad_norm'], color=color, alpha=0.35,
                   linewidth=0.6, label=f'{label} grad norm')
    if np.isfinite(log['threshold']).any() and label != 'p=100':
      norm_axis.plot(log['step'], log['threshold'], color=color,
                     linewidth=1.5, label=f'{label} threshold')
    validation = _read_jsonl(pathlib.Path(workdir) / 'validation.jsonl')
    valid_axis.plot(validation['step'], validation['si_sdri'], 'o-',
                    color=color, label=label)
  loss_axis.set(title='training loss (moving average)', xlabel='step',
                ylabel='PSA L1 loss')
  step_axis.set(title='step size ||θ_t − θ_{t−1}|| (moving average)',
                xlabel='step', yscale='log')
  norm_axis.set(title='gradient norm and AutoClip threshold', xlabel='step',
                yscale='log')
  valid_axis.set(title='validation SI-SDRi', xlabel='step', ylabel='dB')
  for axis in axes.flat:
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
