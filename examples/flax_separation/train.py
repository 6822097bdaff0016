"""Trains and evaluates a BLSTM separation network with AutoClip.

``config.loss`` picks one of the AutoClip paper's five losses
(``loss_registry.LOSSES``), which says which heads the network has, what
``train_step`` descends, and how ``separate`` turns the network's output into
masks.

``train_and_evaluate(config, workdir)`` writes everything under ``workdir``:
``checkpoints/`` (the latest state, every ``checkpoint_every_steps``),
``best/`` (the model with the best validation SI-SDRi), ``log.jsonl`` (one
line per training step), ``validation.jsonl``, ``results.json`` (test
SI-SDR and SI-SDRi), ``separated/`` (a few separated test mixtures) and
``lock`` (``workdirs.lock``: one run at a time).
An interrupted run started again with the same config resumes from its last
whole checkpoint (``checkpointing``), killed at whatever moment, with the
same data order and identical next steps.

Training is data parallel over every device (``data_parallel_mesh``): each
batch is split on the mesh's ``data`` axis, and the parameters and optimizer
state, AutoClip's window included, are replicated. The loop never waits for
a step: metrics stay on the device and are fetched every
``config.log_every_steps`` (and before each checkpoint).

``train_steps`` is the training loop itself, for anything else that trains
as a run does (``dynamics.py``); ``train_runs`` trains several runs at once.
"""

import functools
import json
import os
import pathlib
import queue
import threading
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import soundfile
import tqdm
from jax.experimental import multihost_utils
from jax.sharding import AxisType
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from autoclip_optax import autoclip
from examples.flax_separation import averaging
from examples.flax_separation import checkpointing
from examples.flax_separation import input_pipeline
from examples.flax_separation import loss_registry
from examples.flax_separation import metrics
from examples.flax_separation import models
from examples.flax_separation import spectral
from examples.flax_separation import workdirs

# Validation and test mixtures are zero-padded to a multiple of this many
# samples, so that evaluation compiles once or twice, not per length.
EVAL_LENGTH_QUANTUM = 8 * spectral.SAMPLE_RATE
# Steps with a non-finite update skipped in a row before training gives up.
MAX_CONSECUTIVE_NONFINITE_STEPS = 5
# Settings that do not change a run's results: a finished run recorded with
# other values of them need not be run again.
_RESULT_NEUTRAL_SETTINGS = ('data_dir', 'log_every_steps')
# Rows of a batch: split over the devices of the mesh's 'data' axis.
_BATCH = PartitionSpec('data')
# Steps the loop dispatches ahead of the device at most. It waits for the
# step this many before the latest, never for the latest, so the device
# always has a step queued, and the batches and buffers of the queued steps
# do not pile up in memory between two fetches of the metrics.
_STEPS_AHEAD = 2


