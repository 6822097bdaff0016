#!/usr/bin/env bash
# The README's main job: set up .venv, then train the separation example with
# AutoClip (p=10) and without clipping (p=100) and print the comparison.
# Extra arguments go to examples/flax_separation/main.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=$(bash scripts/setup_venv.sh)
"$python" -m examples.flax_separation.main --workdir=workdir "$@"
