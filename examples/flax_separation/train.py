"""Trains and evaluates a BLSTM separation network with AutoClip.

``config.loss`` picks one of the AutoClip paper's five losses
(``loss_registry.LOSSES``), which says which heads the network has, what
``train_step`` descends, and how ``separate`` turns the network's output into
masks.

``train_and_evaluate(config, workdir)`` writes everything under ``workdir``:
``checkpoints/`` (the latest state, every ``checkpoint_every_steps``),
``best/`` (the model with the best validation SI-SDRi), ``log.jsonl`` (one
line per training step), ``validation.jsonl``, ``results.json`` (test
SI-SDR and SI-SDRi) and ``separated/`` (a few separated test mixtures).
An interrupted run started again with the same config resumes from its last
checkpoint with the same data order and identical next steps.

``train_steps`` is the training loop itself, for anything else that trains
as a run does (``dynamics.py``).
"""

import functools
import json
import pathlib
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import soundfile
import tqdm

from autoclip_optax import autoclip
from examples.flax_separation import input_pipeline
from examples.flax_separation import loss_registry
from examples.flax_separation import metrics
from examples.flax_separation import models
from examples.flax_separation import spectral

# Validation and test mixtures are zero-padded to a multiple of this many
# samples, so that evaluation compiles once or twice, not per length.
EVAL_LENGTH_QUANTUM = 8 * spectral.SAMPLE_RATE
# Steps with a non-finite update skipped in a row before training gives up.
MAX_CONSECUTIVE_NONFINITE_STEPS = 5
# The progress bar shows the loss every this many steps; reading it waits for
# the step to finish.
_PROGRESS_LOSS_EVERY = 25


def create_model(config: ml_collections.ConfigDict) -> models.BLSTMNet:
  """The network ``config.loss`` trains, with the heads that loss needs."""
  return models.BLSTMNet(heads=loss_registry.get(config.loss).heads,
                         hidden_size=config.hidden_size,
                         num_layers=config.num_layers,
                         embedding_dim=config.embedding_dim,
                         rngs=nnx.Rngs(config.seed))


def create_optimizer(model: nnx.Module,
                     config: ml_collections.ConfigDict) -> nnx.Optimizer:
  """Adam behind AutoClip, skipping steps whose update is not finite.

  Percentile 100 never clips (the paper's baseline). AutoClip never records
  a non-finite gradient norm, but passes the non-finite update on;
  ``optax.apply_if_finite`` drops such a step whole (AutoClip's and Adam's
  state included), and gives up after ``MAX_CONSECUTIVE_NONFINITE_STEPS``
  in a row.
  """
  tx = optax.apply_if_finite(
      optax.chain(
          autoclip(config.autoclip_percentile, config.autoclip_max_history),
          optax.adam(config.learning_rate)),
      max_consecutive_errors=MAX_CONSECUTIVE_NONFINITE_STEPS)
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _estimate(model, mixture):
  spectrogram = spectral.stft(mixture)
  return spectrogram, model(spectral.log_magnitude(spectrogram))


def batch_loss(model: nnx.Module, mixture: jax.Array, sources: jax.Array,
               loss_name: str = 'mi', chimera_alpha: float = 0.75
               ) -> jax.Array:
  """The training loss of a batch, as ``config.loss`` names it.

  Args:
    model: a network from ``create_model`` for the same loss.
    mixture: ``[batch, samples]``.
    sources: ``[batch, 2, samples]``.
    loss_name: a key of ``loss_registry.LOSSES``.
    chimera_alpha: weight of ``L_MI`` in the Chimera loss.

  Returns:
    A scalar loss.
  """
  loss = loss_registry.get(loss_name)
  mixture_spectrogram, estimates = _estimate(model, mixture)
  targets = loss_registry.Targets(mixture_spectrogram, spectral.stft(sources),
                                  sources)
  return loss.loss_fn(estimates, targets, chimera_alpha)


