"""espeak2mix: two-speaker mixtures of synthetic speech, generated offline.

WSJ0-2mix, the data set of the AutoClip experiments, needs the licensed WSJ0
corpus; espeak2mix stands in for it so that the example runs anywhere. It is
synthesised with the espeak-ng synthesiser shipped in the `espeakng-loader`
wheel and written in WSJ0-2mix's "min" layout at 8 kHz, so the input pipeline
reads it as it reads WSJ0-2mix. Its training, validation and test splits use
disjoint voices and disjoint sentences, so the test score measures separation
of unseen speakers saying unseen text, as in WSJ0-2mix.

`generate` writes the set once and finds it on later calls; `draw_recipes`
says what each mixture holds.

References:
  Hershey, Chen, Le Roux & Watanabe, `Deep clustering: Discriminative
  embeddings for segmentation and separation
  <https://arxiv.org/abs/1508.04306>`_, 2016 (WSJ0-2mix).
"""

import ctypes
import importlib.metadata
import io
import json
import multiprocessing
import os
import pathlib
import shutil
from collections.abc import Sequence
from typing import NamedTuple

import espeakng_loader
import numpy as np
import soundfile as sf
import tqdm

from examples.flax_separation import spectral

SPLITS = ('train', 'valid', 'test')
# WSJ0-2mix's "min" layout, which espeak2mix is written in:
# <root>/wav8k/min/<split folder>/{mix,s1,s2}/<name>.wav.
SPLIT_FOLDERS = {'train': 'tr', 'valid': 'cv', 'test': 'tt'}
MIXTURE_FOLDER = 'mix'
SOURCE_FOLDERS = ('s1', 's2')
MANIFEST_NAME = 'espeak2mix.json'

# Bump whenever a change to the generator changes the audio it writes, so that
# sets written by an older version are not mistaken for the current one.
GENERATOR_VERSION = 1

# English accents of espeak-ng; every split uses all of them.
BASE_VOICES = (
  'en',
  'en-us',
  'en-us-nyc',
  'en-029',
  'en-gb-scotland',
  'en-gb-x-rp',
  'en-gb-x-gbclan',
  'en-gb-x-gbcwmd',
)

# Voice variants (timbre: formants, pitch range, synthesis method). A speaker
# is a base voice with a variant, such as `en-us+f3`; the splits have no
# variant in common, so no speaker of one split is heard in another. More
# training variants are not better at the default's size: with all 97 others
# (same validation and test sets), the default network reached 0.39 and
# 0.93 dB validation SI-SDRi after 1,500 steps (p=10, p=100, seed 0),
# against 1.93 and 1.54 dB with these 12.
VOICE_VARIANTS = {
  'train': (
    'm1',
    'm2',
    'm3',
    'm4',
    'm5',
    'f1',
    'f2',
    'f3',
    'klatt',
    'klatt2',
    'croak',
    'whisper',
  ),
  'valid': ('m6', 'f4', 'klatt3'),
  'test': ('m7', 'f5', 'klatt4'),
}

WORDS_PER_MINUTE_RANGE = (130, 220)
PITCH_RANGE = (25, 75)  # espeak-ng's pitch scale: 0 to 100, 50 by default.
RELATIVE_LEVEL_DB_RANGE = (0.0, 5.0)  # As in WSJ0-2mix.

