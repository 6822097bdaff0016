"""Set-up that the tests share.

Every test's CPU programs compile with LLVM's optimisations off
(``_skip_llvm_optimisation``). The example's tests
(``tests/test_example_*.py``, and the doctests under ``examples/``) carry
the ``example`` marker, so ``pytest -m "not example"`` runs the library's
tests alone. They share one tiny espeak2mix set (``espeak2mix_dir``). All
tests share one JAX compilation cache, which this process and the commands
the tests start read and write: a program then compiles once in the whole
session, not once per worker or command that runs it. Under pytest-xdist each
worker has a session of its own; the set, the cache and the runs below are
still built once, by the first worker to need them (``_built_once``).
"""

import fcntl
import importlib.util
import os
import pathlib
import shutil

import pytest

_EXAMPLE_PATHS = ('tests/test_example_', 'tests/example_', 'examples/')
# Whether JAX here compiles for the CPU alone: neither libtpu nor a PJRT
# plugin (CUDA, ROCm, ...) is installed. Where one is (``.venv-aot``), the
# flag and the cache below would reach its compiler too.
_CPU_ONLY = not any(map(importlib.util.find_spec, ('libtpu', 'jax_plugins')))


def _skip_llvm_optimisation():
  """Compiles the tests' CPU programs with LLVM's optimisations off.

  The tests' programs are small and each runs a few times: optimising their
  machine code costs more time than it saves. XLA's own passes, which
  decide what is computed, still run, and the tests pass at the default
  level too, at the same tolerances. The commands the tests start inherit
  the flag. A level set in ``XLA_FLAGS`` is kept (XLA's default is 3).
  """
  if not _CPU_ONLY:
    return
  flags = os.environ.get('XLA_FLAGS', '')
  if '--xla_backend_optimization_level' not in flags:
    os.environ['XLA_FLAGS'] = f'{flags} --xla_backend_optimization_level=0'


_skip_llvm_optimisation()


def pytest_collection_modifyitems(config, items):
  root = pathlib.Path(config.rootpath)
  for item in items:
    path = item.path.relative_to(root).as_posix()
    if path.startswith(_EXAMPLE_PATHS):
      item.add_marker(pytest.mark.example)


def _built_once(tmp_path_factory, name, build=None):
  """A directory that ``build(directory)`` fills once for the whole run.

  The workers of pytest-xdist share the run's temporary root: the first to
  get here builds, under a lock; the others wait for it and reuse it.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent
  directory, built = root / name, root / f'{name}.built'
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not built.exists():
      shutil.rmtree(directory, ignore_errors=True)  # A failed build's.
      directory.mkdir()
      if build is not None:
        build(directory)
      built.touch()
  return directory


@pytest.fixture(scope='session', autouse=True)
def _shared_compilation_cache(tmp_path_factory):
  """Turns the run's one compilation cache on, where ``_CPU_ONLY``.

  For this process, from before its first test, and for the commands the
  tests start (through the environment).
  """
  if not _CPU_ONLY:
    return
  import jax

  settings = {
    'jax_compilation_cache_dir': str(
      _built_once(tmp_path_factory, 'compilation_cache')
    ),
    'jax_persistent_cache_min_compile_time_secs': 0,
    'jax_persistent_cache_min_entry_size_bytes': 0,
  }
  for name, value in settings.items():
    os.environ[name.upper()] = str(value)
    jax.config.update(name, value)


@pytest.fixture(scope='session')
def espeak2mix_dir(tmp_path_factory):
  """One tiny espeak2mix set (``example_helpers.ESPEAK2MIX_COUNTS``)."""
  from examples.flax_separation import espeak2mix
  from tests import example_helpers

  return _built_once(
    tmp_path_factory,
    'espeak2mix',
    lambda directory: espeak2mix.generate(
      directory, **example_helpers.ESPEAK2MIX_COUNTS, seed=0
    ),
  )


@pytest.fixture(scope='session')
def straight_run(tmp_path_factory, espeak2mix_dir):
  """The work directory of the tiny run of two epochs, left alone.

  Tests that interrupt, kill or damage the same run compare their results
  and logs with it (``example_helpers.assert_same_run``). It fetches its
  metrics every 5 steps, they every step: the logs must not depend on it.
  """
  from examples.flax_separation import train
  from tests import example_helpers

  config = example_helpers.tiny_config(espeak2mix_dir, 2)
  config.log_every_steps = 5

  def build(workdir):
    train.train_and_evaluate(config, workdir)

  return _built_once(tmp_path_factory, 'straight', build)


@pytest.fixture(scope='session')
def sweep_run(tmp_path_factory, espeak2mix_dir):
  """A 1 loss x 2 percentile sweep of tiny runs, trained in turn in-process.

  Returns:
    ``(config, workdir, table)``: the cells' shared config, the sweep's work
    directory (``mi/p10``, ``mi/p100``) and the table it printed. Its runs
    have the configs of the main job's at the same size.
  """
  from examples.flax_separation import sweep
  from tests import example_helpers

  config = example_helpers.tiny_config(espeak2mix_dir)

  def build(directory):
    table = sweep.run_sweep(
      config, directory / 'workdir', ['mi'], (10.0, 100.0)
    )
    (directory / 'table.md').write_text(table)

  directory = _built_once(tmp_path_factory, 'sweep', build)
  return config, directory / 'workdir', (directory / 'table.md').read_text()
