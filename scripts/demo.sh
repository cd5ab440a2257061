#!/usr/bin/env bash
# Install tuneboard (core only: no torch needed to plan) and plan a 30B fine-tune on 3×8 A800.
#   ./scripts/demo.sh [any `tuneboard plan` options]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TUNEBOARD_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -e .
if [ "$#" -eq 0 ]; then
    set -- --model 30b --gpus 24xA800
fi
exec "$VENV/bin/tuneboard" plan "$@"
