"""One process at a time in a work directory, and files a kill cannot cut.

A run appends to its logs and checkpoints as it goes, so a second run in the
same work directory would interleave with it without a word: two runs of 80
steps left a ``log.jsonl`` of 160 lines, both exiting 0. ``lock`` makes the
second stop at once, naming the first. A run may also be killed at any
moment; a file it rewrites is written whole or not at all
(``write_atomically``), never left half old and half new, and a resumed run
first drops the log lines past its checkpoint (``keep_log_lines_up_to``).
On several hosts the first process writes the logs and results
(``writes_files``); the others compute the same records.
"""

import contextlib
import fcntl
import json
import os
import pathlib
from collections.abc import Iterator
from typing import TextIO

import jax

LOCK_NAME = 'lock'


class WorkdirInUseError(RuntimeError):
  """Another process holds the work directory's lock."""


@contextlib.contextmanager
def lock(workdir: str | os.PathLike) -> Iterator[None]:
  """Holds ``<workdir>/lock`` while the body runs.

  The lock is ``fcntl.flock``'s, which the operating system releases when
  its process ends, however it ends: a run that was killed leaves the file
  but not the lock, and the next run takes it. The file holds the pid of the
  process that last took it, for the error. A directory this process cannot
  write to is not locked: it cannot change it either (a finished run can
  still be read from there). On several hosts only the first process locks;
  the others share its work directory.

  Args:
    workdir: an existing directory.

  Yields:
    Nothing; the lock is released when the body ends.

  Raises:
    WorkdirInUseError: at once, if another process holds the lock.
  """
  path = pathlib.Path(workdir) / LOCK_NAME
  if jax.process_index() != 0 or not os.access(workdir, os.W_OK):
    yield
    return
  with path.open('a+') as file:
    try:
      fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      file.seek(0)
      holder = file.read().strip() or 'unknown'
      raise WorkdirInUseError(
        f'{workdir} is in use by another run, process {holder} (it holds '
        f'{path}); wait for it to end, or choose another work '
        'directory'
      ) from None
    file.truncate(0)
    file.write(f'{os.getpid()}\n')
    file.flush()
    try:
      yield
    finally:
      fcntl.flock(file, fcntl.LOCK_UN)


def write_atomically(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` to ``path`` whole: a kill leaves the old file or this."""
  path = pathlib.Path(path)
  partial = path.with_name(path.name + '.partial')
  partial.write_text(text)
  os.replace(partial, path)


def writes_files() -> bool:
  """Whether this process writes the logs and results (the first does).

  Orbax coordinates the checkpoints of several processes itself.
  """
  return jax.process_index() == 0


def open_log(path: pathlib.Path, mode: str = 'a') -> TextIO:
  """``path`` opened in ``mode``, or a sink unless ``writes_files()``."""
  return path.open(mode) if writes_files() else open(os.devnull, 'w')


def keep_log_lines_up_to(path: pathlib.Path, last_step: int) -> None:
  """Drops the lines of a JSONL log whose ``step`` is past ``last_step``.

  A resumed run takes the steps past its checkpoint again, so its log has
  no repeats. A last line that is not JSON was cut short by a kill while it
  was written (its step is past every checkpoint): it goes too. The log is
  rewritten whole, so a kill here loses nothing.

  Raises:
    ValueError: if a line before the last is not JSON.
  """
  if not writes_files() or not path.exists():
    return
  lines = path.read_text().splitlines()
  kept = []
  for number, line in enumerate(lines, start=1):
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      if number == len(lines):
        break
      raise ValueError(
        f'{path}, line {number}, is not JSON: {line!r}'
      ) from None
    if record['step'] <= last_step:
      kept.append(line + '\n')
  write_atomically(path, ''.join(kept))
