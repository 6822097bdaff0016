"""The input pipeline: reads two-speaker mixtures and batches training excerpts.

`load_splits(config, workdir)` is the front the training code calls: it finds
(or, for espeak2mix, generates) the data set `config.dataset` names and reads
its three splits. Three data sets share one on-disk layout, the "min" version
of WSJ0-2mix at 8 kHz: a split folder holds a mixture folder and the folders
`s1` and `s2`, and a mixture and its two sources share a file name.

* espeak2mix (`espeak2mix.py`), synthetic speech generated offline.
* WSJ0-2mix (`wav8k/min/{tr,cv,tt}/{mix,s1,s2}/`), which needs the licensed
  WSJ0 corpus.
* Libri2Mix (`Libri2Mix/wav8k/min/{train-100,dev,test}/{mix_clean,s1,s2}/`).

`load_split` reads any of them into `Utterance`s, and `training_batches` cuts
those into shuffled fixed-length excerpts.

References:
  Hershey, Chen, Le Roux & Watanabe, `Deep clustering: Discriminative
  embeddings for segmentation and separation
  <https://arxiv.org/abs/1508.04306>`_, 2016 (WSJ0-2mix).

  Cosentino, Pariente, Cornell, Deleforge & Vincent, `LibriMix: An Open-Source
  Dataset for Generalizable Speech Separation
  <https://arxiv.org/abs/2005.11262>`_, 2020.
"""

import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import ml_collections
import numpy as np
import soundfile as sf
import tqdm

from examples.flax_separation import espeak2mix
from examples.flax_separation import spectral

SPLITS = espeak2mix.SPLITS
DATASETS = ('espeak2mix', 'wsj0-2mix', 'libri2mix')

# Split folders and mixture folder of each layout, tried in this order by
# `load_split`: WSJ0-2mix's (which espeak2mix is written in), then Libri2Mix's.
_LAYOUT_FOLDERS = (
    (espeak2mix.SPLIT_FOLDERS, espeak2mix.MIXTURE_FOLDER),
    ({'train': 'train-100', 'valid': 'dev', 'test': 'test'}, 'mix_clean'),
)


class Utterance(NamedTuple):
  """A two-speaker mixture with its reference sources.

  Attributes:
    name: the file name without `.wav`, shared by the mixture and sources.
    mixture: float32 `[samples]`, the sum of the sources.
    sources: float32 `[2, samples]`, the first and second speaker.
  """
  name: str
  mixture: np.ndarray
  sources: np.ndarray


def _find_mixture_dir(root: pathlib.Path, split: str) -> pathlib.Path:
  """Returns the mixture folder of `split` in whichever layout `root` holds."""
  looked_for = []
  for base in (root, root / 'wav8k' / 'min'):
    for split_folders, mixture_folder in _LAYOUT_FOLDERS:
      mixture_dir = base / split_folders[split] / mixture_folder
      if mixture_dir.is_dir():
        return mixture_dir
      looked_for.append(str(mixture_dir))
  raise FileNotFoundError(
      f'{root} holds no {split!r} split of WSJ0-2mix, espeak2mix or '
      f'Libri2Mix; looked for {", ".join(looked_for)}')


def _read_mono(path: pathlib.Path) -> np.ndarray:
  """Reads a mono `spectral.SAMPLE_RATE` audio file as float32 `[samples]`."""
  try:
    samples, sample_rate = sf.read(path, dtype='float32', always_2d=True)
  except sf.SoundFileError as error:
    raise ValueError(f'{path} is not a readable audio file: {error}') from error
  if sample_rate != spectral.SAMPLE_RATE:
    raise ValueError(
        f'{path} has a sample rate of {sample_rate} Hz; expected '
        f'{spectral.SAMPLE_RATE}')
  if samples.shape[1] != 1:
    raise ValueError(f'{path} has {samples.shape[1]} channels; expected 1')
  return samples[:, 0]


