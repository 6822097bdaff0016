"""Checkpoints that survive a kill at any moment.

A run keeps the latest training state (``checkpoints/``) and the model with
the best validation SI-SDRi so far (``best/``), saved one after the other
with orbax, whose save of a step is all or nothing. A run killed between the
two saves had ``best/<step>`` ahead of ``checkpoints/``; every rerun resumed
from the earlier step, found the same step best again and failed with
orbax's ``StepAlreadyExistsError``. Best models past the step a run resumes
from belong to steps it takes again, so they are deleted first, and saved
again when they are reached.
"""

import functools
import pathlib
import shutil
import threading

from flax import nnx
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp

# Best models kept: the one the latest checkpoint refers to, and a newer one
# whose latest checkpoint a kill cut short.
_BEST_KEPT = 2

# Orbax coordinates the steps of a save through signals shared by the whole
# process: two runs of `train.train_runs` saving at once from two threads
# timed out waiting on each other's. Every save and restore holds this lock,
# and a save is finished before the lock is released (so a run stopped by an
# error leaves no save half written).
_ORBAX_LOCK = threading.Lock()


def _holding_orbax_lock(method):
  @functools.wraps(method)
  def locked(*args):
    with _ORBAX_LOCK:
      return method(*args)
  return locked


def _steps(directory: pathlib.Path) -> list[int]:
  """The saved steps under ``directory``, newest first."""
  if not directory.is_dir():
    return []
  return sorted((int(path.name) for path in directory.iterdir()
                 if path.name.isdigit()), reverse=True)


def _prepare(workdir: pathlib.Path) -> None:
  """Deletes the best models past the step a run resumes from."""
  resume_step = max(_steps(workdir / 'checkpoints'), default=0)
  best_dir = workdir / 'best'
  if jax.process_index() == 0:
    for step in _steps(best_dir):
      if step > resume_step:
        shutil.rmtree(best_dir / str(step))
  _sync_processes('checkpointing: steps cleared')


def _sync_processes(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class Checkpoints:
  """The latest training state and the best model of a run, with orbax.

  Made when a run starts: it deletes best models past the step the run
  resumes from (see the module's docstring).
  """

  def __init__(self, workdir):
    workdir = pathlib.Path(workdir).absolute()
    _prepare(workdir)
    self.latest = ocp.CheckpointManager(
        workdir / 'checkpoints', options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True))
    self.best = ocp.CheckpointManager(
        workdir / 'best', options=ocp.CheckpointManagerOptions(
            max_to_keep=_BEST_KEPT, create=True))

  @staticmethod
  def _save(manager, step, args):
    manager.save(step, args=args)
    manager.wait_until_finished()

  @_holding_orbax_lock
  def save(self, step, model, optimizer, progress):
    self._save(self.latest, step, ocp.args.Composite(
        state=ocp.args.StandardSave(nnx.to_pure_dict(
            nnx.state((model, optimizer)))),
        progress=ocp.args.JsonSave(progress)))

  @_holding_orbax_lock
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

  @_holding_orbax_lock
  def save_best(self, step, model):
    self._save(self.best, step, ocp.args.StandardSave(
        nnx.to_pure_dict(nnx.state(model))))

  @_holding_orbax_lock
  def restore_best(self, model):
    """Loads the best model into ``model``."""
    step = self.best.latest_step()
    state = nnx.state(model)
    restored = self.best.restore(
        step, args=ocp.args.StandardRestore(nnx.to_pure_dict(state)))
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
