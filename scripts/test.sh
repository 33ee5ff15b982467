#!/usr/bin/env bash
# Run the test suite in a project-local virtual environment (.venv), creating it when missing.
# On machines where the CPU build torch==2.13.0 is available locally it is installed first, so that
# requirements.txt (which leaves torch unpinned for GPU users) never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    "$VPY" -m pip install -q torch==2.13.0 || echo "note: torch==2.13.0 not available here; requirements.txt decides"
fi
"$VPY" -m pip install -q -r requirements.txt -r requirements-dev.txt
exec "$VPY" -m pytest "$@"
