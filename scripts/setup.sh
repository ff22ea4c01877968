#!/usr/bin/env bash
# Create .venv and install vaegan with its test extra. Safe to run again (fast when done).
#   TORCH_SPEC  torch/torchvision requirement (default: the pinned, tested pair)
#   PYTHON      interpreter that creates the venv (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing $TORCH_SPEC (large; one time)"
  # shellcheck disable=SC2086
  "${PIP[@]}" install $TORCH_SPEC 2>&1 | { grep -v "^WARNING: Location" || true; }
fi
echo "[setup] installing vaegan and its dependencies"
"${PIP[@]}" install -e ".[test]" 2>&1 | { grep -v "^WARNING: Location" || true; }
.venv/bin/python -c "import torch, vaegan; print(f'[setup] ready: torch {torch.__version__}, vaegan {vaegan.__version__}')"
