"""Tests for examples/flax_separation/data.py."""

import itertools
import json

import numpy as np
import pytest
import soundfile as sf

from examples.flax_separation import data

_TINY_COUNTS = {'num_train': 4, 'num_valid': 2, 'num_test': 2}
_SPLIT_FOLDERS = {'train': 'tr', 'valid': 'cv', 'test': 'tt'}
_PCM_16_STEP = 1 / 32768


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
  """A tiny espeak2mix set, as `(root, returned layout root)`."""
  root = tmp_path_factory.mktemp('espeak2mix')
  return root, data.generate_espeak2mix(root, **_TINY_COUNTS, seed=0)


def _file_contents(directory):
  return {str(path.relative_to(directory)): path.read_bytes()
          for path in sorted(directory.rglob('*')) if path.is_file()}


def _modification_times(directory):
  return {str(path): path.stat().st_mtime_ns for path in directory.rglob('*')}


def test_generator_writes_wsj0_2mix_layout(tiny_set):
  root, layout_root = tiny_set
  assert layout_root == root / 'wav8k' / 'min'
  for split, count in zip(data.SPLITS, _TINY_COUNTS.values()):
    for folder in ('mix', 's1', 's2'):
      names = sorted(path.name for path in
                     (layout_root / _SPLIT_FOLDERS[split] / folder).iterdir())
      assert names == [f'{index:05d}.wav' for index in range(count)]
  assert (root / data.MANIFEST_NAME).is_file()


def test_generated_mixture_is_sum_of_sources_at_8khz(tiny_set):
  _, layout_root = tiny_set
  for utterance in data.load_split(layout_root, 'train'):
    assert 2 * data.SAMPLE_RATE < len(utterance.mixture) < 8 * data.SAMPLE_RATE
    np.testing.assert_allclose(utterance.sources.sum(axis=0), utterance.mixture,
                               atol=3 * _PCM_16_STEP)
    peak = max(np.abs(utterance.mixture).max(), np.abs(utterance.sources).max())
    assert peak == pytest.approx(0.9, abs=_PCM_16_STEP)


def test_generated_sources_differ_in_level_by_at_most_5_db(tiny_set):
  _, layout_root = tiny_set
  for utterance in data.load_split(layout_root, 'train'):
    first_rms, second_rms = np.sqrt(np.mean(utterance.sources**2, axis=1))
    # The levels are set on whole utterances, before truncation to the
    # shorter one, so the truncated sources may stray a little further.
    assert abs(20 * np.log10(first_rms / second_rms)) < 7.0


def test_generator_is_deterministic(tiny_set, tmp_path):
  root, _ = tiny_set
  data.generate_espeak2mix(tmp_path, **_TINY_COUNTS, seed=0)
  assert _file_contents(tmp_path) == _file_contents(root)


def test_generator_depends_on_seed(tiny_set, tmp_path):
  root, layout_root = tiny_set
  other_layout_root = data.generate_espeak2mix(tmp_path, **_TINY_COUNTS,
                                               seed=1)
  mixture_path = 'tr/mix/00000.wav'
  assert ((other_layout_root / mixture_path).read_bytes()
          != (layout_root / mixture_path).read_bytes())


def test_generator_reuses_complete_set_without_rewriting(tiny_set):
  root, layout_root = tiny_set
  times_before = _modification_times(root)
  assert data.generate_espeak2mix(root, **_TINY_COUNTS, seed=0) == layout_root
  assert _modification_times(root) == times_before


@pytest.mark.parametrize('changed_setting, mismatch', [
    ({'seed': 1}, 'seed 0 on disk but 1 requested'),
    ({'num_train': 5}, "'train': 4"),
])
def test_generator_refuses_to_overwrite_set_with_other_settings(
    tiny_set, changed_setting, mismatch):
  root, _ = tiny_set
  contents_before = _file_contents(root)
  settings = {**_TINY_COUNTS, 'seed': 0, **changed_setting}
  with pytest.raises(ValueError, match='other settings') as error:
    data.generate_espeak2mix(root, **settings)
  assert str(root) in str(error.value)
  assert mismatch in str(error.value)
  assert _file_contents(root) == contents_before


def test_generator_completes_interrupted_set(tiny_set, tmp_path, monkeypatch):
  root, _ = tiny_set

  def interrupt(*args):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(data, '_write_manifest', interrupt)
    with pytest.raises(KeyboardInterrupt):
      data.generate_espeak2mix(tmp_path, **_TINY_COUNTS, seed=0)
  assert not (tmp_path / data.MANIFEST_NAME).exists()
  layout_root = tmp_path / 'wav8k' / 'min'
  (layout_root / 'tr' / 's2' / '00003.wav').unlink()
  (layout_root / 'tt' / 'mix' / '00001.wav').write_bytes(b'RIFF')

  data.generate_espeak2mix(tmp_path, **_TINY_COUNTS, seed=0)

  assert _file_contents(tmp_path) == _file_contents(root)


