"""Tests for examples/flax_separation/input_pipeline.py."""

import ml_collections
import numpy as np
import pytest
import soundfile as sf

from examples.flax_separation import input_pipeline
from examples.flax_separation import spectral

_PCM_16_STEP = 1 / 32768


def _sine(frequency, num_samples):
  time = np.arange(num_samples) / spectral.SAMPLE_RATE
  return (0.3 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def _write_split(split_dir, mixture_folder, names, num_samples=400):
  """Writes sine-wave mixtures; returns `{name: (mixture, sources)}`."""
  written = {}
  for index, name in enumerate(names):
    sources = np.stack(
      [
        _sine(200 + 50 * index, num_samples),
        _sine(700 + 50 * index, num_samples),
      ]
    )
    mixture = sources.sum(axis=0)
    for folder, samples in zip(
      (mixture_folder, 's1', 's2'), (mixture, *sources)
    ):
      (split_dir / folder).mkdir(parents=True, exist_ok=True)
      sf.write(
        split_dir / folder / f'{name}.wav', samples, spectral.SAMPLE_RATE
      )
    written[name] = (mixture, sources)
  return written


def _assert_loaded_as_written(utterances, written):
  assert [utterance.name for utterance in utterances] == sorted(written)
  for utterance in utterances:
    mixture, sources = written[utterance.name]
    assert utterance.mixture.dtype == np.float32
    assert utterance.sources.dtype == np.float32
    assert utterance.sources.shape == sources.shape
    np.testing.assert_allclose(utterance.mixture, mixture, atol=_PCM_16_STEP)
    np.testing.assert_allclose(utterance.sources, sources, atol=_PCM_16_STEP)


@pytest.mark.parametrize(
  'split, split_folder', [('train', 'tr'), ('valid', 'cv'), ('test', 'tt')]
)
def test_load_split_reads_wsj0_2mix_layout(tmp_path, split, split_folder):
  layout_root = tmp_path / 'wav8k' / 'min'
  names = ['011a0101_1.7_20ga010m_-1.7', '01zo030l_0.3_205a010a_-0.3']
  written = _write_split(layout_root / split_folder, 'mix', names)
  for root in (tmp_path, layout_root):
    _assert_loaded_as_written(input_pipeline.load_split(root, split), written)


@pytest.mark.parametrize(
  'split, split_folder',
  [('train', 'train-100'), ('valid', 'dev'), ('test', 'test')],
)
def test_load_split_reads_libri2mix_layout(tmp_path, split, split_folder):
  libri2mix_root = tmp_path / 'Libri2Mix'
  layout_root = libri2mix_root / 'wav8k' / 'min'
  names = ['103-1240-0003_1034-121119-0049', '19-198-0001_26-495-0002']
  written = _write_split(layout_root / split_folder, 'mix_clean', names)
  for root in (libri2mix_root, layout_root):
    _assert_loaded_as_written(input_pipeline.load_split(root, split), written)


def test_load_split_reads_only_the_requested_split(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['train_a', 'train_b'])
  written = _write_split(tmp_path / 'cv', 'mix', ['valid_a'])
  _assert_loaded_as_written(
    input_pipeline.load_split(tmp_path, 'valid'), written
  )


def test_load_split_rejects_missing_root(tmp_path):
  missing_root = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match='does not exist') as error:
    input_pipeline.load_split(missing_root, 'train')
  assert str(missing_root) in str(error.value)


def test_load_split_names_the_folders_it_looked_for(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.load_split(tmp_path, 'test')
  for expected in (
    tmp_path / 'tt' / 'mix',
    tmp_path / 'test' / 'mix_clean',
    tmp_path / 'wav8k' / 'min' / 'tt' / 'mix',
  ):
    assert str(expected) in str(error.value)


def test_load_split_rejects_empty_mixture_folder(tmp_path):
  (tmp_path / 'tr' / 'mix').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='no .wav files') as error:
    input_pipeline.load_split(tmp_path, 'train')
  assert str(tmp_path / 'tr' / 'mix') in str(error.value)


