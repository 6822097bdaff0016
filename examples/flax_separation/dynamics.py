"""The paper's Figure 1: step size, loss and gradient smoothness in training.

Example (RESULTS.md's CPU run: the paper's Figure 1 network, 2 x 300, for
2 epochs of 500 steps of batch 4, recorded every 20 steps as in the paper):

  python -m examples.flax_separation.dynamics --workdir=workdir_dynamics \
      --config.hidden_size=300 --config.num_train=2000 \
      --config.batch_size=4 --config.excerpt_frames=400 --config.num_epochs=2

Trains one model per percentile with ``train.training_loop``, the loop of
``train.py``, and, every ``--record_every`` steps, records the loss, the step
size ``||theta_t - theta_{t-1}||``, the gradient norm, AutoClip's threshold
and the local smoothness (gradient Lipschitz constant) along the step,

  L = ||grad f(theta_t) - grad f(theta_{t-1})|| / ||theta_t - theta_{t-1}||,

with both gradients taken on that step's batch (Zhang et al., 2019;
Santurkar et al., 2018). Writes ``<workdir>/dynamics_p<percentile>.jsonl``
and ``<workdir>/figure1.png``: (a) step size and (b) loss over training, and
one log-log scatter of smoothness against gradient norm per percentile, with
the Pearson correlation of the logarithms and, for a run that clips, its
final AutoClip threshold. The command holds ``<workdir>/lock`` while it runs
(``workdirs.lock``).
"""

from collections.abc import Callable, Mapping
import functools
import json
import pathlib

from absl import app
from absl import flags
from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
from matplotlib import figure as mpl_figure
from matplotlib import ticker
import ml_collections
import numpy as np
import optax

from examples.flax_separation import cli
from examples.flax_separation import configs
from examples.flax_separation import input_pipeline
from examples.flax_separation import loss_registry
from examples.flax_separation import optimization
from examples.flax_separation import plots
from examples.flax_separation import train
from examples.flax_separation import workdirs

FLAGS = flags.FLAGS


def local_lipschitz(
  grad_fn: Callable[[optax.Params], optax.Updates],
  params_before: optax.Params,
  params_after: optax.Params,
) -> jax.Array:
  """Estimates the gradient's Lipschitz constant along one step.

  Args:
    grad_fn: the gradient of the loss, as a function of the parameters; for
      a stochastic loss, on one fixed batch.
    params_before: ``theta_{t-1}``.
    params_after: ``theta_t``, of the same structure.

  Returns:
    ``||grad_fn(theta_t) - grad_fn(theta_{t-1})|| / ||theta_t -
    theta_{t-1}||``. For ``f(theta) = theta^T A theta / 2`` it is
    ``||A d|| / ||d||`` with ``d = theta_t - theta_{t-1}``, at most the
    largest eigenvalue magnitude of ``A``.

  References:
    Zhang et al., `Why gradient clipping accelerates training: a theoretical
    justification for adaptivity <https://arxiv.org/abs/1905.11881>`_, 2019.
    Santurkar et al., `How does batch normalization help optimization?
    <https://arxiv.org/abs/1805.11604>`_, 2018.
  """
  gradient_change = optax.tree.norm(
    jax.tree.map(jnp.subtract, grad_fn(params_after), grad_fn(params_before))
  )
  step = optax.tree.norm(
    jax.tree.map(jnp.subtract, params_after, params_before)
  )
  return gradient_change / step


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _gradient(
  graphdef, params, rest, mixture, sources, loss_name, chimera_alpha
):
  """The gradient of ``train.batch_loss`` at ``params``, on one batch.

  The input normalisation uses the batch's statistics, as in training; the
  running statistics it updates belong to a copy, and are dropped.
  """
  return nnx.grad(
    lambda model: train.batch_loss(
      model, mixture, sources, loss_name, chimera_alpha
    )
  )(nnx.merge(graphdef, params, rest))


def train_and_record(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  record_every: int,
) -> pathlib.Path:
  """Trains with ``train.training_loop``, recording the dynamics.

  Nothing is checkpointed or evaluated: a run starts from scratch and
  overwrites its log.

  Args:
    config: hyperparameters, as in ``configs/default.py``.
    workdir: where the log is written (and espeak2mix, unless
      ``config.data_dir`` is set).
    record_every: record steps 1, 1 + record_every, 1 + 2 * record_every...

  Returns:
    ``<workdir>/dynamics_p<percentile>.jsonl``: per recorded step, ``step``,
    ``loss``, ``step_size``, ``grad_norm`` (at ``theta_{t-1}``, before
    clipping), ``threshold``, ``clipped``, ``clip_rate`` (as
    ``train.train_step`` returns them) and ``smoothness``.
  """
  configs.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  utterances = input_pipeline.load_splits(config, workdir)['train']
  model = train.create_model(config)
  optimizer = optimization.create_optimizer(
    model, config, input_pipeline.num_training_steps(len(utterances), config)
  )
  path = workdir / f'dynamics_p{config.autoclip_percentile:g}.jsonl'
  # theta_{t-1} of the next recorded step t, as (graphdef, params, rest). A
  # clone: a split of the model itself would hold the Variables that
  # train_step updates.
  before = nnx.split(nnx.clone(model), nnx.Param, ...)
  with workdirs.open_log(path, 'w') as log:
    for step in train.training_loop(model, optimizer, utterances, config):
      if (step.number - 1) % record_every == 0:
        graphdef, params_before, rest = before
        record = {key: float(value) for key, value in step.metrics.items()}
        record['smoothness'] = float(
          local_lipschitz(
            lambda params: _gradient(
              graphdef,
              params,
              rest,
              step.mixture,
              step.sources,
              config.loss,
              config.chimera_alpha,
            ),
            params_before,
            nnx.state(model, nnx.Param),
          )
        )
        log.write(json.dumps({'step': step.number, **record}) + '\n')
      if step.number % record_every == 0:
        before = nnx.split(nnx.clone(model), nnx.Param, ...)
  return path