def test_generator_refuses_directory_holding_other_audio(tmp_path):
  foreign_path = tmp_path / 'wav8k' / 'min' / 'tr' / 'mix' / 'foreign.wav'
  foreign_path.parent.mkdir(parents=True)
  sf.write(foreign_path, np.zeros(80), data.SAMPLE_RATE)
  with pytest.raises(FileExistsError, match='not an espeak2mix set'):
    data.generate_espeak2mix(tmp_path, **_TINY_COUNTS)
  assert foreign_path.is_file()


@pytest.mark.parametrize('count_name', ['num_train', 'num_valid', 'num_test'])
def test_generator_rejects_empty_split(tmp_path, count_name):
  with pytest.raises(ValueError, match=f'{count_name} must be at least 1'):
    data.generate_espeak2mix(tmp_path, **{**_TINY_COUNTS, count_name: 0})


def test_manifest_records_every_mixture_recipe(tiny_set):
  root, _ = tiny_set
  manifest = json.loads((root / data.MANIFEST_NAME).read_text())
  assert manifest['settings'] == {
      'generator_version': data.GENERATOR_VERSION, 'seed': 0,
      'num_mixtures': {'train': 4, 'valid': 2, 'test': 2}}
  for split, count in zip(data.SPLITS, _TINY_COUNTS.values()):
    recorded = [(mixture['name'],
                 [(source['voice'], source['text'])
                  for source in mixture['sources']])
                for mixture in manifest['mixtures'][split]]
    drawn = [(recipe.name,
              [(source.voice, source.text) for source in recipe.sources])
             for recipe in data.espeak2mix_recipes(split, count, seed=0)]
    assert recorded == drawn


def _recipes_of_default_set():
  return {split: data.espeak2mix_recipes(split, count, seed=0)
          for split, count in zip(data.SPLITS, (2000, 300, 300))}


def test_splits_share_no_voice_variant_speaker_or_sentence():
  recipes = _recipes_of_default_set()
  sources = {split: [source for recipe in split_recipes
                     for source in recipe.sources]
             for split, split_recipes in recipes.items()}
  for first, second in itertools.combinations(data.SPLITS, 2):
    for attribute in (lambda source: source.voice.split('+')[1],
                      lambda source: source.voice,
                      lambda source: source.text):
      assert not ({attribute(source) for source in sources[first]}
                  & {attribute(source) for source in sources[second]})


def test_splits_use_many_speakers_and_sentences():
  for split, split_recipes in _recipes_of_default_set().items():
    sources = [source for recipe in split_recipes for source in recipe.sources]
    num_speakers = len(data.BASE_VOICES) * len(data.VOICE_VARIANTS[split])
    assert len({source.voice for source in sources}) == num_speakers
    assert len({source.text for source in sources}) > 200


def test_recipes_mix_different_speakers_saying_different_sentences():
  for split_recipes in _recipes_of_default_set().values():
    for recipe in split_recipes:
      first, second = recipe.sources
      assert first.voice.split('+')[1] != second.voice.split('+')[1]
      assert first.text != second.text
      for source in recipe.sources:
        assert 130 <= source.words_per_minute <= 220
        assert 25 <= source.pitch <= 75
      assert 0 <= recipe.relative_level_db <= 5


def test_recipes_reject_unknown_split():
  with pytest.raises(ValueError, match="'dev'"):
    data.espeak2mix_recipes('dev', 1, seed=0)