def test_load_split_rejects_unknown_split(tmp_path):
  with pytest.raises(ValueError, match="'dev'"):
    input_pipeline.load_split(tmp_path, 'dev')


def test_load_split_rejects_mixture_without_second_source(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a', 'b'])
  missing_path = tmp_path / 'tr' / 's2' / 'b.wav'
  missing_path.unlink()
  with pytest.raises(FileNotFoundError) as error:
    input_pipeline.load_split(tmp_path, 'train')
  assert str(missing_path) in str(error.value)
  assert str(tmp_path / 'tr' / 'mix' / 'b.wav') in str(error.value)


def test_load_split_rejects_wrong_sample_rate(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  wrong_path = tmp_path / 'tr' / 's1' / 'a.wav'
  sf.write(wrong_path, _sine(200, 800), 16000)
  with pytest.raises(ValueError, match='16000 Hz; expected 8000') as error:
    input_pipeline.load_split(tmp_path, 'train')
  assert str(wrong_path) in str(error.value)


def test_load_split_rejects_source_length_mismatch(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'], num_samples=400)
  short_path = tmp_path / 'tr' / 's2' / 'a.wav'
  sf.write(short_path, _sine(200, 300), spectral.SAMPLE_RATE)
  with pytest.raises(ValueError, match='300 samples') as error:
    input_pipeline.load_split(tmp_path, 'train')
  assert str(short_path) in str(error.value)
  assert 'has 400' in str(error.value)


def test_load_split_rejects_non_audio_file(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  text_path = tmp_path / 'tr' / 'mix' / 'a.wav'
  text_path.write_text('not audio')
  with pytest.raises(ValueError, match='not a readable audio file') as error:
    input_pipeline.load_split(tmp_path, 'train')
  assert str(text_path) in str(error.value)


def test_load_split_rejects_multichannel_file(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  stereo_path = tmp_path / 'tr' / 'mix' / 'a.wav'
  sf.write(stereo_path, np.zeros((400, 2)), spectral.SAMPLE_RATE)
  with pytest.raises(ValueError, match='2 channels; expected 1') as error:
    input_pipeline.load_split(tmp_path, 'train')
  assert str(stereo_path) in str(error.value)


_UTTERANCE_OFFSET = 10_000


def _numbered_split(directory, lengths):
  """Writes mixtures whose samples say which mixture and position they are.

  Sample `t` of mixture `i` is `i * _UTTERANCE_OFFSET + t + 1`, so no sample
  is zero, the padding value; its sources are that and its negation. The
  files are float WAVs, which hold these values exactly.
  """
  for index, length in enumerate(lengths):
    mixture = (index * _UTTERANCE_OFFSET + np.arange(length) + 1).astype(
      np.float32
    )
    for folder, samples in (
      ('mix', mixture),
      ('s1', mixture),
      ('s2', -mixture),
    ):
      (directory / 'tr' / folder).mkdir(parents=True, exist_ok=True)
      sf.write(
        directory / 'tr' / folder / f'u{index:02d}.wav',
        samples,
        spectral.SAMPLE_RATE,
        subtype='FLOAT',
      )
  return input_pipeline.load_split(directory, 'train')


def _excerpt_origins(mixture_excerpts):
  """Returns `(utterance index, start sample)` of each excerpt."""
  first_values = mixture_excerpts[:, 0].astype(int) - 1
  return [divmod(value, _UTTERANCE_OFFSET) for value in first_values]


_SETTINGS = {'batch_size': 3, 'excerpt_samples': 50, 'seed': 7, 'num_epochs': 2}


def _batches(split, **overrides):
  return list(
    input_pipeline.training_dataset(split, **{**_SETTINGS, **overrides})
  )


def _assert_batches_equal(batches, expected_batches):
  assert len(batches) == len(expected_batches)
  for (mixture, sources), (expected_mixture, expected_sources) in zip(
    batches, expected_batches
  ):
    np.testing.assert_array_equal(mixture, expected_mixture)
    np.testing.assert_array_equal(sources, expected_sources)


def _config(**overrides):
  settings = {
    'batch_size': 3,
    'excerpt_frames': 3,
    'seed': 7,
    'num_epochs': 2,
    **overrides,
  }
  return ml_collections.ConfigDict(settings)


def test_steps_per_epoch_drops_incomplete_batch():
  assert input_pipeline.steps_per_epoch(10, 3) == 3
  assert input_pipeline.steps_per_epoch(9, 3) == 3
  assert input_pipeline.steps_per_epoch(2, 3) == 0


def test_split_lists_lengths_and_reads_an_utterance_when_indexed(tmp_path):
  split = _numbered_split(tmp_path, [60, 120])
  assert split.names == ('u00', 'u01')
  np.testing.assert_array_equal(split.lengths, [60, 120])
  utterance = split[1]
  np.testing.assert_array_equal(
    utterance.mixture, _UTTERANCE_OFFSET + np.arange(120) + 1
  )
  np.testing.assert_array_equal(
    utterance.sources, [utterance.mixture, -utterance.mixture]
  )


def test_training_batches_have_requested_shapes_and_dtype(tmp_path):
  batches = _batches(_numbered_split(tmp_path, [120] * 10))
  assert len(batches) == 2 * input_pipeline.steps_per_epoch(10, 3)
  for mixture, sources in batches:
    assert mixture.shape == (3, 50) and mixture.dtype == np.float32
    assert sources.shape == (3, 2, 50) and sources.dtype == np.float32


def test_training_batches_cut_aligned_excerpts_of_distinct_utterances(tmp_path):
  lengths = [60, 120, 200, 50, 90, 300, 75, 51, 400, 130]
  split = _numbered_split(tmp_path, lengths)
  for epoch in _batches(split)[:3], _batches(split)[3:]:
    seen = []
    for mixture, sources in epoch:
      for row, (index, start) in enumerate(_excerpt_origins(mixture)):
        assert 0 <= start <= lengths[index] - 50
        expected = split[index].mixture[start : start + 50]
        np.testing.assert_array_equal(mixture[row], expected)
        np.testing.assert_array_equal(sources[row], [expected, -expected])
        seen.append(index)
    assert len(seen) == len(set(seen)) == 9


def test_training_batches_follow_the_order_drawn_from_seed_and_epoch(tmp_path):
  # The order of the runs in the README and RESULTS.md: a permutation from
  # np.random.default_rng((seed, epoch)), then one offset fraction each.
  lengths = [60, 120, 200, 50, 90, 300, 75]
  split = _numbered_split(tmp_path, lengths)
  origins = [
    origin
    for mixture, _ in _batches(split)
    for origin in _excerpt_origins(mixture)
  ]
  for epoch in range(2):
    rng = np.random.default_rng((7, epoch))
    order = rng.permutation(len(lengths))
    starts = [
      int(fraction * (lengths[index] - 50 + 1))
      for index, fraction in zip(order, rng.random(len(lengths)))
    ]
    assert origins[6 * epoch : 6 * (epoch + 1)] == list(
      zip(order[:6], starts[:6])
    )


def test_training_batches_zero_pad_short_utterances_at_the_end(tmp_path):
  lengths = [20, 35, 49, 10, 42, 30]
  split = _numbered_split(tmp_path, lengths)
  for mixture, sources in _batches(split):
    for row, (index, start) in enumerate(_excerpt_origins(mixture)):
      length = lengths[index]
      assert start == 0
      np.testing.assert_array_equal(mixture[row, :length], split[index].mixture)
      np.testing.assert_array_equal(mixture[row, length:], 0)
      np.testing.assert_array_equal(sources[row, :, length:], 0)
      np.testing.assert_array_equal(
        sources[row, :, :length], split[index].sources
      )


def test_training_batches_are_deterministic(tmp_path):
  split = _numbered_split(tmp_path, [60, 120, 200, 50, 90, 300, 75])
  _assert_batches_equal(_batches(split), _batches(split))


def test_training_batches_differ_between_epochs(tmp_path):
  split = _numbered_split(tmp_path, [300] * 12)
  epoch_0, epoch_1 = np.split(
    np.concatenate([mixture for mixture, _ in _batches(split)]), 2
  )
  assert not np.array_equal(epoch_0, epoch_1)


@pytest.mark.parametrize('start_step', [0, 1, 4, 7, 8])
def test_training_stream_resumes_with_the_same_later_batches(
  tmp_path, start_step
):
  split = _numbered_split(tmp_path, [200] * 13)
  config = _config(batch_size=3, num_epochs=2)
  full_run = list(input_pipeline.training_stream(split, config))
  assert len(full_run) == 8
  _assert_batches_equal(
    list(input_pipeline.training_stream(split, config, start_step)),
    full_run[start_step:],
  )


def test_each_process_reads_its_own_rows_of_every_batch(tmp_path):
  split = _numbered_split(tmp_path, [60, 120, 200, 50, 90, 300, 75, 51, 400])
  whole = _batches(split, batch_size=4)
  shares = [
    _batches(split, batch_size=4, process_index=index, process_count=2)
    for index in range(2)
  ]
  _assert_batches_equal(
    [
      (
        np.concatenate([first[0], second[0]]),
        np.concatenate([first[1], second[1]]),
      )
      for first, second in zip(*shares)
    ],
    whole,
  )


@pytest.mark.parametrize(
  'overrides, message',
  [
    ({'batch_size': 0}, 'batch_size must be at least 1'),
    ({'excerpt_samples': 0}, 'excerpt_samples must be at least 1'),
    ({'batch_size': 5}, '4 utterances do not fill one batch of 5'),
    (
      {'process_count': 2},
      r'batch_size \(3\) must divide by the number of '
      r'processes \(2\)',
    ),
  ],
)
def test_training_dataset_rejects_invalid_arguments(
  tmp_path, overrides, message
):
  split = _numbered_split(tmp_path, [100] * 4)
  with pytest.raises(ValueError, match=message):
    input_pipeline.training_dataset(split, **{**_SETTINGS, **overrides})


@pytest.mark.parametrize('start_step', [-1, 3])
def test_training_stream_rejects_a_step_outside_the_run(tmp_path, start_step):
  split = _numbered_split(tmp_path, [100] * 4)
  with pytest.raises(ValueError, match=r'start_step must be in \[0, 2\]'):
    input_pipeline.training_stream(split, _config(), start_step)


@pytest.mark.parametrize('process_count', [1, 2])
def test_evaluation_batches_cover_the_split_in_order_zero_padded(
  tmp_path, process_count
):
  lengths = [60, 120, 200, 50, 90]
  split = _numbered_split(tmp_path, lengths)
  seen = []
  for process_index in range(process_count):
    for batch in input_pipeline.evaluation_batches(
      split, 4, 256, process_index=process_index, process_count=process_count
    ):
      assert batch.mixture.shape == (4 // process_count, 256)
      for row, utterance in enumerate(batch.utterances):
        index = batch.first + row
        assert utterance.name == split.names[index]
        length = lengths[index]
        np.testing.assert_array_equal(
          batch.mixture[row, :length], utterance.mixture
        )
        np.testing.assert_array_equal(batch.mixture[row, length:], 0)
        seen.append(index)
      np.testing.assert_array_equal(batch.mixture[len(batch.utterances) :], 0)
  assert sorted(seen) == list(range(len(lengths)))
