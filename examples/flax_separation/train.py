"""Trains and evaluates a BLSTM separation network with AutoClip.

``config.loss`` picks one of the AutoClip paper's five losses
(``loss_registry.LOSSES``), which says which heads the network has, what
``train_step`` descends, and how the network's output becomes masks.

``train_and_evaluate(config, workdir)`` writes everything under ``workdir``
(the README lists it). A run started again with the same config resumes
from its last whole checkpoint (``checkpointing``), killed at whatever
moment, with the same data order and identical next steps. Training is data
parallel over every device (``sharding``). ``training_loop`` is the loop
itself, for anything else that trains as a run does (``dynamics.py``).
"""

import functools
import json
import pathlib
import time
from collections.abc import Iterator
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from examples.flax_separation import averaging
from examples.flax_separation import checkpointing
from examples.flax_separation import configs
from examples.flax_separation import evaluation
from examples.flax_separation import input_pipeline
from examples.flax_separation import loss_registry
from examples.flax_separation import models
from examples.flax_separation import optimization
from examples.flax_separation import sharding
from examples.flax_separation import spectral
from examples.flax_separation import workdirs

# Steps the loop dispatches ahead of the device at most. It waits for the
# step this many before the latest, never for the latest, so the device
# always has a step queued, and the batches and buffers of the queued steps
# do not pile up in memory between two fetches of the metrics.
_STEPS_AHEAD = 2


def create_model(config: ml_collections.ConfigDict) -> models.BLSTMNet:
  """The network ``config.loss`` trains, with the heads that loss needs."""
  return models.BLSTMNet(
    heads=loss_registry.get(config.loss).heads,
    hidden_size=config.hidden_size,
    num_layers=config.num_layers,
    embedding_dim=config.embedding_dim,
    normalize_input=config.normalize_input,
    rngs=nnx.Rngs(config.seed),
  )


def batch_loss(
  model: nnx.Module,
  mixture: jax.Array,
  sources: jax.Array,
  loss_name: str = 'mi',
  chimera_alpha: float = 0.75,
) -> jax.Array:
  """The scalar loss ``loss_name`` of a batch (arguments as ``train_step``'s)."""
  mixture_spectrogram = spectral.stft(mixture)
  estimates = model(
    spectral.log_magnitude(mixture_spectrogram), use_running_average=False
  )
  targets = loss_registry.Targets(
    mixture_spectrogram, spectral.stft(sources), sources
  )
  return loss_registry.get(loss_name).loss_fn(estimates, targets, chimera_alpha)


@functools.partial(nnx.jit, static_argnames=('loss_name', 'chimera_alpha'))
def train_step(
  model: nnx.Module,
  optimizer: nnx.Optimizer,
  mixture: jax.Array,
  sources: jax.Array,
  loss_name: str = 'mi',
  chimera_alpha: float = 0.75,
) -> dict[str, jax.Array]:
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
    optimizer.opt_state, 'AutoClipState'
  ).num_clipped[...]
  loss, grads = nnx.value_and_grad(
    lambda model: batch_loss(model, mixture, sources, loss_name, chimera_alpha)
  )(model)
  optimizer.update(model, grads)
  # A step skipped for a non-finite update keeps the input normalisation's
  # running statistics too, which the batch would otherwise have poisoned.
  finite = optimizer.opt_state.last_finite[...]
  batch_stats = nnx.state(model, nnx.BatchStat)
  nnx.replace_by_pure_dict(
    batch_stats,
    jax.tree.map(
      lambda after, before: jnp.where(finite, after, before),
      nnx.to_pure_dict(batch_stats),
      batch_stats_before,
    ),
  )
  nnx.update(model, batch_stats)
  params_after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  clip_state = optax.tree_utils.tree_get(optimizer.opt_state, 'AutoClipState')
  num_clipped = clip_state.num_clipped[...]
  return {
    'loss': loss,
    'grad_norm': clip_state.grad_norm[...],
    'threshold': clip_state.threshold[...],
    'step_size': optax.tree.norm(
      jax.tree.map(jnp.subtract, params_after, params_before)
    ),
    'clipped': (num_clipped - num_clipped_before).astype(jnp.float32),
    'clip_rate': num_clipped / jnp.maximum(clip_state.count[...], 1),
  }


