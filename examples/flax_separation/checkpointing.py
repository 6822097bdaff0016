"""Checkpoints that survive a kill at any moment, checked before a restore.

A run keeps the latest training state (``checkpoints/``) and the model with
the best validation SI-SDRi so far (``best/``), saved one after the other
with orbax, whose save of a step is all or nothing. Two things went wrong
without this module:

* a run killed between the two saves had ``best/<step>`` ahead of
  ``checkpoints/``; every rerun resumed from the earlier step, found the
  same step best again and failed with orbax's ``StepAlreadyExistsError``.
  Best models past the step a run resumes from belong to steps it takes
  again, so they are deleted first, and saved again when they are reached;
* a file damaged on disk after its save was restored without a word (64
  random bytes written into a data file changed the next step's loss), or
  failed deep inside orbax. After each save, the SHA-256 of every file of the
  step goes into its ``sha256sums.json``, and a step is checked against it
  before it is restored. A damaged latest checkpoint is moved to
  ``<workdir>/damaged/`` and the run resumes from the one before it, which is
  kept for that: the steps from there are taken again, identically, so the
  results do not change. A damaged best model cannot be had again that way
  and stops the run with ``DamagedCheckpointError``.
"""

import hashlib
import itertools
import json
import pathlib
import shutil

from absl import logging
from flax import nnx
import jax
import ml_collections
import orbax.checkpoint as ocp

from examples.flax_separation import sharding
from examples.flax_separation import workdirs

CHECKSUMS_NAME = 'sha256sums.json'
# Latest checkpoints kept: the newest, and the one to fall back to.
_LATEST_KEPT = 2
# Best models kept: enough for the one the older latest checkpoint refers to.
# After that checkpoint's step at most two validations can have found a new
# best before a kill: the newer latest checkpoint's, and one whose latest
# checkpoint the kill cut short.
_BEST_KEPT = 3


class DamagedCheckpointError(RuntimeError):
  """A checkpoint's files do not match the checksums written with them."""


def is_due(
  step: int, config: ml_collections.ConfigDict, steps_per_epoch: int
) -> bool:
  """Whether a run checkpoints after ``step``.

  It does every ``config.checkpoint_every_steps`` and at the end of every
  epoch.
  """
  return (
    step % config.checkpoint_every_steps == 0 or step % steps_per_epoch == 0
  )


def _sha256(path: pathlib.Path) -> str:
  with path.open('rb') as file:
    return hashlib.file_digest(file, 'sha256').hexdigest()


def _write_checksums(step_dir: pathlib.Path) -> None:
  checksums = {
    str(path.relative_to(step_dir)): _sha256(path)
    for path in sorted(step_dir.rglob('*'))
    if path.is_file() and path.name != CHECKSUMS_NAME
  }
  workdirs.write_atomically(
    step_dir / CHECKSUMS_NAME, json.dumps(checksums, indent=1) + '\n'
  )


def find_damage(step_dir: pathlib.Path) -> str | None:
  """Says which file of a saved step does not match its checksum, if any.

  A step without checksums is taken as whole: orbax had finished it (a step
  it did not finish has another name), and the run was killed before the
  checksums were written, or wrote none.

  Args:
    step_dir: a step's directory, e.g. ``<workdir>/checkpoints/6``.

  Returns:
    None, or what is wrong, naming the file.
  """
  checksums_path = step_dir / CHECKSUMS_NAME
  if not checksums_path.exists():
    return None
  try:
    checksums = json.loads(checksums_path.read_text())
  except json.JSONDecodeError:
    return f'{checksums_path} is not JSON'
  for name, checksum in checksums.items():
    path = step_dir / name
    if not path.is_file():
      return f'{path} is missing'
    if _sha256(path) != checksum:
      return f'{path} does not match its checksum, written when it was saved'
  return None


def _steps(directory: pathlib.Path) -> list[int]:
  """The saved steps under ``directory``, newest first."""
  if not directory.is_dir():
    return []
  return sorted(
    (int(path.name) for path in directory.iterdir() if path.name.isdigit()),
    reverse=True,
  )


def _move_aside(
  step_dir: pathlib.Path, damaged_dir: pathlib.Path
) -> pathlib.Path:
  damaged_dir.mkdir(exist_ok=True)
  name = f'{step_dir.parent.name}-{step_dir.name}'
  destination = damaged_dir / name
  for copy in itertools.count(2):
    if not destination.exists():
      break
    destination = damaged_dir / f'{name}-{copy}'
  step_dir.rename(destination)
  return destination


