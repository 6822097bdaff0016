"""Markdown tables, as the commands print them and write them to files."""

from collections.abc import Iterable, Sequence


def table(
  header: Sequence[str],
  rows: Iterable[Sequence[object]],
  right_aligned: bool = False,
) -> list[str]:
  """The lines of a Markdown table.

  Args:
    header: the column names.
    rows: the cells of each row, as they are to be shown.
    right_aligned: align every column but the first to the right.

  Returns:
    The header line, the rule and one line per row, without newlines.

  Example:
    >>> print('\\n'.join(table(['run', 'dB'], [['p=10', '2.69']], True)))
    | run | dB |
    |---|---:|
    | p=10 | 2.69 |
  """
  rule = '---:|' if right_aligned else '---|'
  return [
    '| ' + ' | '.join(header) + ' |',
    '|---|' + rule * (len(header) - 1),
    *('| ' + ' | '.join(map(str, row)) + ' |' for row in rows),
  ]
