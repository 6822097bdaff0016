"""Files a kill cannot cut short.

A run may be killed at any moment. A file it rewrites, such as a log trimmed
to the step it resumes from, would lose what it held if the kill came in
the middle of the rewrite; ``write_atomically`` writes it whole or not at
all.
"""

import os
import pathlib


def write_atomically(path: str | os.PathLike, text: str) -> None:
  """Writes ``text`` to ``path`` whole: a kill leaves the old file or this."""
  path = pathlib.Path(path)
  partial = path.with_name(path.name + '.partial')
  partial.write_text(text)
  os.replace(partial, path)
