#!/usr/bin/env bash
# Set up a test environment from scratch and run every check: lint, format, types, tests.
#   ./scripts/test.sh            (CI runs exactly this via .ci/run)
#   ./scripts/test.sh --fast     lint, format, types and the unit tests only
#   ./scripts/test.sh ARGS       any other arguments go to pytest (e.g. -k launch)
# The CPU build of torch goes in first so that deepspeed/bitsandbytes do not pull
# a multi-GB CUDA build; the training stack then installs on top of it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${TUNEBOARD_TEST_VENV:-.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "torch==2.13.0"
"$VENV/bin/pip" install -q -e ".[train,dev]"

# A real OpenSSH server for the launcher's tests (started per test on loopback
# ports) and tmux, which drives the dashboard the way a person does in one test.
missing=""
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v tmux >/dev/null || missing="$missing tmux"
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq $missing >/dev/null
    else
        echo "not installed:$missing (not root): their tests will be skipped" >&2
    fi
fi

export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
if [ "${1:-}" = "--fast" ]; then
    shift
    exec "$VENV/bin/python" -m pytest -q -n 2 tests/unit "$@"
fi
"$VENV/bin/python" -m pytest -q -n 2 "$@"
