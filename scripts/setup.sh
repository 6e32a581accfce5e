#!/usr/bin/env bash
# Create .venv with the pinned stack (requirements.lock) and install hub in it.
# Idempotent: a second run only checks. Needs Python 3.11 (onnx2tf 1.29 pins TF 2.19).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "hub needs Python 3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch==2.13.0 resolves to the CPU build on disk here; the lock pins every other package.
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/hub --version