# A sentence is a subject, an action and a circumstance. Each split owns its
# own subjects and actions, so no sentence is shared between splits.
_SUBJECTS = (
  'The old fisherman',
  'My younger sister',
  'A tired nurse',
  'The new teacher',
  'Our neighbour',
  'The tall farmer',
  'A young painter',
  'The quiet student',
  'My grandfather',
  'The busy baker',
  'A careful driver',
  'The night guard',
  'His best friend',
  'The village doctor',
  'A famous singer',
  'The small boy',
  'Her older brother',
  'The school cook',
  'A local carpenter',
  'The shy librarian',
  'The ship captain',
  'My uncle',
  'The team coach',
  'A patient tailor',
  'The kind waiter',
  'Our mail carrier',
  'The young pilot',
  'A retired judge',
  'The hotel clerk',
  'The city mayor',
)
_ACTIONS = (
  'packed a lunch for the trip',
  'wrote a letter to an old friend',
  'fixed the broken garden gate',
  'carried the heavy boxes upstairs',
  'bought fresh bread at the market',
  'lost a silver key near the river',
  'painted the kitchen pale green',
  'read the evening paper aloud',
  'planted tomatoes behind the house',
  'cleaned the windows of the shop',
  'found a wallet on the bus',
  'baked a cake for the party',
  'washed the dishes after dinner',
  'sold the old car to a stranger',
  'watched the boats leave the harbour',
  'swept the dust from the porch',
  'tied the rope to a wooden post',
  'counted the coins in the jar',
  'opened the window wide',
  'hung the wet coats by the fire',
  'mended a hole in the fishing net',
  'called the office about the delay',
  'poured hot tea into blue cups',
  'climbed the hill to see the lake',
  'folded the clean sheets',
  'locked the door of the barn',
  'fed the ducks at the pond',
  'borrowed a ladder from next door',
  'signed the papers at the bank',
  'played a slow tune on the piano',
)
_CIRCUMSTANCES = (
  'before the storm began',
  'on a cold morning',
  'after the long meeting',
  'late on Sunday night',
  'while the children slept',
  'just before noon',
  'during the summer fair',
  'on the first warm day',
  'after the rain stopped',
  'before breakfast',
  'at the end of the week',
  'while the radio played',
)
_SPLIT_PHRASE_SLICES = {
  'train': slice(0, 20),
  'valid': slice(20, 25),
  'test': slice(25, 30),
}

# Each split is written by fresh processes, `_MIXTURES_PER_PROCESS` mixtures
# apiece: espeak-ng keeps state between utterances (its pitch flutter phase),
# so an utterance's samples depend on what the process said before it. Fixed
# chunks make the files independent of the number of cores.
_MIXTURES_PER_PROCESS = 100
_PEAK_LEVEL = 0.9


class SourceRecipe(NamedTuple):
  """What one speaker of an espeak2mix mixture says, and how.

  Attributes:
    voice: espeak-ng voice name, a base voice and a variant (`en-us+f3`).
    text: the sentence spoken.
    words_per_minute: speaking rate.
    pitch: espeak-ng base pitch, 0 to 100.
  """

  voice: str
  text: str
  words_per_minute: int
  pitch: int


class MixtureRecipe(NamedTuple):
  """Everything `generate` needs to write one mixture.

  Attributes:
    name: file name without `.wav`.
    sources: the two speakers, written to `s1` and `s2`.
    relative_level_db: how much louder the first source is than the second.
  """

  name: str
  sources: tuple[SourceRecipe, SourceRecipe]
  relative_level_db: float