class Step(NamedTuple):
  """One training step, as ``training_loop`` yields it.

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


def training_loop(
  model: nnx.Module,
  optimizer: nnx.Optimizer,
  split: input_pipeline.Split,
  config: ml_collections.ConfigDict,
  start_step: int = 0,
  progress_bar_position: int = 0,
) -> Iterator[Step]:
  """Trains from ``start_step`` to the run's end, yielding after each step.

  The batches are ``input_pipeline.training_stream``'s, so the run's data
  order does not depend on where it starts. The model and optimizer are
  replicated over every device and each batch is split over them
  (``sharding``). The loop waits for no step but the one ``_STEPS_AHEAD``
  behind, and fetches the metrics every ``config.log_every_steps`` and at
  every ``checkpointing.is_due`` step, updating the progress bar then.

  Args:
    model: the network, updated in place.
    optimizer: its optimizer, updated in place.
    split: the training split.
    config: the run's config.
    start_step: steps already taken (a resumed run's checkpoint).
    progress_bar_position: the line of the progress bar, for runs that
      train at once.

  Returns:
    An iterator of ``Step``s, with a progress bar.
  """
  mesh = sharding.data_parallel_mesh()
  sharding.replicate(mesh, model, optimizer)
  per_epoch = input_pipeline.steps_per_epoch(len(split), config.batch_size)
  batches = input_pipeline.training_stream(
    split,
    config,
    start_step,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  unfetched = []  # (step, metrics on the device) since the last fetch.
  with tqdm.tqdm(
    total=per_epoch * config.num_epochs,
    initial=start_step,
    unit='step',
    position=progress_bar_position,
    desc=(f'{config.loss} p={config.autoclip_percentile:g} seed {config.seed}'),
  ) as bar:
    for number, local_rows in enumerate(batches, start=start_step + 1):
      mixture, sources = sharding.shard_batch(mesh, local_rows)
      step_metrics = train_step(
        model, optimizer, mixture, sources, config.loss, config.chimera_alpha
      )
      unfetched.append((number, step_metrics))
      if len(unfetched) > _STEPS_AHEAD:
        jax.block_until_ready(unfetched[-1 - _STEPS_AHEAD][1])
      fetched = []
      if number % config.log_every_steps == 0 or checkpointing.is_due(
        number, config, per_epoch
      ):
        fetched = [
          {'step': step, **{key: float(value) for key, value in record.items()}}
          for step, record in jax.device_get(unfetched)
        ]
        unfetched = []
        bar.set_postfix(
          loss=f'{fetched[-1]["loss"]:.4f}',
          clipped=f'{np.mean([r["clipped"] for r in fetched]):.0%}',
        )
      bar.update()
      yield Step(number, mixture, sources, step_metrics, fetched)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str | pathlib.Path,
  *,
  progress_bar_position: int = 0,
) -> dict:
  """Trains, keeps the best model on validation, and evaluates it on test.

  The model validated, kept and tested is the moving average of the
  parameters (``config.param_average_decay``; 0 is the trained network).
  The run holds ``workdirs.lock(workdir)`` from before its data is read
  until it ends.

  Args:
    config: hyperparameters, as in ``configs/default.py``.
    workdir: where everything is written; an existing run there resumes.
    progress_bar_position: the line of the run's progress bar.

  Returns:
    The results written to ``<workdir>/results.json``.

  Raises:
    ValueError: if a setting is bad (``configs.validate``).
    workdirs.WorkdirInUseError: if another run is writing in ``workdir``.
    checkpointing.DamagedCheckpointError: if every checkpoint of the run,
      or its best model, is damaged.
  """
  configs.validate(config)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  with workdirs.lock(workdir):
    splits = input_pipeline.load_splits(config, workdir)
    model = create_model(config)
    optimizer = optimization.create_optimizer(
      model,
      config,
      input_pipeline.num_training_steps(len(splits['train']), config),
    )
    mesh = sharding.data_parallel_mesh()
    # Restored in place, onto every device: on several hosts, a state
    # restored onto one device could not be replicated across hosts.
    sharding.replicate(mesh, model, optimizer)
    checkpoints = checkpointing.Checkpoints(workdir)
    progress = checkpoints.restore(model, optimizer) or {
      'best_valid_si_sdri': -np.inf,
      'train_seconds': 0.0,
    }
    start_step = int(optimizer.step[...])
    log_path = workdir / 'log.jsonl'
    validation_path = workdir / 'validation.jsonl'
    workdirs.keep_log_lines_up_to(log_path, start_step)
    workdirs.keep_log_lines_up_to(validation_path, start_step)
    steps_per_epoch = input_pipeline.steps_per_epoch(
      len(splits['train']), config.batch_size
    )

    def validate_and_save(step):
      averaged = averaging.averaged_model(
        model, optimizer, config.param_average_decay
      )
      _, si_sdri = evaluation.evaluate(
        averaged, splits['valid'], config.eval_batch_size, config.loss, mesh
      )
      valid_si_sdri = float(si_sdri.mean())
      with workdirs.open_log(validation_path) as log:
        log.write(json.dumps({'step': step, 'si_sdri': valid_si_sdri}) + '\n')
      if valid_si_sdri > progress['best_valid_si_sdri']:
        progress['best_valid_si_sdri'] = valid_si_sdri
        checkpoints.save_best(step, averaged)
      checkpoints.save(step, model, optimizer, progress)

    step = start_step
    started = time.perf_counter() - progress['train_seconds']
    with workdirs.open_log(log_path) as log:
      for step, *_, fetched in training_loop(
        model,
        optimizer,
        splits['train'],
        config,
        start_step,
        progress_bar_position,
      ):
        log.writelines(json.dumps(record) + '\n' for record in fetched)
        if checkpointing.is_due(step, config, steps_per_epoch):
          log.flush()
          progress['train_seconds'] = time.perf_counter() - started
          validate_and_save(step)
    checkpoints.restore_best(model)
    si_sdr, si_sdri = evaluation.evaluate(
      model, splits['test'], config.eval_batch_size, config.loss, mesh
    )
    evaluation.write_wavs(
      model,
      splits['test'],
      config.eval_batch_size,
      config.loss,
      mesh,
      workdir / 'separated',
      config.num_example_wavs,
    )
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
    if workdirs.writes_files():
      workdirs.write_atomically(
        workdir / 'results.json', json.dumps(results, indent=2) + '\n'
      )
    return results