@functools.partial(nnx.jit, static_argnames=('loss_name', 'chimera_alpha'))
def train_step(model: nnx.Module, optimizer: nnx.Optimizer,
               mixture: jax.Array, sources: jax.Array, loss_name: str = 'mi',
               chimera_alpha: float = 0.75) -> dict[str, jax.Array]:
  """One Adam step on the loss ``loss_name`` (see ``batch_loss``).

  Args:
    model: the network, updated in place.
    optimizer: its optimizer, updated in place.
    mixture: ``[batch, samples]``.
    sources: ``[batch, 2, samples]``.
    loss_name: a key of ``loss_registry.LOSSES``, matching the model.
    chimera_alpha: weight of ``L_MI`` in the Chimera loss.

  Returns:
    The loss, the gradient norm and AutoClip's threshold at this step, and
    the step size ``||theta_t - theta_{t-1}||``. A step skipped for a
    non-finite update has step size 0, and AutoClip's fields of the last
    step that was not skipped.
  """
  params_before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  loss, grads = nnx.value_and_grad(
      lambda model: batch_loss(model, mixture, sources, loss_name,
                               chimera_alpha))(model)
  optimizer.update(model, grads)
  params_after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  clip_state = optax.tree_utils.tree_get(optimizer.opt_state, 'AutoClipState')
  return {
      'loss': loss,
      'grad_norm': clip_state.grad_norm[...],
      'threshold': clip_state.threshold[...],
      'step_size': optax.tree.norm(
          jax.tree.map(jnp.subtract, params_after, params_before)),
  }


@functools.partial(nnx.jit, static_argnames='loss_name')
def separate(model: nnx.Module, mixture: jax.Array,
             loss_name: str = 'mi') -> jax.Array:
  """Separates with the loss's masks, resynthesised with the mixture phase.

  Args:
    model: a network from ``create_model`` for the same loss.
    mixture: ``[batch, samples]``.
    loss_name: the loss the model was trained with; its ``masks_fn`` turns
      the network's output into masks.

  Returns:
    ``[batch, 2, samples]``.
  """
  mixture_spectrogram, estimates = _estimate(model, mixture)
  masks = loss_registry.get(loss_name).masks_fn(estimates, mixture_spectrogram)
  return spectral.apply_masks(masks, mixture_spectrogram, mixture.shape[-1])