class _Espeak:
  """libespeak-ng, loaded through ctypes and set up to return samples."""

  SYNTHESIS_RATE = 22050
  _AUDIO_OUTPUT_SYNCHRONOUS = 2
  _INITIALIZE_DONT_EXIT = 0x8000  # Report errors instead of calling exit().
  _PARAMETER_RATE = 1
  _PARAMETER_PITCH = 3
  _POSITION_CHARACTER = 1
  _CHARS_UTF8 = 1
  _CALLBACK_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
  )

  def __init__(self):
    library = ctypes.CDLL(espeakng_loader.get_library_path())
    library.espeak_Initialize.argtypes = [
      ctypes.c_int,
      ctypes.c_int,
      ctypes.c_char_p,
      ctypes.c_int,
    ]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [
      ctypes.c_int,
      ctypes.c_int,
      ctypes.c_int,
    ]
    library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    library.espeak_Synth.argtypes = [
      ctypes.c_char_p,
      ctypes.c_size_t,
      ctypes.c_uint,
      ctypes.c_int,
      ctypes.c_uint,
      ctypes.c_uint,
      ctypes.c_void_p,
      ctypes.c_void_p,
    ]
    data_path = espeakng_loader.get_data_path()
    sample_rate = library.espeak_Initialize(
      self._AUDIO_OUTPUT_SYNCHRONOUS,
      0,
      data_path.encode(),
      self._INITIALIZE_DONT_EXIT,
    )
    if sample_rate != self.SYNTHESIS_RATE:
      raise RuntimeError(
        f'espeak_Initialize with data at {data_path} returned {sample_rate}; '
        f'expected the sample rate {self.SYNTHESIS_RATE}'
      )
    # espeak_Initialize seeds the noise generator with the time of day.
    library.espeak_ng_SetRandSeed(0)
    self._library = library
    self._chunks = []
    # Kept on the instance: libespeak-ng calls it after this method returns.
    self._callback = self._CALLBACK_TYPE(self._collect)
    library.espeak_SetSynthCallback(self._callback)

  def _collect(self, samples, num_samples, events):
    del events  # Word and sentence positions are not needed.
    if num_samples > 0:
      self._chunks.append(np.ctypeslib.as_array(samples, (num_samples,)).copy())
    return 0  # Continue synthesis.

  def synthesize(self, source: SourceRecipe) -> np.ndarray:
    """Returns the int16 samples of `source` at `SYNTHESIS_RATE`."""
    self._check(
      self._library.espeak_SetVoiceByName(source.voice.encode()),
      f'set voice {source.voice!r}',
    )
    # Rate and pitch persist from one utterance to the next, so both are set
    # for every utterance, after its voice.
    self._check(
      self._library.espeak_SetParameter(
        self._PARAMETER_RATE, source.words_per_minute, 0
      ),
      'set rate',
    )
    self._check(
      self._library.espeak_SetParameter(self._PARAMETER_PITCH, source.pitch, 0),
      'set pitch',
    )
    self._chunks = []
    text = source.text.encode()
    self._check(
      self._library.espeak_Synth(
        text,
        len(text) + 1,
        0,
        self._POSITION_CHARACTER,
        0,
        self._CHARS_UTF8,
        None,
        None,
      ),
      f'synthesize {source.text!r}',
    )
    self._check(self._library.espeak_Synchronize(), 'synchronize')
    return np.concatenate(self._chunks)

  @staticmethod
  def _check(status: int, action: str):
    if status != 0:
      raise RuntimeError(f'espeak-ng failed to {action}: error code {status}')


# libespeak-ng may be initialised once per process. Each worker of
# `generate` synthesises on its one thread.
_espeak_instance = None


def _synthesize(source: SourceRecipe) -> np.ndarray:
  """Says `source` with espeak-ng; returns float64 samples at 8 kHz."""
  global _espeak_instance
  if _espeak_instance is None:
    _espeak_instance = _Espeak()
  samples = _espeak_instance.synthesize(source)
  # Imported here, not at the top: it takes seconds, and every command of
  # the example imports this module but generates no data once it exists.
  import scipy.signal

  # 22050 Hz * 160 / 441 = 8000 Hz.
  return scipy.signal.resample_poly(samples / 32768.0, 160, 441)


def _mix(
  first: np.ndarray, second: np.ndarray, relative_level_db: float
) -> tuple[np.ndarray, np.ndarray]:
  """Mixes two utterances at a relative level, "min" style.

  Args:
    first: samples of the first speaker.
    second: samples of the second speaker.
    relative_level_db: how much louder `first` ends up than `second`.

  Returns:
    `(mixture [T], sources [2, T])`, truncated to the shorter utterance and
    scaled together so that the largest of their peaks is `_PEAK_LEVEL`.
  """
  gains_db = (relative_level_db / 2, -relative_level_db / 2)
  num_samples = min(len(first), len(second))
  sources = np.stack(
    [
      samples[:num_samples] / np.sqrt(np.mean(samples**2)) * 10 ** (gain / 20)
      for samples, gain in zip((first, second), gains_db)
    ]
  )
  mixture = sources.sum(axis=0)
  scale = _PEAK_LEVEL / max(np.abs(mixture).max(), np.abs(sources).max())
  return scale * mixture, scale * sources


