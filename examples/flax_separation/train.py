"""Trains and evaluates a BLSTM separation network with AutoClip.

``config.loss`` picks one of the AutoClip paper's five losses (``LOSSES``):
the network (masks, embeddings or both), the loss ``train_step`` descends,
and how ``separate`` turns the network's output into masks.

``train_and_evaluate(config, workdir)`` writes everything under ``workdir``:
``checkpoints/`` (the latest state, every ``checkpoint_every_steps``),
``best/`` (the model with the best validation SI-SDRi), ``log.jsonl`` (one
line per training step), ``validation.jsonl``, ``results.json`` (test
SI-SDR and SI-SDRi) and ``separated/`` (a few separated test mixtures).
An interrupted run started again with the same config resumes from its last
checkpoint with the same data order and identical next steps.
"""

import functools
import json
import pathlib
import time

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
from examples.flax_separation import clustering
from examples.flax_separation import data
from examples.flax_separation import losses
from examples.flax_separation import metrics
from examples.flax_separation import models
from examples.flax_separation import spectral

# Validation and test mixtures are zero-padded to a multiple of this many
# samples, so that evaluation compiles once or twice, not per length.
EVAL_LENGTH_QUANTUM = 8 * spectral.SAMPLE_RATE


# ``config.loss``: AutoClip's eqs. 4 to 8.
LOSSES = ('mi', 'dc', 'wkm', 'chimera', 'snr')
# Losses of an embedding network; the others train a mask network.
_EMBEDDING_LOSSES = ('dc', 'wkm', 'chimera')


def check_loss(loss_name: str) -> None:
  """Raises ValueError unless ``loss_name`` is one of ``LOSSES``."""
  if loss_name not in LOSSES:
    raise ValueError(f'config.loss must be one of {", ".join(LOSSES)}, got '
                     f'{loss_name!r}')


def create_model(
    config: ml_collections.ConfigDict
) -> models.BLSTMMaskNet | models.BLSTMEmbeddingNet:
  """The network ``config.loss`` trains: a mask net or an embedding net."""
  check_loss(config.loss)
  if config.loss in _EMBEDDING_LOSSES:
    return models.BLSTMEmbeddingNet(hidden_size=config.hidden_size,
                                    num_layers=config.num_layers,
                                    embedding_dim=config.embedding_dim,
                                    mask_head=config.loss == 'chimera',
                                    rngs=nnx.Rngs(config.seed))
  return models.BLSTMMaskNet(hidden_size=config.hidden_size,
                             num_layers=config.num_layers,
                             rngs=nnx.Rngs(config.seed))


def create_optimizer(model: nnx.Module,
                     config: ml_collections.ConfigDict) -> nnx.Optimizer:
  """Adam behind AutoClip; percentile 100 never clips (the paper's baseline)."""
  tx = optax.chain(
      autoclip(config.autoclip_percentile, config.autoclip_max_history),
      optax.adam(config.learning_rate))
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def _estimate_masks(model, mixture):
  spectrogram = spectral.stft(mixture)
  return spectrogram, model(spectral.log_magnitude(spectrogram))


def _resynthesise(masks, mixture_spectrogram, length):
  """Masks the mixture, keeps its phase, and inverts the STFT: ``[B, C, T]``."""
  return spectral.istft(masks * mixture_spectrogram[:, None], length)


def batch_loss(model: nnx.Module, mixture: jax.Array, sources: jax.Array,
               loss_name: str = 'mi', chimera_alpha: float = 0.75
               ) -> jax.Array:
  """The training loss of a batch, as ``config.loss`` names it.

  Args:
    model: a network from ``create_model`` for the same loss.
    mixture: ``[batch, samples]``.
    sources: ``[batch, 2, samples]``.
    loss_name: one of ``LOSSES``.
    chimera_alpha: weight of ``L_MI`` in the Chimera loss.

  Returns:
    A scalar loss.
  """
  check_loss(loss_name)
  mixture_spectrogram, outputs = _estimate_masks(model, mixture)
  source_spectrograms = spectral.stft(sources)
  if loss_name == 'mi':
    return losses.psa_mask_loss(outputs, mixture_spectrogram,
                                source_spectrograms)
  if loss_name == 'snr':
    return losses.snr_loss(
        _resynthesise(outputs, mixture_spectrogram, mixture.shape[-1]),
        sources)
  if loss_name == 'dc':
    return losses.deep_clustering_loss(
        outputs.embeddings, mixture_spectrogram, source_spectrograms)
  if loss_name == 'wkm':
    return losses.whitened_kmeans_loss(
        outputs.embeddings, mixture_spectrogram, source_spectrograms)
  return losses.chimera_loss(outputs.masks, outputs.embeddings,
                             mixture_spectrogram, source_spectrograms,
                             chimera_alpha)


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
    loss_name: one of ``LOSSES``, matching the model.
    chimera_alpha: weight of ``L_MI`` in the Chimera loss.

  Returns:
    The loss, the gradient norm and AutoClip's threshold at this step, and
    the step size ``||theta_t - theta_{t-1}||``.
  """
  params_before = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  loss, grads = nnx.value_and_grad(
      lambda model: batch_loss(model, mixture, sources, loss_name,
                               chimera_alpha))(model)
  optimizer.update(model, grads)
  params_after = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  clip_state = optimizer.opt_state[0]
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
  """Separates with the model's masks, resynthesised with the mixture phase.

  Mask networks (``mi``, ``snr``) and Chimera use their mask head; embedding
  networks trained with ``dc`` or ``wkm`` use the binary masks of k-means on
  their embeddings (``clustering.cluster_masks``).

  Args:
    model: a network from ``create_model`` for the same loss.
    mixture: ``[batch, samples]``.
    loss_name: the loss the model was trained with, one of ``LOSSES``.

  Returns:
    ``[batch, 2, samples]``.
  """
  mixture_spectrogram, outputs = _estimate_masks(model, mixture)
  if loss_name in ('dc', 'wkm'):
    masks = clustering.cluster_masks(outputs.embeddings, mixture_spectrogram)
  elif loss_name == 'chimera':
    masks = outputs.masks
  else:
    masks = outputs
  return _resynthesise(masks, mixture_spectrogram, mixture.shape[-1])


def evaluate(model, utterances, batch_size, loss_name='mi'):
  """Separates every utterance; returns per-source SI-SDR and SI-SDRi (dB).

  Args:
    model: the network.
    utterances: ``data.Utterance`` list.
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