def evaluate(model, utterances, batch_size, loss_name='mi'):
  """Separates every utterance; returns per-source SI-SDR and SI-SDRi (dB).

  Args:
    model: the network.
    utterances: ``input_pipeline.Utterance`` list.
    batch_size: mixtures separated at once.
    loss_name: the loss the model was trained with (see ``separate``).

  Returns:
    ``(si_sdr, si_sdri, estimates)``: two ``[utterances, 2]`` arrays and the
    list of separated ``[2, samples]`` signals.
  """
  longest = max(len(u.mixture) for u in utterances)
  padded_length = -(-longest // EVAL_LENGTH_QUANTUM) * EVAL_LENGTH_QUANTUM
  si_sdr, si_sdri, estimates = [], [], []
  for first in range(0, len(utterances), batch_size):
    chunk = utterances[first:first + batch_size]
    batch = np.zeros((batch_size, padded_length), np.float32)
    for row, utterance in enumerate(chunk):
      batch[row, :len(utterance.mixture)] = utterance.mixture
    separated = np.asarray(separate(model, jnp.asarray(batch), loss_name))
    for row, utterance in enumerate(chunk):
      estimate = separated[row, :, :len(utterance.mixture)]
      estimates.append(estimate)
      si_sdr.append(metrics.permutation_resolved_si_sdr(
          estimate, utterance.sources))
      si_sdri.append(metrics.si_sdr_improvement(
          estimate, utterance.sources, utterance.mixture))
  return np.array(si_sdr), np.array(si_sdri), estimates


class Step(NamedTuple):
  """One training step, as ``train_steps`` yields it.

  Attributes:
    number: steps taken so far, this one included.
    mixture: the step's batch, ``[batch, samples]``.
    sources: ``[batch, 2, samples]``.
    metrics: what ``train_step`` returned, on the device.
  """
  number: int
  mixture: jax.Array
  sources: jax.Array
  metrics: dict[str, jax.Array]


def train_steps(model: nnx.Module, optimizer: nnx.Optimizer,
                utterances: Sequence[input_pipeline.Utterance],
                config: ml_collections.ConfigDict,
                start_step: int = 0) -> Iterator[Step]:
  """Trains from ``start_step`` to the run's end, yielding after each step.

  The batches are ``input_pipeline.training_stream``'s, so the run's data
  order does not depend on where it starts. Metrics stay on the device: a
  caller that reads them every step waits for every step.

  Args:
    model: the network, updated in place.
    optimizer: its optimizer, updated in place.
    utterances: the training split.
    config: the run's config.
    start_step: steps already taken (a resumed run's checkpoint).

  Returns:
    An iterator of ``Step``s, with a progress bar.
  """
  total_steps = input_pipeline.num_training_steps(len(utterances), config)
  with tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                 desc=f'{config.loss} p={config.autoclip_percentile:g}') as bar:
    for number, (mixture, sources) in enumerate(
        input_pipeline.training_stream(utterances, config, start_step),
        start=start_step + 1):
      mixture, sources = jnp.asarray(mixture), jnp.asarray(sources)
      step_metrics = train_step(model, optimizer, mixture, sources,
                                config.loss, config.chimera_alpha)
      yield Step(number, mixture, sources, step_metrics)
      bar.update()
      if number % _PROGRESS_LOSS_EVERY == 0:
        bar.set_postfix(loss=f'{float(step_metrics["loss"]):.4f}')