def _prepare(workdir: pathlib.Path) -> None:
  """Picks the step a run resumes from, and clears what lies past it.

  Damaged latest checkpoints newer than the newest whole one are moved to
  ``<workdir>/damaged/``, and best models past it are deleted.

  Raises:
    DamagedCheckpointError: if every latest checkpoint is damaged.
  """
  latest_dir, best_dir = workdir / 'checkpoints', workdir / 'best'
  damaged = {}
  resume_step = 0
  for step in _steps(latest_dir):
    damage = find_damage(latest_dir / str(step))
    if damage is None:
      resume_step = step
      break
    damaged[step] = damage
  else:
    if damaged:
      raise DamagedCheckpointError(
        f'every checkpoint in {latest_dir} is damaged: '
        + '; '.join(
          f'step {step}: {damage}' for step, damage in damaged.items()
        )
        + f'. Move {latest_dir} away to train the run from the start.'
      )
  sharding.sync_processes('checkpointing: steps checked')  # Before any change.
  if jax.process_index() == 0:
    for step, damage in damaged.items():
      destination = _move_aside(latest_dir / str(step), workdir / 'damaged')
      logging.warning(
        'Checkpoint step %d is damaged: %s. Moved to %s; '
        'resuming from step %d.',
        step,
        damage,
        destination,
        resume_step,
      )
    for step in _steps(best_dir):
      if step > resume_step:
        shutil.rmtree(best_dir / str(step))
  sharding.sync_processes('checkpointing: steps cleared')


class Checkpoints:
  """The latest training state and the best model of a run, with orbax.

  Made when a run starts: it moves damaged latest checkpoints aside and
  deletes best models past the step the run resumes from (see the module's
  docstring), so ``restore`` then loads a whole checkpoint.

  Raises:
    DamagedCheckpointError: if every latest checkpoint is damaged.
  """

  def __init__(self, workdir):
    workdir = pathlib.Path(workdir).absolute()
    _prepare(workdir)
    self.latest = ocp.CheckpointManager(
      workdir / 'checkpoints',
      options=ocp.CheckpointManagerOptions(
        max_to_keep=_LATEST_KEPT, create=True
      ),
    )
    self.best = ocp.CheckpointManager(
      workdir / 'best',
      options=ocp.CheckpointManagerOptions(max_to_keep=_BEST_KEPT, create=True),
    )

  @staticmethod
  def _save(manager, step, args):
    manager.save(step, args=args)
    manager.wait_until_finished()
    if jax.process_index() == 0:
      _write_checksums(pathlib.Path(manager.directory) / str(step))

  def save(self, step, model, optimizer, progress):
    self._save(
      self.latest,
      step,
      ocp.args.Composite(
        state=ocp.args.StandardSave(
          nnx.to_pure_dict(nnx.state((model, optimizer)))
        ),
        progress=ocp.args.JsonSave(progress),
      ),
    )

  def restore(self, model, optimizer):
    """Loads the latest state into model and optimizer; returns progress."""
    step = self.latest.latest_step()
    if step is None:
      return None
    state = nnx.state((model, optimizer))
    restored = self.latest.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(nnx.to_pure_dict(state)),
        progress=ocp.args.JsonRestore(),
      ),
    )
    nnx.replace_by_pure_dict(state, restored.state)
    nnx.update((model, optimizer), state)
    return restored.progress

  def save_best(self, step, model):
    self._save(
      self.best, step, ocp.args.StandardSave(nnx.to_pure_dict(nnx.state(model)))
    )

  def restore_best(self, model):
    """Loads the best model into ``model``.

    Raises:
      DamagedCheckpointError: if its files do not match their checksums.
    """
    step = self.best.latest_step()
    damage = find_damage(pathlib.Path(self.best.directory) / str(step))
    if damage is not None:
      raise DamagedCheckpointError(
        f'The best model, saved at step {step}, is damaged: {damage}. '
        'Train the run again in another work directory.'
      )
    state = nnx.state(model)
    restored = self.best.restore(
      step, args=ocp.args.StandardRestore(nnx.to_pure_dict(state))
    )
    nnx.replace_by_pure_dict(state, restored)
    nnx.update(model, state)
