"""Tests for examples/flax_separation/espeak2mix.py."""

import itertools
import json

import numpy as np
import pytest
import soundfile as sf

from examples.flax_separation import espeak2mix
from examples.flax_separation import input_pipeline
from examples.flax_separation import spectral
from tests.example_helpers import ESPEAK2MIX_COUNTS

_SPLIT_FOLDERS = {'train': 'tr', 'valid': 'cv', 'test': 'tt'}
_PCM_16_STEP = 1 / 32768


@pytest.fixture
def tiny_set(espeak2mix_dir):
  """The session's espeak2mix set, as `(root, returned layout root)`."""
  return espeak2mix_dir, espeak2mix.generate(
    espeak2mix_dir, **ESPEAK2MIX_COUNTS, seed=0
  )


def _file_contents(directory):
  return {
    str(path.relative_to(directory)): path.read_bytes()
    for path in sorted(directory.rglob('*'))
    if path.is_file()
  }


def _modification_times(directory):
  return {str(path): path.stat().st_mtime_ns for path in directory.rglob('*')}


def test_generator_writes_wsj0_2mix_layout(tiny_set):
  root, layout_root = tiny_set
  assert layout_root == root / 'wav8k' / 'min'
  for split, count in zip(espeak2mix.SPLITS, ESPEAK2MIX_COUNTS.values()):
    for folder in ('mix', 's1', 's2'):
      names = sorted(
        path.name
        for path in (layout_root / _SPLIT_FOLDERS[split] / folder).iterdir()
      )
      assert names == [f'{index:05d}.wav' for index in range(count)]
  assert (root / espeak2mix.MANIFEST_NAME).is_file()


def test_generated_mixture_is_sum_of_sources_at_8khz(tiny_set):
  _, layout_root = tiny_set
  for utterance in input_pipeline.load_split(layout_root, 'train'):
    assert (
      2 * spectral.SAMPLE_RATE
      < len(utterance.mixture)
      < 8 * spectral.SAMPLE_RATE
    )
    np.testing.assert_allclose(
      utterance.sources.sum(axis=0), utterance.mixture, atol=3 * _PCM_16_STEP
    )
    peak = max(np.abs(utterance.mixture).max(), np.abs(utterance.sources).max())
    assert peak == pytest.approx(0.9, abs=_PCM_16_STEP)


def test_generated_sources_differ_in_level_by_at_most_5_db(tiny_set):
  _, layout_root = tiny_set
  for utterance in input_pipeline.load_split(layout_root, 'train'):
    first_rms, second_rms = np.sqrt(np.mean(utterance.sources**2, axis=1))
    # The levels are set on whole utterances, before truncation to the
    # shorter one, so the truncated sources may stray a little further.
    assert abs(20 * np.log10(first_rms / second_rms)) < 7.0


def test_generator_is_deterministic(tiny_set, tmp_path):
  root, _ = tiny_set
  espeak2mix.generate(tmp_path, **ESPEAK2MIX_COUNTS, seed=0)
  assert _file_contents(tmp_path) == _file_contents(root)


def test_generator_depends_on_seed(tiny_set, tmp_path):
  root, layout_root = tiny_set
  other_layout_root = espeak2mix.generate(tmp_path, **ESPEAK2MIX_COUNTS, seed=1)
  mixture_path = 'tr/mix/00000.wav'
  assert (other_layout_root / mixture_path).read_bytes() != (
    layout_root / mixture_path
  ).read_bytes()


def test_generator_reuses_complete_set_without_rewriting(tiny_set):
  root, layout_root = tiny_set
  times_before = _modification_times(root)
  assert espeak2mix.generate(root, **ESPEAK2MIX_COUNTS, seed=0) == layout_root
  assert _modification_times(root) == times_before


@pytest.mark.parametrize(
  'changed_setting, mismatch',
  [
    ({'seed': 1}, 'seed 0 on disk but 1 requested'),
    ({'num_train': 9}, "'train': 8"),
  ],
)
def test_generator_refuses_to_overwrite_set_with_other_settings(
  tiny_set, changed_setting, mismatch
):
  root, _ = tiny_set
  contents_before = _file_contents(root)
  settings = {**ESPEAK2MIX_COUNTS, 'seed': 0, **changed_setting}
  with pytest.raises(ValueError, match='other settings') as error:
    espeak2mix.generate(root, **settings)
  assert str(root) in str(error.value)
  assert mismatch in str(error.value)
  assert _file_contents(root) == contents_before