class _Checkpoints:
  """The latest training state and the best model, with orbax."""

  def __init__(self, workdir):
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    self.latest = ocp.CheckpointManager(
        pathlib.Path(workdir).absolute() / 'checkpoints', options=options)
    self.best = ocp.CheckpointManager(
        pathlib.Path(workdir).absolute() / 'best', options=options)

  def save(self, step, model, optimizer, progress):
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(nnx.to_pure_dict(
            nnx.state((model, optimizer)))),
        progress=ocp.args.JsonSave(progress)))

  def restore(self, model, optimizer):
    """Loads the latest state into model and optimizer; returns progress."""
    step = self.latest.latest_step()
    if step is None:
      return None
    state = nnx.state((model, optimizer))
    restored = self.latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(nnx.to_pure_dict(state)),
        progress=ocp.args.JsonRestore()))
    nnx.replace_by_pure_dict(state, restored.state)
    nnx.update((model, optimizer), state)
    return restored.progress

  def save_best(self, step, model):
    self.best.save(step, args=ocp.args.StandardSave(
        nnx.to_pure_dict(nnx.state(model))), force=True)

  def restore_best(self, model):
    state = nnx.state(model)
    restored = self.best.restore(
        self.best.latest_step(),
        args=ocp.args.StandardRestore(nnx.to_pure_dict(state)))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)

  def close(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()


def _keep_log_lines_up_to(path, last_step):
  """Drops log lines past the restored step, so a resumed log has no repeats."""
  if not path.exists():
    return
  lines = [line for line in path.read_text().splitlines()
           if json.loads(line)['step'] <= last_step]
  path.write_text(''.join(line + '\n' for line in lines))


def finished_results(directory: pathlib.Path,
                     config: ml_collections.ConfigDict) -> dict | None:
  """Returns a run's ``results.json`` if it was written with ``config``.

  A finished run need not be trained or evaluated again. Where its data lies
  does not change its results, so a moved work directory still counts.
  """
  path = pathlib.Path(directory) / 'results.json'
  if not path.exists():
    return None
  try:
    results = json.loads(path.read_text())
  except json.JSONDecodeError:  # Cut short while being written.
    return None
  # Compared through JSON, as written (tuples become lists).
  recorded = dict(results.get('config', {}), data_dir=None)
  expected = dict(json.loads(json.dumps(config.to_dict())), data_dir=None)
  return results if recorded == expected else None


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains, keeps the best model on validation, and evaluates it on test.

  Args:
    config: hyperparameters, as in ``configs/default.py``.
    workdir: where everything is written; an existing run there resumes.

  Returns:
    The results written to ``<workdir>/results.json``.
  """
  loss_registry.get(config.loss)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  splits = input_pipeline.load_splits(config, workdir)
  model = create_model(config)
  optimizer = create_optimizer(model, config)
  checkpoints = _Checkpoints(workdir)
  progress = checkpoints.restore(model, optimizer) or {
      'best_valid_si_sdri': -np.inf, 'train_seconds': 0.0}
  start_step = int(optimizer.step[...])
  log_path = workdir / 'log.jsonl'
  validation_path = workdir / 'validation.jsonl'
  _keep_log_lines_up_to(log_path, start_step)
  _keep_log_lines_up_to(validation_path, start_step)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(splits['train']),
                                                   config.batch_size)

  def validate_and_save(step):
    _, si_sdri, _ = evaluate(model, splits['valid'], config.eval_batch_size,
                             config.loss)
    valid_si_sdri = float(si_sdri.mean())
    with validation_path.open('a') as log:
      log.write(json.dumps({'step': step, 'si_sdri': valid_si_sdri}) + '\n')
    if valid_si_sdri > progress['best_valid_si_sdri']:
      progress['best_valid_si_sdri'] = valid_si_sdri
      checkpoints.save_best(step, model)
    checkpoints.save(step, model, optimizer, progress)

  step = start_step
  unwritten = []  # (step, metrics) since the last checkpoint, on the device.
  started = time.perf_counter() - progress['train_seconds']
  with log_path.open('a') as log:
    for step, _, _, step_metrics in train_steps(
        model, optimizer, splits['train'], config, start_step):
      unwritten.append((step, step_metrics))
      if step % config.checkpoint_every_steps == 0 or (
          step % steps_per_epoch == 0):
        for number, record in jax.device_get(unwritten):
          log.write(json.dumps(
              {'step': number, **{k: float(v) for k, v in record.items()}})
                    + '\n')
        log.flush()
        unwritten = []
        progress['train_seconds'] = time.perf_counter() - started
        validate_and_save(step)

  checkpoints.close()
  checkpoints.restore_best(model)
  si_sdr, si_sdri, estimates = evaluate(model, splits['test'],
                                        config.eval_batch_size, config.loss)
  _write_examples(workdir / 'separated', splits['test'], estimates,
                  config.num_example_wavs)
  results = {
      'loss': config.loss,
      'autoclip_percentile': config.autoclip_percentile,
      'steps': step,
      'train_seconds': round(progress['train_seconds'], 1),
      'best_valid_si_sdri': progress['best_valid_si_sdri'],
      'test_si_sdr': float(si_sdr.mean()),
      'test_si_sdri': float(si_sdri.mean()),
      'num_test_mixtures': len(splits['test']),
      'config': config.to_dict(),
  }
  (workdir / 'results.json').write_text(json.dumps(results, indent=2) + '\n')
  return results


def _write_examples(directory, utterances, estimates, count):
  directory.mkdir(exist_ok=True)
  for utterance, estimate in list(zip(utterances, estimates))[:count]:
    soundfile.write(directory / f'{utterance.name}_mix.wav',
                    utterance.mixture, spectral.SAMPLE_RATE)
    for index, signal in enumerate(estimate, start=1):
      peak = max(1.0, float(np.abs(signal).max()))
      soundfile.write(directory / f'{utterance.name}_estimate{index}.wav',
                      signal / peak, spectral.SAMPLE_RATE)
