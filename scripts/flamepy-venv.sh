#!/usr/bin/env bash
# Makes sure a Python virtual environment with flamepy==0.6.0 and uv exists and prints the path
# of its python interpreter on the last line of stdout.
#
# Why: the flame.v1 compatibility test (proto/tests/flamepy_compat.rs) compares our protobuf
# descriptors and encodings with those shipped in flamepy 0.6.0, so `cargo test` on a fresh clone
# sets itself up through this script. The multi-process Runner tests also give their node agents
# this venv as FLAME_HOME's Python (`bin/uv`, `lib/python<ver>`), hence uv.
#
# The venv lives at ${FLAME_VENV:-<repo root>/.venv}. The script is idempotent: when the venv
# already imports flamepy 0.6.0 it only prints the path. Otherwise it creates the venv with
# `python3 -m venv` (override the interpreter with FLAME_PYTHON3) and runs
# `pip install flamepy==0.6.0 uv`, which needs network access to PyPI (or a configured index).
# Concurrent runs are serialised with flock when it is available. All progress output goes to
# stderr so the last stdout line is always the interpreter path.
set -euo pipefail

readonly FLAMEPY_VERSION="0.6.0"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FLAME_VENV:-$root/.venv}"
python="$venv/bin/python"

ready() {
    [ -x "$python" ] && [ -x "$venv/bin/uv" ] && "$python" - "$FLAMEPY_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import flamepy  # noqa: F401  (the import itself must work)
sys.exit(0 if version("flamepy") == sys.argv[1] else 1)
PY
}

setup() {
    if ready; then
        return 0
    fi
    if [ ! -x "$python" ]; then
        echo "flamepy-venv: creating $venv" >&2
        "${FLAME_PYTHON3:-python3}" -m venv "$venv" >&2
    fi
    echo "flamepy-venv: installing flamepy==$FLAMEPY_VERSION and uv into $venv" >&2
    "$python" -m pip install --disable-pip-version-check --quiet "flamepy==$FLAMEPY_VERSION" uv >&2
    if ! ready; then
        echo "flamepy-venv: $python still cannot import flamepy $FLAMEPY_VERSION" >&2
        return 1
    fi
}

mkdir -p "$venv"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$venv/.flamepy-venv.lock"
    flock 9
fi
setup
echo "$python"
