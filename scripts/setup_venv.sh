#!/usr/bin/env bash
# Creates .venv at the repository root (once) and installs the project into it
# with the test and example extras. Prints the venv's python on stdout.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet -e "$root[test,examples]" >&2
echo "$venv/bin/python"
