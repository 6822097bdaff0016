"""Separation of held-out mixtures: SI-SDR scores, and a few as WAVs.

Validation and test mixtures have many lengths; every batch is zero-padded
to one length, a multiple of ``EVAL_LENGTH_QUANTUM``, so that ``separate``
compiles once or twice per run, not once per length. No separated signal is
kept, so memory does not grow with the split.
"""

import functools
import pathlib
from collections.abc import Iterator

from flax import nnx
import jax
from jax.experimental import multihost_utils
import numpy as np
import soundfile

from examples.flax_separation import input_pipeline
from examples.flax_separation import loss_registry
from examples.flax_separation import metrics
from examples.flax_separation import sharding
from examples.flax_separation import spectral
from examples.flax_separation import workdirs

EVAL_LENGTH_QUANTUM = 8 * spectral.SAMPLE_RATE


@functools.partial(nnx.jit, static_argnames='loss_name')
def separate(
  model: nnx.Module, mixture: jax.Array, loss_name: str = 'mi'
) -> jax.Array:
  """Separates with the loss's masks, resynthesised with the mixture phase.

  Args:
    model: a network from ``train.create_model`` for the same loss.
    mixture: ``[batch, samples]``.
    loss_name: the loss the model was trained with; its ``masks_fn`` turns
      the network's output into masks.

  Returns:
    ``[batch, 2, samples]``.
  """
  mixture_spectrogram = spectral.stft(mixture)
  estimates = model(
    spectral.log_magnitude(mixture_spectrogram), use_running_average=True
  )
  masks = loss_registry.get(loss_name).masks_fn(estimates, mixture_spectrogram)
  return spectral.apply_masks(masks, mixture_spectrogram, mixture.shape[-1])


def _separated_batches(
  model, split, batch_size, loss_name, mesh, num_mixtures=None, whole=False
) -> Iterator[tuple]:
  """``(batch, separated)`` of this process's rows, in split order.

  ``separated`` is ``[rows, 2, padded samples]``, or with ``whole`` every
  process's rows of the batch, on every process; with ``num_mixtures``,
  only the batches that hold the first ``num_mixtures`` are separated.
  """
  mesh = mesh or sharding.data_parallel_mesh()
  longest = int(split.lengths.max())
  padded_length = -(-longest // EVAL_LENGTH_QUANTUM) * EVAL_LENGTH_QUANTUM
  batches = input_pipeline.evaluation_batches(
    split,
    batch_size,
    padded_length,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  num_batches = None if num_mixtures is None else -(-num_mixtures // batch_size)
  for number, batch in enumerate(batches):
    if number == num_batches:
      return
    separated = separate(
      model, sharding.shard_batch(mesh, batch.mixture), loss_name
    )
    yield (
      batch,
      np.asarray(multihost_utils.process_allgather(separated, tiled=True))
      if whole
      else sharding.process_rows(mesh, separated),
    )


def evaluate(
  model: nnx.Module,
  split: input_pipeline.Split,
  batch_size: int,
  loss_name: str = 'mi',
  mesh: jax.sharding.Mesh | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Separates every mixture of a split; returns SI-SDR and SI-SDRi (dB).

  Args:
    model: the network.
    split: ``input_pipeline.Split``.
    batch_size: mixtures separated at once, over all devices.
    loss_name: the loss the model was trained with (see ``separate``).
    mesh: a ``sharding.data_parallel_mesh`` (every device by default).

  Returns:
    ``(si_sdr, si_sdri)``, two ``[len(split), 2]`` arrays, each source's
    score in the permutation that maximises SI-SDR.
  """
  rows = batch_size // jax.process_count()
  # [batch, row, (SI-SDR, SI-SDRi), source] of this process's rows; NaN for
  # the padding rows of the last batch.
  scores = np.full((-(-len(split) // batch_size), rows, 2, 2), np.nan)
  for number, (batch, separated) in enumerate(
    _separated_batches(model, split, batch_size, loss_name, mesh)
  ):
    for row, utterance in enumerate(batch.utterances):
      estimate = separated[row, :, : len(utterance.mixture)]
      scores[number, row] = (
        metrics.permutation_resolved_si_sdr(estimate, utterance.sources),
        metrics.si_sdr_improvement(
          estimate, utterance.sources, utterance.mixture
        ),
      )
  # [process, batch, row, ...] -> in split order, the padding rows dropped.
  every_process = np.asarray(multihost_utils.process_allgather(scores))
  in_order = np.swapaxes(every_process.reshape((-1,) + scores.shape), 0, 1)
  in_order = in_order.reshape(-1, 2, 2)[: len(split)]
  return in_order[:, 0], in_order[:, 1]


def write_wavs(
  model: nnx.Module,
  split: input_pipeline.Split,
  batch_size: int,
  loss_name: str,
  mesh: jax.sharding.Mesh,
  directory: pathlib.Path,
  num_mixtures: int,
) -> None:
  """Writes the first mixtures of a split and their separated sources.

  Each mixture ``<name>`` gives ``<name>_mix.wav`` and
  ``<name>_estimate1.wav``, ``<name>_estimate2.wav``, scaled down to a peak
  of 1 where they exceed it. Every process separates its rows, and process
  0 (``workdirs.writes_files``) writes them all.

  Args:
    model: the network.
    split: ``input_pipeline.Split``.
    batch_size: as ``evaluate``'s, so that ``separate`` is not compiled again.
    loss_name: the loss the model was trained with (see ``separate``).
    mesh: a ``sharding.data_parallel_mesh``.
    directory: where the WAVs go; made if missing.
    num_mixtures: how many mixtures to write.
  """
  if workdirs.writes_files():
    directory.mkdir(exist_ok=True)
  num_mixtures = min(num_mixtures, len(split))
  for number, (_, separated) in enumerate(
    _separated_batches(
      model, split, batch_size, loss_name, mesh, num_mixtures, whole=True
    )
  ):
    indices = range(number * batch_size, (number + 1) * batch_size)
    for index, estimate in zip(indices, separated):
      if index >= num_mixtures or not workdirs.writes_files():
        break
      utterance = split[index]
      soundfile.write(
        directory / f'{utterance.name}_mix.wav',
        utterance.mixture,
        spectral.SAMPLE_RATE,
      )
      for source, signal in enumerate(
        estimate[:, : len(utterance.mixture)], start=1
      ):
        peak = max(1.0, float(np.abs(signal).max()))
        soundfile.write(
          directory / f'{utterance.name}_estimate{source}.wav',
          signal / peak,
          spectral.SAMPLE_RATE,
        )