def load_splits(config, workdir):
  """Returns ``{'train': ..., 'valid': ..., 'test': ...}`` utterance lists."""
  if config.dataset == 'espeak2mix':
    root = data.generate_espeak2mix(
        config.data_dir or pathlib.Path(workdir) / 'data',
        num_train=config.num_train, num_valid=config.num_valid,
        num_test=config.num_test, seed=config.data_seed)
  elif config.dataset in ('wsj0-2mix', 'libri2mix'):
    if not config.data_dir:
      raise ValueError(f'config.data_dir must point at the {config.dataset} '
                       'copy (the folder holding wav8k/min)')
    root = config.data_dir
  else:
    raise ValueError('config.dataset must be espeak2mix, wsj0-2mix or '
                     f'libri2mix, got {config.dataset!r}')
  return {split: data.load_split(root, split)
          for split in ('train', 'valid', 'test')}


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


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains, keeps the best model on validation, and evaluates it on test.

  Args:
    config: hyperparameters, as in ``configs/default.py``.
    workdir: where everything is written; an existing run there resumes.

  Returns:
    The results written to ``<workdir>/results.json``.
  """
  check_loss(config.loss)
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  splits = load_splits(config, workdir)
  model = create_model(config)
  optimizer = create_optimizer(model, config)
  checkpoints = _Checkpoints(workdir)
  progress = checkpoints.restore(model, optimizer) or {
      'best_valid_si_sdri': -np.inf, 'train_seconds': 0.0}
  step = int(optimizer.step[...])
  log_path = workdir / 'log.jsonl'
  validation_path = workdir / 'validation.jsonl'
  _keep_log_lines_up_to(log_path, step)
  _keep_log_lines_up_to(validation_path, step)

  steps_per_epoch = data.steps_per_epoch(len(splits['train']),
                                         config.batch_size)
  total_steps = steps_per_epoch * config.num_epochs
  excerpt_samples = (config.excerpt_frames - 1) * spectral.HOP_LENGTH

  def validate_and_save():
    _, si_sdri, _ = evaluate(model, splits['valid'], config.eval_batch_size,
                             config.loss)
    valid_si_sdri = float(si_sdri.mean())
    with validation_path.open('a') as log:
      log.write(json.dumps({'step': step, 'si_sdri': valid_si_sdri}) + '\n')
    if valid_si_sdri > progress['best_valid_si_sdri']:
      progress['best_valid_si_sdri'] = valid_si_sdri
      checkpoints.save_best(step, model)
    checkpoints.save(step, model, optimizer, progress)

  started = time.perf_counter() - progress['train_seconds']
  with tqdm.tqdm(total=total_steps, initial=step, unit='step',
                 desc=f'{config.loss} p={config.autoclip_percentile:g}') as bar, \
       log_path.open('a') as log:
    while step < total_steps:
      epoch, step_in_epoch = divmod(step, steps_per_epoch)
      for mixture, sources in data.training_batches(
          splits['train'], batch_size=config.batch_size,
          excerpt_samples=excerpt_samples, seed=config.seed, epoch=epoch,
          start_step=step_in_epoch):
        record = {k: float(v) for k, v in train_step(
            model, optimizer, jnp.asarray(mixture), jnp.asarray(sources),
            config.loss, config.chimera_alpha).items()}
        step += 1
        log.write(json.dumps({'step': step, **record}) + '\n')
        bar.update()
        bar.set_postfix(loss=f'{record["loss"]:.4f}',
                        threshold=f'{record["threshold"]:.3g}')
        if step % config.checkpoint_every_steps == 0 or (
            step % steps_per_epoch == 0):
          log.flush()
          progress['train_seconds'] = time.perf_counter() - started
          validate_and_save()

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
