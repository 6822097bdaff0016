#!/usr/bin/env bash
# Creates .venv at the repository root (once) and installs the project into it
# with the test and example extras. Prints the venv's python on stdout.
# With --floor, creates .venv-floor instead, with the lowest versions of the
# library's dependencies that pyproject.toml declares, for its tests.
# With --aot, creates .venv-aot: the library with the tools that compile for
# TPU and NVIDIA GPU on a machine without them (the aot extra, and the CUDA
# plugin of the same jax version without the CUDA libraries it would pull).
# Run it with JAX_PLATFORMS=cpu: with libtpu installed, JAX looks for a TPU.
# With --docs, creates .venv-docs: the library with the docs extra (Sphinx,
# MyST, the theme, Flax for the recipes), ruff, and the packaging tools
# (build, twine), kept apart from .venv so that none of them moves its pins.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${1:-}" = --docs ]; then
  venv="$root/.venv-docs"
  requirements=(ruff==0.16.4 build twine)
  target="$root[docs]"
elif [ "${1:-}" = --aot ]; then
  venv="$root/.venv-aot"
  requirements=(pytest)
  target="$root[aot]"
elif [ "${1:-}" = --floor ]; then
  venv="$root/.venv-floor"
  requirements=(jax==0.4.30 jaxlib==0.4.30 optax==0.2.4 chex==0.1.87
                numpy==1.26.4 flax==0.10.0 pytest==8.0.0)
  target="$root"
else
  venv="$root/.venv"
  requirements=()
  target="$root[test,examples]"
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet ${requirements[@]+"${requirements[@]}"} -e "$target" >&2
if [ "${1:-}" = --aot ]; then
  jax_version=$("$venv/bin/python" -c 'import jax; print(jax.__version__)')
  "$venv/bin/python" -m pip install --quiet --no-deps \
    "jax-cuda12-plugin==$jax_version" "jax-cuda12-pjrt==$jax_version" >&2
fi
echo "$venv/bin/python"
