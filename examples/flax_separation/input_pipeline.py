"""The input pipeline: streams two-speaker mixtures from disk in batches.

A training set does not fit in memory: WSJ0-2mix's is about 10 GB as float32,
Libri2Mix's train-360 about 73 GB. So a split is read as a list of files
(`Split`), and each batch is read from disk when it is needed, by grain
(`training_stream`, `evaluation_batches`), in background threads a few
batches ahead of the step. Memory does not grow with the size of the data set
beyond a name and a length per mixture.

`load_splits(config, workdir)` is the front the training code calls: it finds
(or, for espeak2mix, generates) the data set `config.dataset` names and lists
its three splits. Three data sets share one on-disk layout, the "min" version
of WSJ0-2mix at 8 kHz: a split folder holds a mixture folder and the folders
`s1` and `s2`, and a mixture and its two sources share a file name.

* espeak2mix (`espeak2mix.py`), synthetic speech generated offline.
* WSJ0-2mix (`wav8k/min/{tr,cv,tt}/{mix,s1,s2}/`), which needs the licensed
  WSJ0 corpus.
* Libri2Mix (`Libri2Mix/wav8k/min/{train-100,dev,test}/{mix_clean,s1,s2}/`).

`training_dataset` is a run's batches as a random-access grain `MapDataset`,
one element per step: the order is a function of the seed and the epoch, a
resumed run starts at its step, and each process of a multi-host run reads
only its own rows of every batch.

References:
  Hershey, Chen, Le Roux & Watanabe, `Deep clustering: Discriminative
  embeddings for segmentation and separation
  <https://arxiv.org/abs/1508.04306>`_, 2016 (WSJ0-2mix).

  Cosentino, Pariente, Cornell, Deleforge & Vincent, `LibriMix: An Open-Source
  Dataset for Generalizable Speech Separation
  <https://arxiv.org/abs/2005.11262>`_, 2020.
"""

from collections.abc import Iterator, Sequence
import functools
import os
import pathlib
from typing import NamedTuple

import grain
import jax
import ml_collections
import numpy as np
import soundfile as sf
import tqdm

from examples.flax_separation import espeak2mix
from examples.flax_separation import sharding
from examples.flax_separation import spectral

SPLITS = espeak2mix.SPLITS
DATASETS = ('espeak2mix', 'wsj0-2mix', 'libri2mix')

# Split folders and mixture folder of each layout, tried in this order by
# `load_split`: WSJ0-2mix's (which espeak2mix is written in), then Libri2Mix's.
_LAYOUT_FOLDERS = (
  (espeak2mix.SPLIT_FOLDERS, espeak2mix.MIXTURE_FOLDER),
  ({'train': 'train-100', 'valid': 'dev', 'test': 'test'}, 'mix_clean'),
)

# Batches read ahead of the step, and the threads reading them. A batch is
# read by one thread; reading one at the paper's batch size (25) takes a few
# milliseconds, far below a step, so two threads keep any step fed.
PREFETCH_BATCHES = 4
READ_THREADS = 2


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


class Split(Sequence[Utterance]):
  """A split's mixtures on disk; indexing reads one from disk.

  Attributes:
    mixture_dir: the folder of the mixtures; the sources are in the folders
      `s1` and `s2` beside it.
    names: the mixtures' file names without `.wav`, sorted.
    lengths: int64 `[len(names)]`, samples of each mixture.
  """

  def __init__(
    self, mixture_dir: pathlib.Path, names: Sequence[str], lengths: np.ndarray
  ):
    self.mixture_dir = mixture_dir
    self.names = tuple(names)
    self.lengths = np.asarray(lengths, np.int64)

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, index: int) -> Utterance:
    mixture, sources = self.excerpt(index, 0, int(self.lengths[index]))
    return Utterance(self.names[index], mixture, sources)

  def paths(
    self, index: int
  ) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """The mixture's file and its two sources'."""
    file_name = f'{self.names[index]}.wav'
    return (
      self.mixture_dir / file_name,
      *(
        self.mixture_dir.parent / folder / file_name
        for folder in espeak2mix.SOURCE_FOLDERS
      ),
    )

  def excerpt(
    self, index: int, start: int, num_samples: int
  ) -> tuple[np.ndarray, np.ndarray]:
    """Reads `num_samples` from `start`, zero-padded past the mixture's end.

    Args:
      index: which mixture.
      start: the first sample read.
      num_samples: samples returned.

    Returns:
      `(mixture [num_samples], sources [2, num_samples])`, float32.
    """
    signals = np.zeros((3, num_samples), np.float32)
    for row, path in enumerate(self.paths(index)):
      samples, _ = sf.read(
        path, start=start, frames=num_samples, dtype='float32', always_2d=True
      )
      signals[row, : len(samples)] = samples[:, 0]
    return signals[0], signals[1:]


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
    f'Libri2Mix; looked for {", ".join(looked_for)}'
  )