def draw_recipes(
  split: str, num_mixtures: int, seed: int
) -> list[MixtureRecipe]:
  """Draws the mixtures of one espeak2mix split.

  Each mixture has two speakers with different voice variants, each saying a
  different sentence at its own rate and pitch; the voices and sentences come
  from the split's own pools.

  Args:
    split: one of `SPLITS`.
    num_mixtures: how many mixtures to draw.
    seed: the data set seed; each split draws from its own stream of it.

  Returns:
    `num_mixtures` recipes named `00000`, `00001`, ...

  Raises:
    ValueError: if `split` is not one of `SPLITS`.
  """
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  rng = np.random.default_rng((seed, SPLITS.index(split)))
  subjects = _SUBJECTS[_SPLIT_PHRASE_SLICES[split]]
  actions = _ACTIONS[_SPLIT_PHRASE_SLICES[split]]
  recipes = []
  for index in range(num_mixtures):
    variants = rng.choice(VOICE_VARIANTS[split], size=2, replace=False)
    speaker_subjects = rng.choice(subjects, size=2, replace=False)
    sources = tuple(
      SourceRecipe(
        voice=f'{rng.choice(BASE_VOICES)}+{variant}',
        text=(f'{subject} {rng.choice(actions)} {rng.choice(_CIRCUMSTANCES)}.'),
        words_per_minute=int(
          rng.integers(WORDS_PER_MINUTE_RANGE[0], WORDS_PER_MINUTE_RANGE[1] + 1)
        ),
        pitch=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
      )
      for variant, subject in zip(variants, speaker_subjects)
    )
    recipes.append(
      MixtureRecipe(
        name=f'{index:05d}',
        sources=sources,
        relative_level_db=float(rng.uniform(*RELATIVE_LEVEL_DB_RANGE)),
      )
    )
  return recipes


def _write_mixtures(task: tuple[pathlib.Path, Sequence[MixtureRecipe]]) -> int:
  """Synthesises `(split_dir, recipes)` into `split_dir`; returns the count."""
  split_dir, recipes = task
  for recipe in recipes:
    first, second = (_synthesize(source) for source in recipe.sources)
    mixture, sources = _mix(first, second, recipe.relative_level_db)
    for folder, samples in zip(
      (MIXTURE_FOLDER, *SOURCE_FOLDERS), (mixture, *sources)
    ):
      # Encoded in memory: libsndfile syncs every file it closes to disk,
      # which takes longer than synthesising it.
      encoded = io.BytesIO()
      sf.write(
        encoded, samples, spectral.SAMPLE_RATE, subtype='PCM_16', format='WAV'
      )
      (split_dir / folder / f'{recipe.name}.wav').write_bytes(
        encoded.getvalue()
      )
  return len(recipes)


def _describe_mismatch(recorded: dict, requested: dict) -> str:
  """Lists the settings in which `recorded` differs from `requested`."""
  return ', '.join(
    f'{key} {recorded.get(key)!r} on disk but {value!r} requested'
    for key, value in requested.items()
    if recorded.get(key) != value
  )


