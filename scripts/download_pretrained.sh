#!/usr/bin/env bash
# The authors' released CMD checkpoints, installed where the evaluation scripts look for them
# (pretrained_models/<dataset>_<protocol>/), checked before they are moved into place.
#
#   bash scripts/download_pretrained.sh [BENCHMARK...]              # all of pretrained_models/manifest.json
#   bash scripts/download_pretrained.sh ntu60_cross_subject --from ~/Downloads/checkpoint_0450.pth.tar
#   bash scripts/download_pretrained.sh --from ~/Downloads/CMD-pretrained.zip   # an archive, by hand
#
# Exit status: 0 installed (or already there), 1 a file failed its check (nothing was replaced),
# 2 unknown benchmark, 3 some source needs a browser (download by hand, then --from PATH).
# Details: python download_pretrained.py --help. Environment: PYTHON (see scripts/python.sh).
set -euo pipefail
source "$(dirname "$0")/python.sh"
exec "$PY" "$(dirname "$0")/../download_pretrained.py" "$@"