def data_parallel_mesh(devices: Sequence[jax.Device] | None = None
                       ) -> jax.sharding.Mesh:
  """A one-axis mesh, ``data``, over ``devices`` (every device by default).

  On several hosts, ``jax.devices()`` lists every host's devices: one mesh
  spans them all, and each process feeds its own devices' rows.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), ('data',),
                       axis_types=(AxisType.Auto,), devices=devices)


def check_batch_divides(name: str, batch_size: int,
                        mesh: jax.sharding.Mesh) -> None:
  """Raises ``ValueError`` unless ``batch_size`` splits evenly over ``mesh``."""
  if batch_size % mesh.size:
    raise ValueError(
        f'config.{name} ({batch_size}) must divide by the number of devices '
        f'({mesh.size}): each device takes an equal share of every batch')


def replicate(mesh: jax.sharding.Mesh, *modules: nnx.Module) -> None:
  """Puts a copy of the modules' state on every device of ``mesh``.

  For a model and its optimizer: the parameters and the optimizer state,
  AutoClip's window included, the same on every device.
  """
  state = nnx.state(modules)
  nnx.update(modules, jax.device_put(state, NamedSharding(mesh,
                                                          PartitionSpec())))


def shard_batch(mesh: jax.sharding.Mesh, local_rows):
  """The global batch whose rows on this process's devices are ``local_rows``.

  Args:
    mesh: a ``data_parallel_mesh``.
    local_rows: a pytree of NumPy arrays, this process's rows of the batch
      (the whole batch on one host).

  Returns:
    The same pytree of ``jax.Array``s, split over ``mesh``'s ``data`` axis.
  """
  sharding = NamedSharding(mesh, _BATCH)
  return jax.tree.map(
      lambda rows: jax.make_array_from_process_local_data(sharding, rows),
      local_rows)


def create_model(config: ml_collections.ConfigDict) -> models.BLSTMNet:
  """The network ``config.loss`` trains, with the heads that loss needs."""
  return models.BLSTMNet(heads=loss_registry.get(config.loss).heads,
                         hidden_size=config.hidden_size,
                         num_layers=config.num_layers,
                         embedding_dim=config.embedding_dim,
                         normalize_input=config.normalize_input,
                         rngs=nnx.Rngs(config.seed))


def create_optimizer(model: nnx.Module, config: ml_collections.ConfigDict,
                     num_steps: int) -> nnx.Optimizer:
  """Adam behind AutoClip, skipping steps whose update is not finite.

  Percentile 100 never clips (the paper's baseline). AutoClip never records
  a non-finite gradient norm, but passes the non-finite update on;
  ``optax.apply_if_finite`` drops such a step whole (AutoClip's, Adam's and
  the parameter average's state included), and gives up after
  ``MAX_CONSECUTIVE_NONFINITE_STEPS`` in a row. The chain ends with
  ``averaging.param_average(config.param_average_decay)``, the network a run
  evaluates (``averaging.averaged_model``); decay 0 keeps no average.

  Args:
    model: the network whose ``nnx.Param``s it updates.
    config: the run's config.
    num_steps: the run's training steps, over which ``learning_rate``
      schedules the rate.

  Returns:
    The optimizer.
  """
  tx = optax.apply_if_finite(
      optax.chain(
          autoclip(config.autoclip_percentile, config.autoclip_max_history,
                   min_history=config.autoclip_min_history),
          optax.adam(learning_rate(config, num_steps)),
          averaging.param_average(config.param_average_decay)),
      max_consecutive_errors=MAX_CONSECUTIVE_NONFINITE_STEPS)
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def learning_rate(config: ml_collections.ConfigDict,
                  num_steps: int) -> optax.ScalarOrSchedule:
  """Adam's learning rate: constant, then a half cosine to 0.

  Args:
    config: ``learning_rate``, and ``learning_rate_decay_start``, the share
      of the ``num_steps`` after which the rate decays (1.0: constant, as
      the paper trains).
    num_steps: the run's training steps.

  Returns:
    ``config.learning_rate``, or an optax schedule.

  Raises:
    ValueError: unless ``config.learning_rate_decay_start`` is in [0, 1].
  """
  decay_start = config.learning_rate_decay_start
  if not 0 <= decay_start <= 1:
    raise ValueError('config.learning_rate_decay_start must be in [0, 1], '
                     f'got {decay_start}')
  boundary = round(decay_start * num_steps)
  if boundary >= num_steps:
    return config.learning_rate
  return optax.join_schedules(
      [optax.constant_schedule(config.learning_rate),
       optax.cosine_decay_schedule(config.learning_rate,
                                   num_steps - boundary)], [boundary])


def _estimate(model, mixture, use_running_average):
  spectrogram = spectral.stft(mixture)
  return spectrogram, model(spectral.log_magnitude(spectrogram),
                            use_running_average=use_running_average)


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
  mixture_spectrogram, estimates = _estimate(model, mixture,
                                             use_running_average=False)
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
    The loss, the gradient norm and AutoClip's threshold at this step, the
    step size ``||theta_t - theta_{t-1}||``, ``clipped`` (1.0 if AutoClip
    scaled this step's gradient down, else 0.0) and ``clip_rate`` (the
    fraction of the steps recorded so far that were clipped). A step skipped
    for a non-finite update has step size 0, and AutoClip's fields of the
    last step that was not skipped.
  """
  params_before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  batch_stats_before = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
  num_clipped_before = optax.tree_utils.tree_get(
      optimizer.opt_state, 'AutoClipState').num_clipped[...]
  loss, grads = nnx.value_and_grad(
      lambda model: batch_loss(model, mixture, sources, loss_name,
                               chimera_alpha))(model)
  optimizer.update(model, grads)
  # A step skipped for a non-finite update keeps the input normalisation's
  # running statistics too, which the batch would otherwise have poisoned.
  finite = optimizer.opt_state.last_finite[...]
  batch_stats = nnx.state(model, nnx.BatchStat)
  nnx.replace_by_pure_dict(batch_stats, jax.tree.map(
      lambda after, before: jnp.where(finite, after, before),
      nnx.to_pure_dict(batch_stats), batch_stats_before))
  nnx.update(model, batch_stats)
  params_after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  clip_state = optax.tree_utils.tree_get(optimizer.opt_state, 'AutoClipState')
  num_clipped = clip_state.num_clipped[...]
  return {
      'loss': loss,
      'grad_norm': clip_state.grad_norm[...],
      'threshold': clip_state.threshold[...],
      'step_size': optax.tree.norm(
          jax.tree.map(jnp.subtract, params_after, params_before)),
      'clipped': (num_clipped - num_clipped_before).astype(jnp.float32),
      'clip_rate': num_clipped / jnp.maximum(clip_state.count[...], 1),
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
  mixture_spectrogram, estimates = _estimate(model, mixture,
                                             use_running_average=True)
  masks = loss_registry.get(loss_name).masks_fn(estimates, mixture_spectrogram)
  return spectral.apply_masks(masks, mixture_spectrogram, mixture.shape[-1])


def evaluate(model: nnx.Module, split: input_pipeline.Split, batch_size: int,
             loss_name: str = 'mi', mesh: jax.sharding.Mesh | None = None,
             wav_dir: pathlib.Path | None = None, num_wavs: int = 0
             ) -> tuple[np.ndarray, np.ndarray]:
  """Separates every mixture of a split; returns SI-SDR and SI-SDRi (dB).

  The mixtures are read a few batches ahead and scored as they are
  separated; no separated signal is kept, so memory does not grow with the
  split. Every batch is padded to one length, so this compiles once.

  Args:
    model: the network.
    split: ``input_pipeline.Split``.
    batch_size: mixtures separated at once, over all devices.
    loss_name: the loss the model was trained with (see ``separate``).
    mesh: a ``data_parallel_mesh`` (every device by default).
    wav_dir: where the first ``num_wavs`` mixtures and their separated
      signals are written as WAVs.
    num_wavs: how many mixtures to write.

  Returns:
    ``(si_sdr, si_sdri)``, two ``[len(split), 2]`` arrays, each source's
    score in the permutation that maximises SI-SDR.
  """
  mesh = mesh or data_parallel_mesh()
  longest = int(split.lengths.max())
  padded_length = -(-longest // EVAL_LENGTH_QUANTUM) * EVAL_LENGTH_QUANTUM
  rows = batch_size // jax.process_count()
  # [batch, row, (SI-SDR, SI-SDRi), source] of this process's rows; NaN for
  # the padding rows of the last batch.
  scores = np.full((-(-len(split) // batch_size), rows, 2, 2), np.nan)
  for number, batch in enumerate(input_pipeline.evaluation_batches(
      split, batch_size, padded_length, process_index=jax.process_index(),
      process_count=jax.process_count())):
    separated = np.asarray(multihost_utils.global_array_to_host_local_array(
        separate(model, shard_batch(mesh, batch.mixture), loss_name), mesh,
        _BATCH))
    for row, utterance in enumerate(batch.utterances):
      estimate = separated[row, :, :len(utterance.mixture)]
      scores[number, row] = (
          metrics.permutation_resolved_si_sdr(estimate, utterance.sources),
          metrics.si_sdr_improvement(estimate, utterance.sources,
                                     utterance.mixture))
      if batch.first + row < num_wavs:
        _write_example(wav_dir, utterance, estimate)
  # [process, batch, row, ...] -> in split order, the padding rows dropped.
  every_process = np.asarray(multihost_utils.process_allgather(scores))
  in_order = np.swapaxes(every_process.reshape((-1,) + scores.shape), 0, 1)
  in_order = in_order.reshape(-1, 2, 2)[:len(split)]
  return in_order[:, 0], in_order[:, 1]


class Step(NamedTuple):
  """One training step, as ``train_steps`` yields it.

  Attributes:
    number: steps taken so far, this one included.
    mixture: the step's batch, ``[batch, samples]``.
    sources: ``[batch, 2, samples]``.
    metrics: what ``train_step`` returned, on the device.
    fetched: at a step that fetched metrics from the device, the records of
      every step since the last fetch, this one included: ``{'step': ...,
      **metrics}`` with floats; empty at other steps.
  """
  number: int
  mixture: jax.Array
  sources: jax.Array
  metrics: dict[str, jax.Array]
  fetched: list[dict[str, float]]


def checkpoint_due(number: int, config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> bool:
  """Whether a run checkpoints after step ``number``.

  It does every ``config.checkpoint_every_steps`` and at the end of every
  epoch.
  """
  return (number % config.checkpoint_every_steps == 0
          or number % steps_per_epoch == 0)


def train_steps(model: nnx.Module, optimizer: nnx.Optimizer,
                split: input_pipeline.Split,
                config: ml_collections.ConfigDict,
                start_step: int = 0) -> Iterator[Step]:
  """Trains from ``start_step`` to the run's end, yielding after each step.

  The batches are ``input_pipeline.training_stream``'s, so the run's data
  order does not depend on where it starts; each process reads its own rows.
  The model and optimizer are replicated over a ``data_parallel_mesh`` and
  each batch is split over it. Nothing waits for a step to finish except
  the fetch of the metrics, every ``config.log_every_steps`` and at every
  ``checkpoint_due`` step, which also updates the progress bar (loss and
  the share of the fetched steps that AutoClip clipped); and the loop runs at
  most ``_STEPS_AHEAD`` steps ahead of the device.

  Args:
    model: the network, updated in place.
    optimizer: its optimizer, updated in place.
    split: the training split.
    config: the run's config.
    start_step: steps already taken (a resumed run's checkpoint).

  Returns:
    An iterator of ``Step``s, with a progress bar.

  Raises:
    ValueError: if ``config.batch_size`` does not divide by the number of
      devices.
  """
  mesh = data_parallel_mesh()
  check_batch_divides('batch_size', config.batch_size, mesh)
  replicate(mesh, model, optimizer)
  per_epoch = input_pipeline.steps_per_epoch(len(split), config.batch_size)
  batches = input_pipeline.training_stream(
      split, config, start_step, process_index=jax.process_index(),
      process_count=jax.process_count())
  unfetched = []  # (step, metrics on the device) since the last fetch.
  with tqdm.tqdm(total=per_epoch * config.num_epochs, initial=start_step,
                 unit='step',
                 desc=(f'{config.loss} p={config.autoclip_percentile:g} '
                       f'seed {config.seed}')) as bar:
    for number, local_rows in enumerate(batches, start=start_step + 1):
      mixture, sources = shard_batch(mesh, local_rows)
      step_metrics = train_step(model, optimizer, mixture, sources,
                                config.loss, config.chimera_alpha)
      unfetched.append((number, step_metrics))
      if len(unfetched) > _STEPS_AHEAD:
        jax.block_until_ready(unfetched[-1 - _STEPS_AHEAD][1])
      fetched = []
      if (number % config.log_every_steps == 0
          or checkpoint_due(number, config, per_epoch)):
        fetched = [{'step': step, **{key: float(value)
                                     for key, value in record.items()}}
                   for step, record in jax.device_get(unfetched)]
        unfetched = []
        bar.set_postfix(
            loss=f'{fetched[-1]["loss"]:.4f}',
            clipped=f'{np.mean([r["clipped"] for r in fetched]):.0%}')
      bar.update()
      yield Step(number, mixture, sources, step_metrics, fetched)


def _writes_files() -> bool:
  """Whether this process writes the logs and results.

  On several hosts every process computes the same records; the first
  writes them (Orbax coordinates the checkpoints itself).
  """
  return jax.process_index() == 0


def _open_log(path):
  """``path`` opened for appending, or a sink unless ``_writes_files()``."""
  return path.open('a') if _writes_files() else open(os.devnull, 'w')


def _keep_log_lines_up_to(path, last_step):
  """Drops log lines past the restored step, so a resumed log has no repeats.

  A last line that is not JSON was cut short by a kill while it was written
  (its step is past every checkpoint): it goes too. The log is rewritten
  whole, so a kill here loses nothing.

  Raises:
    ValueError: if a line before the last is not JSON.
  """
  if not _writes_files() or not path.exists():
    return
  lines = path.read_text().splitlines()
  kept = []
  for number, line in enumerate(lines, start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines):
        break
      raise ValueError(
          f'{path}, line {number}, is not JSON: {line!r}') from None
    if record['step'] <= last_step:
      kept.append(line + '\n')
  workdirs.write_atomically(path, ''.join(kept))


def finished_results(directory: pathlib.Path,
                     config: ml_collections.ConfigDict) -> dict | None:
  """Returns a run's ``results.json`` if it was written with ``config``.

  A finished run need not be trained or evaluated again. Where its data lies
  and how often it logged do not change its results, so a moved work
  directory, or one written before ``log_every_steps`` existed, still counts.
  """
  path = pathlib.Path(directory) / 'results.json'
  if not path.exists():
    return None
  try:
    results = json.loads(path.read_text())
  except json.JSONDecodeError:  # Cut short while being written.
    return None
  neutral = dict.fromkeys(_RESULT_NEUTRAL_SETTINGS)
  # Compared through JSON, as written (tuples become lists).
  recorded = {**results.get('config', {}), **neutral}
  expected = {**json.loads(json.dumps(config.to_dict())), **neutral}
  return results if recorded == expected else None


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains, keeps the best model on validation, and evaluates it on test.

  The model validated, kept and tested is the moving average of the
  parameters (``config.param_average_decay``; 0 is the trained network).
  The run holds ``workdirs.lock(workdir)`` from before its data is read
  until it ends.

  Args:
    config: hyperparameters, as in ``configs/default.py``.
    workdir: where everything is written; an existing run there resumes.

  Returns:
    The results written to ``<workdir>/results.json``.

  Raises:
    ValueError: if ``config.loss`` is unknown,
      ``config.learning_rate_decay_start`` is not in [0, 1],
      ``config.param_average_decay`` is not in [0, 1),
      ``config.seed`` or ``config.data_seed`` is negative, or
      ``config.batch_size`` or ``config.eval_batch_size`` does not divide by
      the number of devices.
    workdirs.WorkdirInUseError: if another run is writing in ``workdir``.
    checkpointing.DamagedCheckpointError: if every checkpoint of the run,
      or its best model, is damaged.
  """
  # Settings checked before any data is generated or read.
  loss_registry.get(config.loss)
  learning_rate(config, num_steps=1)
  try:
    averaging.param_average(config.param_average_decay)
  except ValueError as error:
    raise ValueError(f'config.param_average_decay: {error}') from error
  for name in ('seed', 'data_seed'):
    if config[name] < 0:
      raise ValueError(f'config.{name} must be a non-negative integer, got '
                       f'{config[name]}')
  mesh = data_parallel_mesh()
  check_batch_divides('batch_size', config.batch_size, mesh)
  check_batch_divides('eval_batch_size', config.eval_batch_size, mesh)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdirs.lock(workdir):
    return _train_and_evaluate(config, workdir, mesh)


def _train_and_evaluate(config, workdir, mesh):
  """``train_and_evaluate`` with its settings checked, holding the lock."""
  splits = input_pipeline.load_splits(config, workdir)
  model = create_model(config)
  optimizer = create_optimizer(
      model, config,
      input_pipeline.num_training_steps(len(splits['train']), config))
  checkpoints = checkpointing.Checkpoints(workdir)
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
    averaged = averaging.averaged_model(model, optimizer,
                                        config.param_average_decay)
    _, si_sdri = evaluate(averaged, splits['valid'], config.eval_batch_size,
                          config.loss, mesh)
    valid_si_sdri = float(si_sdri.mean())
    with _open_log(validation_path) as log:
      log.write(json.dumps({'step': step, 'si_sdri': valid_si_sdri}) + '\n')
    if valid_si_sdri > progress['best_valid_si_sdri']:
      progress['best_valid_si_sdri'] = valid_si_sdri
      checkpoints.save_best(step, averaged)
    checkpoints.save(step, model, optimizer, progress)

  step = start_step
  started = time.perf_counter() - progress['train_seconds']
  with _open_log(log_path) as log:
    for step, *_, fetched in train_steps(model, optimizer, splits['train'],
                                         config, start_step):
      log.writelines(json.dumps(record) + '\n' for record in fetched)
      if checkpoint_due(step, config, steps_per_epoch):
        log.flush()
        progress['train_seconds'] = time.perf_counter() - started
        validate_and_save(step)
  checkpoints.restore_best(model)
  wav_dir = workdir / 'separated'
  wav_dir.mkdir(exist_ok=True)
  si_sdr, si_sdri = evaluate(model, splits['test'], config.eval_batch_size,
                             config.loss, mesh, wav_dir,
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
  if _writes_files():
    workdirs.write_atomically(workdir / 'results.json',
                              json.dumps(results, indent=2) + '\n')
  return results


# What `input_pipeline.load_splits` reads of a config.
_DATA_SETTINGS = ('dataset', 'data_dir', 'num_train', 'num_valid', 'num_test',
                  'data_seed')


def train_runs(runs: Mapping[Hashable, tuple[ml_collections.ConfigDict,
                                              pathlib.Path]],
               parallel_runs: int = 1) -> Iterator[tuple[Hashable, dict]]:
  """Trains several runs, ``parallel_runs`` at once, skipping finished ones.

  Each run is ``train_and_evaluate(config, directory)``; one written with its
  config (``finished_results``) is not trained again. The runs train in
  threads of this process, each with its own model and data order, so their
  results do not depend on ``parallel_runs``. On CPU, one small run does not
  keep every core busy: two 2 x 128 runs at once trained at 7.1 steps/s
  together on 2 cores, against 5.4 one after the other.

  Args:
    runs: ``(config, directory)`` of each run, by any key.
    parallel_runs: how many runs train at once; 1 trains them in turn. Keep
      1 in a multi-process run, whose processes must take the same steps in
      the same order.

  Yields:
    ``(key, results)`` of every run, the finished ones first, then each as
    it ends. An error in a run is raised here; runs still training stop
    when the process exits (their last checkpoints resume them).

  Raises:
    ValueError: if ``parallel_runs`` is below 1.
  """
  if parallel_runs < 1:
    raise ValueError(f'parallel_runs must be at least 1, got {parallel_runs}')
  to_train = queue.SimpleQueue()
  prepared_data = set()
  for key, (config, directory) in runs.items():
    finished = finished_results(directory, config)
    if finished is not None:
      yield key, finished
      continue
    to_train.put(key)
    # The runs may share a data set: it is generated here, once, before any
    # run starts (listing 4,300 mixtures again took 4 s).
    # Without a data_dir, espeak2mix goes under the run's own directory.
    data = (tuple(config[field] for field in _DATA_SETTINGS),
            None if config.data_dir else directory)
    if data not in prepared_data:
      input_pipeline.load_splits(config, directory)
      prepared_data.add(data)
  num_to_train = to_train.qsize()
  ended = queue.SimpleQueue()

  def train_queued_runs():
    while True:
      try:
        key = to_train.get_nowait()
      except queue.Empty:
        return
      try:
        ended.put((key, train_and_evaluate(*runs[key]), None))
      except Exception as error:  # pylint: disable=broad-except
        ended.put((key, None, error))

  for _ in range(min(parallel_runs, num_to_train)):
    threading.Thread(target=train_queued_runs, daemon=True).start()
  for _ in range(num_to_train):
    key, results, error = ended.get()
    if error is not None:
      raise error
    yield key, results


def _write_example(directory, utterance, estimate):
  soundfile.write(directory / f'{utterance.name}_mix.wav',
                  utterance.mixture, spectral.SAMPLE_RATE)
  for index, signal in enumerate(estimate, start=1):
    peak = max(1.0, float(np.abs(signal).max()))
    soundfile.write(directory / f'{utterance.name}_estimate{index}.wav',
                    signal / peak, spectral.SAMPLE_RATE)