def _mono_length(path: pathlib.Path) -> int:
  """Samples of a mono `spectral.SAMPLE_RATE` audio file, from its header."""
  try:
    info = sf.info(path)
  except sf.SoundFileError as error:
    raise ValueError(f'{path} is not a readable audio file: {error}') from error
  if info.samplerate != spectral.SAMPLE_RATE:
    raise ValueError(
      f'{path} has a sample rate of {info.samplerate} Hz; expected '
      f'{spectral.SAMPLE_RATE}'
    )
  if info.channels != 1:
    raise ValueError(f'{path} has {info.channels} channels; expected 1')
  return info.frames


def _checked_length(split: Split, index: int) -> int:
  """Checks a mixture and its sources' headers; returns its length."""
  mixture_path, *source_paths = split.paths(index)
  for source_path in source_paths:
    if not source_path.is_file():
      raise FileNotFoundError(
        f'{source_path} is missing; every mixture needs both sources, and '
        f'{mixture_path} exists'
      )
  length = _mono_length(mixture_path)
  for source_path in source_paths:
    source_length = _mono_length(source_path)
    if source_length != length:
      raise ValueError(
        f'{source_path} has {source_length} samples but its mixture '
        f'{mixture_path} has {length}; expected equal lengths'
      )
  return length


def load_split(root: str | os.PathLike, split: str) -> Split:
  """Lists one split of espeak2mix, WSJ0-2mix or Libri2Mix.

  The layout is recognised by its folder names: `{tr,cv,tt}/mix` for
  WSJ0-2mix and espeak2mix, `{train-100,dev,test}/mix_clean` for Libri2Mix,
  each with `s1` and `s2` beside the mixture folder. Only the files' headers
  are read, to check every file before training starts.

  Args:
    root: the directory holding those split folders (`.../wav8k/min`, as
      `espeak2mix.generate` returns), or the one holding `wav8k/min`.
    split: `'train'`, `'valid'` or `'test'`.

  Returns:
    The split, sorted by name.

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
  names = sorted(path.stem for path in mixture_dir.glob('*.wav'))
  if not names:
    raise FileNotFoundError(f'{mixture_dir} holds no .wav files')
  listed = Split(mixture_dir, names, np.zeros(len(names), np.int64))
  listed.lengths[:] = [
    _checked_length(listed, index)
    for index in tqdm.trange(
      len(names), desc=f'checking {split}', unit='mixture', leave=False
    )
  ]
  return listed


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


def _local_batch_size(batch_size: int, process_count: int) -> int:
  """Rows of each batch one process reads."""
  if batch_size % process_count:
    raise ValueError(
      f'batch_size ({batch_size}) must divide by the number of '
      f'processes ({process_count})'
    )
  return batch_size // process_count


def _epoch_plan(
  lengths: np.ndarray, seed: int, epoch: int, excerpt_samples: int
) -> tuple[np.ndarray, np.ndarray]:
  """The mixture and excerpt start of each position of an epoch."""
  rng = np.random.default_rng((seed, epoch))
  order = rng.permutation(len(lengths))
  # Drawn for the whole epoch up front, so that a batch's excerpts do not
  # depend on which batches were read before it.
  offset_fractions = rng.random(len(lengths))
  latest_starts = np.maximum(lengths[order] - excerpt_samples, 0)
  return order, (offset_fractions * (latest_starts + 1)).astype(np.int64)


def training_dataset(
  split: Split,
  *,
  batch_size: int,
  excerpt_samples: int,
  seed: int,
  num_epochs: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.MapDataset:
  """A run's training batches, one element per step, read when indexed.

  Epoch ``e``'s order and excerpt offsets are drawn from
  `np.random.default_rng((seed, e))`; its last, incomplete batch is dropped.
  Each mixture gives one excerpt at a uniformly random offset; mixtures
  shorter than `excerpt_samples` are used whole and zero-padded at the end.
  Element `i` is the same whichever elements were read before it, so
  `dataset[start_step:]` resumes a run. The epoch's plan (a mixture index
  and an offset per position) is all that is held in memory.

  Args:
    split: the training split, as `load_split` returns it.
    batch_size: excerpts per batch, over all processes.
    excerpt_samples: samples per excerpt.
    seed: the run's data seed.
    num_epochs: passes over the split.
    process_index: this process (`jax.process_index()`).
    process_count: processes sharing each batch (`jax.process_count()`);
      process `p` reads rows `[p * b, (p + 1) * b)` of every batch, with
      `b = batch_size // process_count`.

  Returns:
    A `grain.MapDataset` of `(mixture [b, excerpt_samples],
    sources [b, 2, excerpt_samples])` float32 arrays.

  Raises:
    ValueError: if `batch_size` or `excerpt_samples` is below 1, does not
      divide by `process_count`, or the split does not fill one batch.
  """
  num_steps = steps_per_epoch(len(split), batch_size)
  local_batch_size = _local_batch_size(batch_size, process_count)
  if excerpt_samples < 1:
    raise ValueError(
      f'excerpt_samples must be at least 1, got {excerpt_samples}'
    )
  if num_steps == 0:
    raise ValueError(
      f'{len(split)} utterances do not fill one batch of {batch_size}'
    )
  excerpts_per_epoch = num_steps * batch_size
  # Two epochs: the reading threads may straddle an epoch's end.
  plan = functools.lru_cache(maxsize=2)(
    lambda epoch: _epoch_plan(split.lengths, seed, epoch, excerpt_samples)
  )

  def read_excerpt(position_in_run):
    epoch, position = divmod(position_in_run, excerpts_per_epoch)
    order, starts = plan(epoch)
    return split.excerpt(
      int(order[position]), int(starts[position]), excerpt_samples
    )

  return (
    grain.MapDataset.range(num_epochs * excerpts_per_epoch)
    .map(read_excerpt)
    .batch(local_batch_size, drop_remainder=True)[process_index::process_count]
  )


def _prefetched(dataset: grain.MapDataset) -> Iterator:
  """Iterates over `dataset`, reading ahead in background threads."""
  return iter(
    dataset.to_iter_dataset(
      grain.ReadOptions(
        num_threads=READ_THREADS, prefetch_buffer_size=PREFETCH_BATCHES
      )
    )
  )


def excerpt_samples(config: ml_collections.ConfigDict) -> int:
  """Samples in a training excerpt of ``config.excerpt_frames`` frames."""
  return (config.excerpt_frames - 1) * spectral.HOP_LENGTH


def training_stream(
  split: Split,
  config: ml_collections.ConfigDict,
  start_step: int = 0,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields a run's training batches from step ``start_step`` to its end.

  The batches are those of `training_dataset`, read a few steps ahead in
  background threads, so a run resumed at any step sees the same data as one
  that was never interrupted.

  Args:
    split: the training split.
    config: ``batch_size``, ``excerpt_frames`` (STFT frames per excerpt),
      ``seed`` and ``num_epochs``.
    start_step: number of the run's batches to skip.
    process_index: this process, as in `training_dataset`.
    process_count: the number of processes, as in `training_dataset`.

  Returns:
    An iterator of this process's ``(mixture [batch, samples], sources
    [batch, 2, samples])`` float32 rows of each batch.

  Raises:
    ValueError: if ``start_step`` is outside ``[0, steps of the run]``, or
      as `training_dataset` raises.
  """
  dataset = training_dataset(
    split,
    batch_size=config.batch_size,
    excerpt_samples=excerpt_samples(config),
    seed=config.seed,
    num_epochs=config.num_epochs,
    process_index=process_index,
    process_count=process_count,
  )
  if not 0 <= start_step <= len(dataset):
    raise ValueError(
      f'start_step must be in [0, {len(dataset)}], got {start_step}'
    )
  return _prefetched(dataset[start_step:])