def log_log_pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson r of ``log x`` and ``log y`` over the points where both are > 0."""
  keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
  return float(np.corrcoef(np.log(x[keep]), np.log(y[keep]))[0, 1])


def plot_figure1(
  runs: Mapping[float, pathlib.Path], path: str | pathlib.Path, loss_title: str
) -> None:
  """Draws the figure: step size, loss, and smoothness against grad norm.

  Args:
    runs: each percentile's ``dynamics_p*.jsonl``.
    path: the PNG to write.
    loss_title: the runs' loss, for the loss axis.
  """
  figure = mpl_figure.Figure(figsize=(4.3 * (2 + len(runs)), 3.9))
  axes = figure.subplots(1, 2 + len(runs))
  step_axis, loss_axis, *scatter_axes = axes
  for scatter_axis in scatter_axes[1:]:
    scatter_axis.sharex(scatter_axes[0])
    scatter_axis.sharey(scatter_axes[0])
  for index, ((percentile, log_path), scatter_axis) in enumerate(
    zip(runs.items(), scatter_axes)
  ):
    log = plots.read_jsonl(log_path)
    color = f'C{index}'
    label = f'p={percentile:g}' if percentile < 100 else 'no clipping'
    step_axis.plot(
      log['step'], log['step_size'], color=color, linewidth=0.8, label=label
    )
    # The loss of single batches is noisy: a moving average over ~1/20 of
    # the run, over the faint raw values.
    loss_axis.plot(
      log['step'], log['loss'], color=color, linewidth=0.5, alpha=0.3
    )
    loss_axis.plot(
      *plots.moving_average(log['step'], log['loss'], 20),
      color=color,
      label=f'{label} (moving average)',
    )
    r = log_log_pearson(log['grad_norm'], log['smoothness'])
    scatter_axis.scatter(
      log['grad_norm'],
      log['smoothness'],
      s=8,
      alpha=0.6,
      color=color,
      label=f'Pearson r = {r:.2f}',
    )
    if percentile < 100:
      scatter_axis.axvline(
        log['threshold'][-1],
        color='k',
        linestyle='--',
        linewidth=1,
        label=f'final threshold {log["threshold"][-1]:.3g}',
      )
    scatter_axis.set(
      xscale='log',
      yscale='log',
      xlabel='gradient norm',
      ylabel='smoothness (local Lipschitz)',
      title=f'({"cdefghij"[index]}) {label}: smoothness vs grad norm',
    )
    # Labels at 2e-3, 3e-3, ... of a short log axis run into each other.
    scatter_axis.xaxis.set_minor_formatter(ticker.NullFormatter())
  step_axis.set(
    title='(a) step size ||θ_t − θ_{t−1}||', xlabel='step', yscale='log'
  )
  loss_axis.set(
    title='(b) training loss', xlabel='step', ylabel=f'{loss_title} loss'
  )
  for axis in axes:
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=90)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  percentiles = cli.parse_percentiles(FLAGS.percentiles)
  workdir = pathlib.Path(FLAGS.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with cli.errors_as_messages(), workdirs.lock(workdir):
    runs = {}
    for percentile in percentiles:
      runs[percentile] = train_and_record(
        cli.run_config(FLAGS.config, workdir, percentile),
        workdir,
        FLAGS.record_every,
      )
    if not workdirs.writes_files():  # Process 0 reports for every process.
      return
    plot_figure1(
      runs, workdir / 'figure1.png', loss_registry.get(FLAGS.config.loss).title
    )
  for percentile, log_path in runs.items():
    log = plots.read_jsonl(log_path)
    print(
      f'p={percentile:g}: {len(log["step"])} records, final loss '
      f'{log["loss"][-1]:.4f}, Pearson r (log smoothness, log grad norm) '
      f'{log_log_pearson(log["grad_norm"], log["smoothness"]):.2f}, '
      f'final threshold {log["threshold"][-1]:.3g}'
    )
  print(f'figure: {workdir / "figure1.png"}')


if __name__ == '__main__':
  cli.define_common_flags(
    (10.0, 100.0), 'AutoClip percentiles to train with, one run each'
  )
  flags.DEFINE_integer(
    'record_every',
    20,
    'Record every this many steps (the paper: 20); a recorded step costs '
    'two more gradients.',
    lower_bound=1,
  )
  app.run(main)
