"""Several runs of ``train.train_and_evaluate``, in processes of their own.

``main.py`` trains one run per percentile and seed, ``sweep.py`` one per
cell of Table 1. On CPU one small run does not keep every core busy, so
``train_runs`` trains ``parallel_runs`` of them at once, each in a process
of its own (started with ``spawn``: a forked JAX is not safe), with its own
model, data order and checkpoints. Nothing is shared between two runs but
the data set, generated here once before any run starts; a run's results do
not depend on how many train beside it (RESULTS.md measures the time).
A finished run, whose ``results.json`` was written with its config, is not
trained again.
"""

import json
import multiprocessing
import pathlib
from collections.abc import Hashable, Iterator, Mapping

import ml_collections

from examples.flax_separation import configs
from examples.flax_separation import input_pipeline
from examples.flax_separation import train

# Settings that do not change a run's results: where its data lies (a moved
# work directory) and how often its loop fetches metrics.
_RESULT_NEUTRAL_SETTINGS = ('data_dir', 'log_every_steps')
# What `input_pipeline.load_splits` reads of a config.
_DATA_SETTINGS = (
  'dataset',
  'data_dir',
  'num_train',
  'num_valid',
  'num_test',
  'data_seed',
)


def finished_results(
  directory: str | pathlib.Path, config: ml_collections.ConfigDict
) -> dict | None:
  """Returns a run's ``results.json`` if it was written with ``config``.

  Settings that do not change the results (``_RESULT_NEUTRAL_SETTINGS``)
  may differ.
  """
  path = pathlib.Path(directory) / 'results.json'
  if not path.exists():
    return None
  try:
    results = json.loads(path.read_text())
  except json.JSONDecodeError:  # Cut short while being written.
    return None

  def identity(settings):
    return {
      key: value
      for key, value in settings.items()
      if key not in _RESULT_NEUTRAL_SETTINGS
    }

  # Compared through JSON, as written (tuples become lists).
  expected = json.loads(json.dumps(config.to_dict()))
  return (
    results
    if identity(results.get('config', {})) == identity(expected)
    else None
  )


def _train_and_evaluate(run):
  key, config, directory, progress_bar_position = run
  return key, train.train_and_evaluate(
    config, directory, progress_bar_position=progress_bar_position
  )


def train_runs(
  runs: Mapping[Hashable, tuple[ml_collections.ConfigDict, pathlib.Path]],
  parallel_runs: int = 1,
) -> Iterator[tuple[Hashable, dict]]:
  """Trains several runs, ``parallel_runs`` at once, skipping finished ones.

  Every config is checked (``configs.validate``) before any data is generated
  or any run trains. With ``parallel_runs`` 1 the runs train in turn in this
  process (as on several hosts, whose processes must take the same steps in
  the same order); otherwise in that many processes.

  Args:
    runs: ``(config, directory)`` of each run, by any key.
    parallel_runs: how many runs train at once.

  Yields:
    ``(key, results)`` of every run, the finished ones first, then each as
    it ends. An error in a run is raised here, and the runs still training
    are stopped (their last checkpoints resume them).

  Raises:
    ValueError: if ``parallel_runs`` is below 1, or a config is bad.
  """
  if parallel_runs < 1:
    raise ValueError(f'parallel_runs must be at least 1, got {parallel_runs}')
  for config, _ in runs.values():
    configs.validate(config)
  to_train = []
  prepared_data = set()
  for key, (config, directory) in runs.items():
    finished = finished_results(directory, config)
    if finished is not None:
      yield key, finished
      continue
    # The runs may share a data set: it is generated here, once.
    # Without a data_dir, espeak2mix goes under the run's own directory.
    data = (
      tuple(config[field] for field in _DATA_SETTINGS),
      None if config.data_dir else directory,
    )
    if data not in prepared_data:
      input_pipeline.load_splits(config, directory)
      prepared_data.add(data)
    to_train.append(key)
  num_processes = min(parallel_runs, len(to_train))
  if num_processes <= 1:
    for key in to_train:
      yield key, train.train_and_evaluate(*runs[key])
    return
  # Leaving the block on an error terminates the processes still training.
  with multiprocessing.get_context('spawn').Pool(num_processes) as pool:
    yield from pool.imap_unordered(
      _train_and_evaluate,
      [
        (key, *runs[key], index % num_processes)
        for index, key in enumerate(to_train)
      ],
    )
    # Every run ended: the processes exit on their own, and run their exit
    # handlers, which release the semaphore of tqdm's lock. Terminated, they
    # would leak it, and the resource tracker would warn at exit.
    pool.close()
    pool.join()
