# Shared by the evaluation scripts; sourced as `source "$(dirname "$0")/eval_common.sh" "$@"`, not run.
# Sets PY (PYTHON, default python) and HERE (the scripts folder); ROOT is the checkpoint root: the first
# argument when it is not a flag (the caller then does `shift "$ROOT_SHIFT"`), else ./checkpoints.
# `run CMD...` prints the command and runs it, unless DRY_RUN is set; `default_checkpoint DATASET`
# names the last checkpoint of that benchmark's pretraining schedule.
PY=${PYTHON:-python}
HERE=$(dirname "$0")
ROOT=./checkpoints
ROOT_SHIFT=0
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    ROOT=$1
    ROOT_SHIFT=1
fi

run() {
    echo "+ $*"
    [ -n "${DRY_RUN:-}" ] || "$@"
}

default_checkpoint() {  # the last checkpoint of the released pretraining schedule of that benchmark
    if [ "$1" = pku_v2 ]; then echo checkpoint_1000.pth.tar; else echo checkpoint_0450.pth.tar; fi
}
