# Sourced by scripts/demo and scripts/test: make sure .venv exists and has pollerd installed.
# POLLERD_VENV overrides the location; POLLERD_SKIP_INSTALL=1 skips the pip step (e.g. offline re-runs).
# POLLERD_EXTRAS: the optional dependencies to install with it (scripts/test: "[dev]"; the demo needs none).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POLLERD_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
if [ "${POLLERD_SKIP_INSTALL:-0}" != "1" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT${POLLERD_EXTRAS-}"
fi
