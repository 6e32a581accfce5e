#!/usr/bin/env bash
# Create .venv with the pinned stack (requirements.lock) and install hub in it.
# Idempotent: a second run only checks. Needs Python 3.11 (onnx2tf 1.29 pins TF 2.19).
# --test also makes sure the system tools the tests drive are present: gcc/g++ (the
# firmware files are compiled) and Debian's chromium (the HTML report is rendered).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "hub needs Python 3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch==2.13.0 resolves to the CPU build on disk here; the lock pins every other package
# (ethos-u-vela 5.2.0 for --target ethos-u included: a wheel, it changes no other pin).
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
# onnx2torch (hub optimize: ONNX -> trainable nn.Module) requires torchvision only for its NMS and RoiAlign
# converters; the torchvision wheel for torch 2.13 on the index is a CUDA build that cannot load beside the
# CPU torch, so onnx2torch goes in without it (hub.optimize.run stands in for those two converters).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps onnx2torch==1.5.15
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/hub --version
if [ "${1:-}" = "--test" ]; then
  # the dev extras (pytest, transformers for tests/hub_models.py, ...) are pinned in requirements.lock: make sure they import
  HF_HUB_OFFLINE=1 .venv/bin/python -c 'import pytest, hypothesis, sklearn, transformers' \
    || { echo "setup.sh: requirements.lock did not install the test extras" >&2; exit 1; }
  missing=()
  command -v gcc >/dev/null && command -v g++ >/dev/null || missing+=(gcc g++)
  command -v chromium >/dev/null || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "setup.sh: the tests need ${missing[*]}: install them (Debian: sudo apt-get install ${missing[*]})" >&2
      exit 1
    fi
  fi
fi