def generate(
  root: str | os.PathLike,
  *,
  num_train: int = 2000,
  num_valid: int = 300,
  num_test: int = 300,
  seed: int = 0,
) -> pathlib.Path:
  """Writes the espeak2mix data set once, and finds it on later calls.

  The set is written in the WSJ0-2mix layout,
  `<root>/wav8k/min/{tr,cv,tt}/{mix,s1,s2}/<name>.wav` (16-bit, 8 kHz), and
  is byte-for-byte a function of the arguments. `<root>/espeak2mix.json`,
  written last, records the settings and every mixture's `MixtureRecipe`.
  A set whose generation was interrupted is generated again; a complete set
  with the same settings is reused as it is.

  The mixtures are synthesised in worker processes, one per core, started by
  the POSIX-only "forkserver" method; the defaults take under a minute on two
  cores and about 300 MB of disk.

  Args:
    root: directory for the data set; created if missing.
    num_train: number of training mixtures.
    num_valid: number of validation mixtures.
    num_test: number of test mixtures.
    seed: seed of every random choice: voices, sentences, rates, pitches and
      levels.

  Returns:
    `<root>/wav8k/min`, the directory `input_pipeline.load_split` takes.

  Raises:
    ValueError: if a count is below 1, or `root` holds a complete espeak2mix
      set with different settings.
    FileExistsError: if `<root>/wav8k/min` holds files that espeak2mix did
      not write.
  """
  num_mixtures = {'train': num_train, 'valid': num_valid, 'test': num_test}
  for split, count in num_mixtures.items():
    if count < 1:
      raise ValueError(f'num_{split} must be at least 1, got {count}')
  root = pathlib.Path(root)
  layout_root = root / 'wav8k' / 'min'
  settings = {
    'generator_version': GENERATOR_VERSION,
    'seed': seed,
    'num_mixtures': num_mixtures,
  }
  manifest_path = root / MANIFEST_NAME
  in_progress_path = root / f'{MANIFEST_NAME}.in-progress'
  if manifest_path.exists():
    recorded = json.loads(manifest_path.read_text())['settings']
    if recorded != settings:
      raise ValueError(
        f'{root} already holds an espeak2mix set with other settings '
        f'({_describe_mismatch(recorded, settings)}); choose another '
        'directory, or delete this one to generate it anew'
      )
    return layout_root
  if in_progress_path.exists():
    # An interrupted generation; everything under layout_root is its output.
    shutil.rmtree(layout_root, ignore_errors=True)
  elif layout_root.exists() and any(layout_root.iterdir()):
    raise FileExistsError(
      f'{layout_root} holds files but {manifest_path} does not exist, so '
      'they are not an espeak2mix set; choose another directory'
    )
  root.mkdir(parents=True, exist_ok=True)
  in_progress_path.write_text(json.dumps(settings))

  recipes = {
    split: draw_recipes(split, count, seed)
    for split, count in num_mixtures.items()
  }
  tasks = []
  for split in SPLITS:
    split_dir = layout_root / SPLIT_FOLDERS[split]
    for folder in (MIXTURE_FOLDER, *SOURCE_FOLDERS):
      (split_dir / folder).mkdir(parents=True, exist_ok=True)
    for start in range(0, len(recipes[split]), _MIXTURES_PER_PROCESS):
      tasks.append(
        (split_dir, recipes[split][start : start + _MIXTURES_PER_PROCESS])
      )
  # Children forked from a server that has imported this module but never
  # started espeak-ng: each starts in the same state, without re-importing.
  context = multiprocessing.get_context('forkserver')
  context.set_forkserver_preload([__name__])
  num_processes = min(len(tasks), os.cpu_count() or 1)
  with context.Pool(num_processes, maxtasksperchild=1) as pool:
    with tqdm.tqdm(
      total=sum(num_mixtures.values()),
      unit='mixture',
      desc=f'espeak2mix into {root}',
    ) as progress:
      for count in pool.imap_unordered(_write_mixtures, tasks):
        progress.update(count)

  _write_manifest(
    manifest_path,
    {
      'settings': settings,
      'espeakng_loader_version': importlib.metadata.version('espeakng-loader'),
      'sample_rate': spectral.SAMPLE_RATE,
      'mixtures': {
        split: [_recipe_to_json(recipe) for recipe in split_recipes]
        for split, split_recipes in recipes.items()
      },
    },
  )
  in_progress_path.unlink()
  return layout_root


def _recipe_to_json(recipe: MixtureRecipe) -> dict:
  """Returns `recipe` as plain dicts and lists, for JSON."""
  return {
    **recipe._asdict(),
    'sources': [source._asdict() for source in recipe.sources],
  }


def _write_manifest(path: pathlib.Path, manifest: dict):
  """Writes `manifest` atomically, so it is either complete or absent."""
  partial_path = path.with_suffix('.json.tmp')
  partial_path.write_text(json.dumps(manifest, indent=1))
  os.replace(partial_path, path)