def _load_utterance(mixture_path: pathlib.Path) -> Utterance:
  """Reads a mixture and the sources beside it, checking they match."""
  split_dir = mixture_path.parent.parent
  source_paths = [split_dir / folder / mixture_path.name
                  for folder in espeak2mix.SOURCE_FOLDERS]
  for source_path in source_paths:
    if not source_path.is_file():
      raise FileNotFoundError(
          f'{source_path} is missing; every mixture needs both sources, and '
          f'{mixture_path} exists')
  mixture = _read_mono(mixture_path)
  sources = []
  for source_path in source_paths:
    source = _read_mono(source_path)
    if len(source) != len(mixture):
      raise ValueError(
          f'{source_path} has {len(source)} samples but its mixture '
          f'{mixture_path} has {len(mixture)}; expected equal lengths')
    sources.append(source)
  return Utterance(mixture_path.stem, mixture, np.stack(sources))


def load_split(root: str | os.PathLike, split: str) -> list[Utterance]:
  """Reads one split of espeak2mix, WSJ0-2mix or Libri2Mix.

  The layout is recognised by its folder names: `{tr,cv,tt}/mix` for
  WSJ0-2mix and espeak2mix, `{train-100,dev,test}/mix_clean` for Libri2Mix,
  each with `s1` and `s2` beside the mixture folder.

  Args:
    root: the directory holding those split folders (`.../wav8k/min`, as
      `espeak2mix.generate` returns), or the one holding `wav8k/min`.
    split: `'train'`, `'valid'` or `'test'`.

  Returns:
    The split's utterances, sorted by name.

  Raises:
    ValueError: if `split` is unknown, or a file is not mono 8 kHz audio, or
      a source's length differs from its mixture's.
    FileNotFoundError: if `root` holds none of the layouts, the split holds
      no `.wav` files, or a mixture lacks a source file.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f'data directory {root} does not exist')
  mixture_dir = _find_mixture_dir(root, split)
  mixture_paths = sorted(mixture_dir.glob('*.wav'))
  if not mixture_paths:
    raise FileNotFoundError(f'{mixture_dir} holds no .wav files')
  return [_load_utterance(path)
          for path in tqdm.tqdm(mixture_paths, desc=f'loading {split}',
                                unit='utterance', leave=False)]


def steps_per_epoch(num_utterances: int, batch_size: int) -> int:
  """Returns the number of full batches in one pass over the utterances.

  Args:
    num_utterances: how many utterances the split has.
    batch_size: utterances per batch.

  Returns:
    `num_utterances // batch_size`; the last, incomplete batch is dropped.

  Raises:
    ValueError: if `batch_size` is below 1.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be at least 1, got {batch_size}')
  return num_utterances // batch_size


def _excerpt(utterance: Utterance, start: int,
             num_samples: int) -> tuple[np.ndarray, np.ndarray]:
  """Cuts `num_samples` from `start`, zero-padding past the utterance's end."""
  mixture = utterance.mixture[start:start + num_samples]
  sources = utterance.sources[:, start:start + num_samples]
  padding = num_samples - len(mixture)
  return (np.pad(mixture, (0, padding)),
          np.pad(sources, ((0, 0), (0, padding))))


