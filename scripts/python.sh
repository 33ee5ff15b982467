# Sourced by the scripts in scripts/ (not run): sets PY, the Python interpreter they call.
# PYTHON when it is set (an explicit choice wins), else the project's .venv/bin/python when it exists
# (scripts/test.sh and scripts/demo.sh create it), else python3 from PATH.
_project_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x "$_project_root/.venv/bin/python" ]; then
    PY=$_project_root/.venv/bin/python
else
    PY=python3
fi