def test_generator_completes_interrupted_set(tiny_set, tmp_path, monkeypatch):
  root, _ = tiny_set

  def interrupt(*args):
    raise KeyboardInterrupt

  with monkeypatch.context() as patch:
    patch.setattr(espeak2mix, '_write_manifest', interrupt)
    with pytest.raises(KeyboardInterrupt):
      espeak2mix.generate(tmp_path, **ESPEAK2MIX_COUNTS, seed=0)
  assert not (tmp_path / espeak2mix.MANIFEST_NAME).exists()
  layout_root = tmp_path / 'wav8k' / 'min'
  (layout_root / 'tr' / 's2' / '00003.wav').unlink()
  (layout_root / 'tt' / 'mix' / '00001.wav').write_bytes(b'RIFF')

  espeak2mix.generate(tmp_path, **ESPEAK2MIX_COUNTS, seed=0)

  assert _file_contents(tmp_path) == _file_contents(root)


def test_generator_refuses_directory_holding_other_audio(tmp_path):
  foreign_path = tmp_path / 'wav8k' / 'min' / 'tr' / 'mix' / 'foreign.wav'
  foreign_path.parent.mkdir(parents=True)
  sf.write(foreign_path, np.zeros(80), spectral.SAMPLE_RATE)
  with pytest.raises(FileExistsError, match='not an espeak2mix set'):
    espeak2mix.generate(tmp_path, **ESPEAK2MIX_COUNTS)
  assert foreign_path.is_file()


@pytest.mark.parametrize('count_name', ['num_train', 'num_valid', 'num_test'])
def test_generator_rejects_empty_split(tmp_path, count_name):
  with pytest.raises(ValueError, match=f'{count_name} must be at least 1'):
    espeak2mix.generate(tmp_path, **{**ESPEAK2MIX_COUNTS, count_name: 0})


def test_manifest_records_every_mixture_recipe(tiny_set):
  root, _ = tiny_set
  manifest = json.loads((root / espeak2mix.MANIFEST_NAME).read_text())
  assert manifest['settings'] == {
    'generator_version': espeak2mix.GENERATOR_VERSION,
    'seed': 0,
    'num_mixtures': {'train': 8, 'valid': 2, 'test': 2},
  }
  for split, count in zip(espeak2mix.SPLITS, ESPEAK2MIX_COUNTS.values()):
    recorded = [
      (
        mixture['name'],
        [(source['voice'], source['text']) for source in mixture['sources']],
      )
      for mixture in manifest['mixtures'][split]
    ]
    drawn = [
      (recipe.name, [(source.voice, source.text) for source in recipe.sources])
      for recipe in espeak2mix.draw_recipes(split, count, seed=0)
    ]
    assert recorded == drawn


def _recipes_of_default_set():
  return {
    split: espeak2mix.draw_recipes(split, count, seed=0)
    for split, count in zip(espeak2mix.SPLITS, (2000, 300, 300))
  }


def test_splits_share_no_voice_variant_speaker_or_sentence():
  recipes = _recipes_of_default_set()
  sources = {
    split: [source for recipe in split_recipes for source in recipe.sources]
    for split, split_recipes in recipes.items()
  }
  for first, second in itertools.combinations(espeak2mix.SPLITS, 2):
    for attribute in (
      lambda source: source.voice.split('+')[1],
      lambda source: source.voice,
      lambda source: source.text,
    ):
      assert not (
        {attribute(source) for source in sources[first]}
        & {attribute(source) for source in sources[second]}
      )


def test_splits_use_many_speakers_and_sentences():
  for split, split_recipes in _recipes_of_default_set().items():
    sources = [source for recipe in split_recipes for source in recipe.sources]
    num_speakers = len(espeak2mix.BASE_VOICES) * len(
      espeak2mix.VOICE_VARIANTS[split]
    )
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
    espeak2mix.draw_recipes('dev', 1, seed=0)
