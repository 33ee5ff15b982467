# Shared by the evaluation scripts; sourced as `source "$(dirname "$0")/eval_common.sh" "$@"`, not run.
# Sets PY (see scripts/python.sh) and HERE (the scripts folder); ROOT is the checkpoint root: the first
# argument when it is not a flag (the caller then does `shift "$ROOT_SHIFT"`), else ./checkpoints.
# `run CMD...` prints the command and runs it, unless DRY_RUN is set; `checkpoint_of DIR DATASET` picks
# the checkpoint to evaluate in a run folder.
source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
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

checkpoint_of() {  # DIR DATASET -> DIR/$CHECKPOINT when set, else the newest checkpoint in DIR
    # (checkpoints.find_latest_checkpoint: checkpoint_last.pth.tar, else the highest-numbered one), else
    # DIR/<the schedule's last checkpoint> (what a finished run writes; a dry run prints that name)
    local dir=$1 newest="" code=$(cd "$HERE/.." && pwd)
    if [ -n "${CHECKPOINT:-}" ]; then echo "$dir/$CHECKPOINT"; return; fi
    if [ -d "$dir" ]; then
        newest=$(PYTHONPATH="$code${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c 'import sys
from storage import checkpoints
print(checkpoints.find_latest_checkpoint(sys.argv[1]) or "")' "$dir")
    fi
    if [ -n "$newest" ]; then
        [ "$(basename "$newest")" = "$(default_checkpoint "$2")" ] ||
            echo "note: evaluating the newest checkpoint in $dir, $(basename "$newest")" \
                 "(CHECKPOINT=name picks another)" >&2
        echo "$newest"
    else
        echo "$dir/$(default_checkpoint "$2")"
    fi
}