def _sine(frequency, num_samples):
  time = np.arange(num_samples) / data.SAMPLE_RATE
  return (0.3 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def _write_split(split_dir, mixture_folder, names, num_samples=400):
  """Writes sine-wave mixtures; returns `{name: (mixture, sources)}`."""
  written = {}
  for index, name in enumerate(names):
    sources = np.stack([_sine(200 + 50 * index, num_samples),
                        _sine(700 + 50 * index, num_samples)])
    mixture = sources.sum(axis=0)
    for folder, samples in zip((mixture_folder, 's1', 's2'),
                               (mixture, *sources)):
      (split_dir / folder).mkdir(parents=True, exist_ok=True)
      sf.write(split_dir / folder / f'{name}.wav', samples, data.SAMPLE_RATE)
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


@pytest.mark.parametrize('split, split_folder', [
    ('train', 'tr'), ('valid', 'cv'), ('test', 'tt')])
def test_load_split_reads_wsj0_2mix_layout(tmp_path, split, split_folder):
  layout_root = tmp_path / 'wav8k' / 'min'
  names = ['011a0101_1.7_20ga010m_-1.7', '01zo030l_0.3_205a010a_-0.3']
  written = _write_split(layout_root / split_folder, 'mix', names)
  for root in (tmp_path, layout_root):
    _assert_loaded_as_written(data.load_split(root, split), written)


@pytest.mark.parametrize('split, split_folder', [
    ('train', 'train-100'), ('valid', 'dev'), ('test', 'test')])
def test_load_split_reads_libri2mix_layout(tmp_path, split, split_folder):
  libri2mix_root = tmp_path / 'Libri2Mix'
  layout_root = libri2mix_root / 'wav8k' / 'min'
  names = ['103-1240-0003_1034-121119-0049', '19-198-0001_26-495-0002']
  written = _write_split(layout_root / split_folder, 'mix_clean', names)
  for root in (libri2mix_root, layout_root):
    _assert_loaded_as_written(data.load_split(root, split), written)


def test_load_split_reads_only_the_requested_split(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['train_a', 'train_b'])
  written = _write_split(tmp_path / 'cv', 'mix', ['valid_a'])
  _assert_loaded_as_written(data.load_split(tmp_path, 'valid'), written)


def test_load_split_rejects_missing_root(tmp_path):
  missing_root = tmp_path / 'nowhere'
  with pytest.raises(FileNotFoundError, match='does not exist') as error:
    data.load_split(missing_root, 'train')
  assert str(missing_root) in str(error.value)


def test_load_split_names_the_folders_it_looked_for(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  with pytest.raises(FileNotFoundError) as error:
    data.load_split(tmp_path, 'test')
  for expected in (tmp_path / 'tt' / 'mix', tmp_path / 'test' / 'mix_clean',
                   tmp_path / 'wav8k' / 'min' / 'tt' / 'mix'):
    assert str(expected) in str(error.value)


def test_load_split_rejects_empty_mixture_folder(tmp_path):
  (tmp_path / 'tr' / 'mix').mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match='no .wav files') as error:
    data.load_split(tmp_path, 'train')
  assert str(tmp_path / 'tr' / 'mix') in str(error.value)


def test_load_split_rejects_unknown_split(tmp_path):
  with pytest.raises(ValueError, match="'dev'"):
    data.load_split(tmp_path, 'dev')


def test_load_split_rejects_mixture_without_second_source(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a', 'b'])
  missing_path = tmp_path / 'tr' / 's2' / 'b.wav'
  missing_path.unlink()
  with pytest.raises(FileNotFoundError) as error:
    data.load_split(tmp_path, 'train')
  assert str(missing_path) in str(error.value)
  assert str(tmp_path / 'tr' / 'mix' / 'b.wav') in str(error.value)


def test_load_split_rejects_wrong_sample_rate(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  wrong_path = tmp_path / 'tr' / 's1' / 'a.wav'
  sf.write(wrong_path, _sine(200, 800), 16000)
  with pytest.raises(ValueError, match='16000 Hz; expected 8000') as error:
    data.load_split(tmp_path, 'train')
  assert str(wrong_path) in str(error.value)


def test_load_split_rejects_source_length_mismatch(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'], num_samples=400)
  short_path = tmp_path / 'tr' / 's2' / 'a.wav'
  sf.write(short_path, _sine(200, 300), data.SAMPLE_RATE)
  with pytest.raises(ValueError, match='300 samples') as error:
    data.load_split(tmp_path, 'train')
  assert str(short_path) in str(error.value)
  assert 'has 400' in str(error.value)


def test_load_split_rejects_non_audio_file(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  text_path = tmp_path / 'tr' / 'mix' / 'a.wav'
  text_path.write_text('not audio')
  with pytest.raises(ValueError, match='not a readable audio file') as error:
    data.load_split(tmp_path, 'train')
  assert str(text_path) in str(error.value)


def test_load_split_rejects_multichannel_file(tmp_path):
  _write_split(tmp_path / 'tr', 'mix', ['a'])
  stereo_path = tmp_path / 'tr' / 'mix' / 'a.wav'
  sf.write(stereo_path, np.zeros((400, 2)), data.SAMPLE_RATE)
  with pytest.raises(ValueError, match='2 channels; expected 1') as error:
    data.load_split(tmp_path, 'train')
  assert str(stereo_path) in str(error.value)


_UTTERANCE_OFFSET = 10_000


def _numbered_utterances(lengths):
  """Utterances whose samples say which utterance and position they are.

  Sample `t` of utterance `i` is `i * _UTTERANCE_OFFSET + t + 1` in the
  mixture, so no sample is zero, the padding value.
  """
  utterances = []
  for index, length in enumerate(lengths):
    mixture = (index * _UTTERANCE_OFFSET + np.arange(length) + 1).astype(
        np.float32)
    utterances.append(data.Utterance(f'u{index}', mixture,
                                     np.stack([mixture, -mixture])))
  return utterances


def _excerpt_origins(mixture_excerpts):
  """Returns `(utterance index, start sample)` of each excerpt."""
  first_values = mixture_excerpts[:, 0].astype(int) - 1
  return [divmod(value, _UTTERANCE_OFFSET) for value in first_values]


def _epoch(utterances, **overrides):
  settings = {'batch_size': 3, 'excerpt_samples': 50, 'seed': 7, 'epoch': 2,
              **overrides}
  return list(data.training_batches(utterances, **settings))


def test_steps_per_epoch_drops_incomplete_batch():
  assert data.steps_per_epoch(10, 3) == 3
  assert data.steps_per_epoch(9, 3) == 3
  assert data.steps_per_epoch(2, 3) == 0


def test_training_batches_have_requested_shapes_and_dtype():
  batches = _epoch(_numbered_utterances([120] * 10))
  assert len(batches) == data.steps_per_epoch(10, 3)
  for mixture, sources in batches:
    assert mixture.shape == (3, 50) and mixture.dtype == np.float32
    assert sources.shape == (3, 2, 50) and sources.dtype == np.float32


def test_training_batches_cut_aligned_excerpts_of_distinct_utterances():
  lengths = [60, 120, 200, 50, 90, 300, 75, 51, 400, 130]
  utterances = _numbered_utterances(lengths)
  batches = _epoch(utterances)
  seen = []
  for mixture, sources in batches:
    for row, (index, start) in enumerate(_excerpt_origins(mixture)):
      assert 0 <= start <= lengths[index] - 50
      expected = utterances[index].mixture[start:start + 50]
      np.testing.assert_array_equal(mixture[row], expected)
      np.testing.assert_array_equal(sources[row], np.stack([expected,
                                                            -expected]))
      seen.append(index)
  assert len(seen) == len(set(seen)) == 9


def test_training_batches_zero_pad_short_utterances_at_the_end():
  lengths = [20, 35, 49, 10, 42, 30]
  utterances = _numbered_utterances(lengths)
  for mixture, sources in _epoch(utterances):
    for row, (index, start) in enumerate(_excerpt_origins(mixture)):
      length = lengths[index]
      assert start == 0
      np.testing.assert_array_equal(mixture[row, :length],
                                    utterances[index].mixture)
      np.testing.assert_array_equal(mixture[row, length:], 0)
      np.testing.assert_array_equal(sources[row, :, length:], 0)
      np.testing.assert_array_equal(sources[row, :, :length],
                                    utterances[index].sources)


def test_training_batches_are_deterministic():
  utterances = _numbered_utterances([60, 120, 200, 50, 90, 300, 75])
  first, second = _epoch(utterances), _epoch(utterances)
  for (mixture_a, sources_a), (mixture_b, sources_b) in zip(first, second):
    np.testing.assert_array_equal(mixture_a, mixture_b)
    np.testing.assert_array_equal(sources_a, sources_b)


def test_training_batches_differ_between_epochs():
  utterances = _numbered_utterances([300] * 12)
  epoch_2 = np.concatenate([mixture for mixture, _ in _epoch(utterances)])
  epoch_3 = np.concatenate([mixture for mixture, _ in _epoch(utterances,
                                                             epoch=3)])
  assert not np.array_equal(epoch_2, epoch_3)


@pytest.mark.parametrize('start_step', [0, 1, 2, 4])
def test_training_batches_resume_with_the_same_later_batches(start_step):
  utterances = _numbered_utterances([60, 120, 200, 50, 90, 300, 75, 51, 400,
                                     130, 64, 99, 150])
  full_epoch = _epoch(utterances)
  resumed = _epoch(utterances, start_step=start_step)
  assert len(resumed) == len(full_epoch) - start_step
  for (mixture, sources), (expected_mixture, expected_sources) in zip(
      resumed, full_epoch[start_step:]):
    np.testing.assert_array_equal(mixture, expected_mixture)
    np.testing.assert_array_equal(sources, expected_sources)


@pytest.mark.parametrize('overrides, message', [
    ({'batch_size': 0}, 'batch_size must be at least 1'),
    ({'excerpt_samples': 0}, 'excerpt_samples must be at least 1'),
    ({'batch_size': 5}, '4 utterances do not fill one batch of 5'),
    ({'start_step': 2}, r'start_step must be in \[0, 1\]'),
    ({'start_step': -1}, r'start_step must be in \[0, 1\]'),
])
def test_training_batches_reject_invalid_arguments(overrides, message):
  utterances = _numbered_utterances([100] * 4)
  with pytest.raises(ValueError, match=message):
    data.training_batches(utterances, **{'batch_size': 3,
                                         'excerpt_samples': 50, 'seed': 0,
                                         'epoch': 0, **overrides})
