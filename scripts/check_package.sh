#!/usr/bin/env bash
# The packaging check .ci/run makes: builds the sdist and the wheel (the
# wheel from the sdist, as `python -m build` does), checks their metadata
# with twine and their contents (the wheel: the package and py.typed only;
# the sdist: LICENSE, README.md, CHANGELOG.md and the tests too), installs
# the wheel into a fresh venv and runs the package's doctests there, from a
# directory outside the repository, so that the installed copy is imported.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools=$(dirname "$(bash "$root/scripts/setup_venv.sh" --docs)")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! "$tools/python" -m build --outdir "$work/dist" "$root" \
    > "$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  exit 1
fi
"$tools/twine" check --strict "$work"/dist/*
"$tools/python" - "$work"/dist/*.whl "$work"/dist/*.tar.gz <<'PYTHON'
import sys
import tarfile
import zipfile

wheel, sdist = sys.argv[1:]
strays = [name for name in zipfile.ZipFile(wheel).namelist()
          if not name.startswith(('autoclip_optax/', 'autoclip_optax-'))]
assert not strays, f'the wheel holds more than the package: {strays}'
assert 'autoclip_optax/py.typed' in zipfile.ZipFile(wheel).namelist()
names = {name.split('/', 1)[-1] for name in tarfile.open(sdist).getnames()}
missing = {'LICENSE', 'README.md', 'CHANGELOG.md', 'pyproject.toml',
           'tests/autoclip_reference.py', 'tests/test_autoclip.py'} - names
assert not missing, f'the sdist lacks {sorted(missing)}'
PYTHON
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/*.whl
cd "$work"
"$work/venv/bin/python" - <<'PYTHON'
import doctest
import importlib
import pathlib
import pkgutil
import sys

import autoclip_optax

location = pathlib.Path(autoclip_optax.__file__)
assert location.is_relative_to(sys.prefix), f'imported {location}'
attempted = 0
for module in pkgutil.iter_modules(autoclip_optax.__path__):
  result = doctest.testmod(
      importlib.import_module(f'autoclip_optax.{module.name}'),
      optionflags=doctest.NORMALIZE_WHITESPACE)
  assert not result.failed, f'{module.name}: {result}'
  attempted += result.attempted
assert attempted, 'no doctest ran'
print(f'installed wheel {autoclip_optax.__version__}: '
      f'{attempted} doctest examples ran, none failed')
PYTHON