def training_batches(
    utterances: Sequence[Utterance], *, batch_size: int, excerpt_samples: int,
    seed: int, epoch: int, start_step: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields one epoch of shuffled, fixed-length training excerpts.

  The epoch's order and excerpt offsets are drawn from
  `np.random.default_rng((seed, epoch))`. Each utterance gives one excerpt at
  a uniformly random offset; utterances shorter than `excerpt_samples` are
  used whole and zero-padded at the end. The last incomplete batch is dropped.

  Args:
    utterances: the split, as `load_split` returns it.
    batch_size: excerpts per batch.
    excerpt_samples: samples per excerpt.
    seed: the run's data seed.
    epoch: the epoch number; each epoch has its own order.
    start_step: number of the epoch's batches to skip. The batches that follow
      are the same as without skipping, so a resumed run sees the same data.

  Returns:
    An iterator of `(mixture [batch_size, excerpt_samples],
    sources [batch_size, 2, excerpt_samples])` float32 arrays.

  Raises:
    ValueError: if `batch_size` or `excerpt_samples` is below 1, there are
      fewer utterances than `batch_size`, or `start_step` is outside
      `[0, steps_per_epoch]`.
  """
  num_steps = steps_per_epoch(len(utterances), batch_size)
  if excerpt_samples < 1:
    raise ValueError(
        f'excerpt_samples must be at least 1, got {excerpt_samples}')
  if num_steps == 0:
    raise ValueError(f'{len(utterances)} utterances do not fill one batch of '
                     f'{batch_size}')
  if not 0 <= start_step <= num_steps:
    raise ValueError(
        f'start_step must be in [0, {num_steps}], got {start_step}')
  rng = np.random.default_rng((seed, epoch))
  order = rng.permutation(len(utterances))
  # Drawn for the whole epoch up front, so skipped batches use no randomness
  # and the later batches do not depend on start_step.
  offset_fractions = rng.random(len(utterances))
  starts = [
      int(fraction * (max(len(utterances[index].mixture) - excerpt_samples, 0)
                      + 1))
      for index, fraction in zip(order, offset_fractions)]
  return _batches(utterances, order, starts, batch_size, excerpt_samples,
                  range(start_step, num_steps))


def _batches(utterances, order, starts, batch_size, excerpt_samples, steps):
  """Yields the batches numbered `steps` of an epoch drawn in advance."""
  for step in steps:
    positions = range(step * batch_size, (step + 1) * batch_size)
    mixtures, sources = zip(*(
        _excerpt(utterances[order[position]], starts[position], excerpt_samples)
        for position in positions))
    yield np.stack(mixtures), np.stack(sources)


def load_splits(config: ml_collections.ConfigDict,
                workdir: str | os.PathLike) -> dict[str, list[Utterance]]:
  """Reads the data set ``config.dataset`` names, generating espeak2mix first.

  Args:
    config: ``dataset``, ``data_dir`` and, for espeak2mix, ``num_train``,
      ``num_valid``, ``num_test`` and ``data_seed``.
    workdir: the run's work directory; espeak2mix is generated under
      ``<workdir>/data`` unless ``config.data_dir`` is set.

  Returns:
    ``{'train': ..., 'valid': ..., 'test': ...}`` utterance lists.

  Raises:
    ValueError: if ``config.dataset`` is unknown, or a real data set has no
      ``config.data_dir``.
  """
  if config.dataset == 'espeak2mix':
    root = espeak2mix.generate(
        config.data_dir or pathlib.Path(workdir) / 'data',
        num_train=config.num_train, num_valid=config.num_valid,
        num_test=config.num_test, seed=config.data_seed)
  elif config.dataset in DATASETS:
    if not config.data_dir:
      raise ValueError(f'config.data_dir must point at the {config.dataset} '
                       'copy (the folder holding wav8k/min)')
    root = config.data_dir
  else:
    raise ValueError(f'config.dataset must be {", ".join(DATASETS)}, got '
                     f'{config.dataset!r}')
  return {split: load_split(root, split) for split in SPLITS}


def num_training_steps(num_utterances: int,
                       config: ml_collections.ConfigDict) -> int:
  """Steps of a run: ``config.num_epochs`` of full batches."""
  return (steps_per_epoch(num_utterances, config.batch_size)
          * config.num_epochs)


def training_stream(
    utterances: Sequence[Utterance], config: ml_collections.ConfigDict,
    start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields a run's training batches from step ``start_step`` to its end.

  The batches are those of `training_batches` for epochs ``0`` to
  ``config.num_epochs - 1`` in turn, so a run resumed at any step sees the
  same data as one that was never interrupted.

  Args:
    utterances: the training split.
    config: ``batch_size``, ``excerpt_frames`` (STFT frames per excerpt),
      ``seed`` and ``num_epochs``.
    start_step: number of the run's batches to skip.

  Returns:
    An iterator of ``(mixture [batch, samples], sources [batch, 2,
    samples])`` float32 arrays.
  """
  per_epoch = steps_per_epoch(len(utterances), config.batch_size)
  excerpt_samples = (config.excerpt_frames - 1) * spectral.HOP_LENGTH
  # With no full batch, `training_batches` raises the error that says so.
  for epoch in range(start_step // max(per_epoch, 1), config.num_epochs):
    yield from training_batches(
        utterances, batch_size=config.batch_size,
        excerpt_samples=excerpt_samples, seed=config.seed, epoch=epoch,
        start_step=max(start_step - epoch * per_epoch, 0))