class EvaluationBatch(NamedTuple):
  """Mixtures to separate at once, zero-padded to one length.

  Attributes:
    first: the split index of the first of this process's rows.
    utterances: this process's mixtures, in order; fewer than the rows of
      ``mixture`` in the split's last batch.
    mixture: float32 ``[rows, padded_length]``.
  """

  first: int
  utterances: list[Utterance]
  mixture: np.ndarray


def evaluation_batches(
  split: Split,
  batch_size: int,
  padded_length: int,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[EvaluationBatch]:
  """Yields the split in order, in zero-padded batches, read ahead.

  Only the batches ahead of the caller are in memory, so a caller that keeps
  no separated signals evaluates a split of any size.

  Args:
    split: a split, as `load_split` returns it.
    batch_size: mixtures per batch, over all processes; the last batch is
      padded with silent rows.
    padded_length: samples of every row, at least the split's longest.
    process_index: this process, as in `training_dataset`.
    process_count: the number of processes; each reads its own rows.

  Returns:
    An iterator of this process's `EvaluationBatch` of each batch.
  """
  rows = _local_batch_size(batch_size, process_count)

  def read_batch(batch_index):
    first = batch_index * batch_size + process_index * rows
    utterances = [
      split[index] for index in range(first, min(first + rows, len(split)))
    ]
    mixture = np.zeros((rows, padded_length), np.float32)
    for row, utterance in enumerate(utterances):
      mixture[row, : len(utterance.mixture)] = utterance.mixture
    return EvaluationBatch(first, utterances, mixture)

  num_batches = -(-len(split) // batch_size)
  return _prefetched(grain.MapDataset.range(num_batches).map(read_batch))


def load_splits(
  config: ml_collections.ConfigDict, workdir: str | os.PathLike
) -> dict[str, Split]:
  """Lists the data set ``config.dataset`` names, generating espeak2mix first.

  On several hosts espeak2mix is generated once, by process 0, while the
  other processes wait for it; every process calls this.

  Args:
    config: ``dataset``, ``data_dir`` and, for espeak2mix, ``num_train``,
      ``num_valid``, ``num_test`` and ``data_seed``.
    workdir: the run's work directory; espeak2mix is generated under
      ``<workdir>/data`` unless ``config.data_dir`` is set.

  Returns:
    ``{'train': ..., 'valid': ..., 'test': ...}`` splits.

  Raises:
    ValueError: if ``config.dataset`` is unknown, or a real data set has no
      ``config.data_dir``.
  """
  if config.dataset == 'espeak2mix':
    generate = functools.partial(
      espeak2mix.generate,
      config.data_dir or pathlib.Path(workdir) / 'data',
      num_train=config.num_train,
      num_valid=config.num_valid,
      num_test=config.num_test,
      seed=config.data_seed,
    )
    if jax.process_index() == 0:
      generate()
    sharding.sync_processes('input_pipeline: espeak2mix generated')
    root = generate()
  elif config.dataset in DATASETS:
    if not config.data_dir:
      raise ValueError(
        f'config.data_dir must point at the {config.dataset} '
        'copy (the folder holding wav8k/min)'
      )
    root = config.data_dir
  else:
    raise ValueError(
      f'config.dataset must be {", ".join(DATASETS)}, got {config.dataset!r}'
    )
  return {split: load_split(root, split) for split in SPLITS}


def num_training_steps(
  num_utterances: int, config: ml_collections.ConfigDict
) -> int:
  """Steps of a run: ``config.num_epochs`` of full batches."""
  return steps_per_epoch(num_utterances, config.batch_size) * config.num_epochs
