#!/usr/bin/env bash
# Linear evaluation (SPEC section 5) of the CMD checkpoints of all five benchmarks of the paper:
# frozen query encoder, new fc head, SGD lr 0.1, momentum 0.9, no weight decay, batch 64, 80 epochs,
# lr x0.1 at 50 and 70, test every 5 epochs (the released recipe).
#
#   bash scripts/linear_eval.sh [CHECKPOINT_ROOT] [extra action_classification.py args...]
#
# CHECKPOINT_ROOT (default ./checkpoints) holds the folders pretrain_cmd.py writes:
# <root>/<dataset>_<protocol>/checkpoint_0450.pth.tar (NTU, 451 epochs) and
# <root>/pku_v2_cross_subject/checkpoint_1000.pth.tar (PKU-MMD II, 1001 epochs); in a folder that holds
# other checkpoints the newest is taken (checkpoint_last.pth.tar, else the highest epoch). Released
# checkpoints work the same way (scripts/download_pretrained.sh puts them there).
# Environment: BENCHMARKS="ntu60:cross_subject ..." picks benchmarks, CHECKPOINT=name.pth.tar forces one
# file name for all, VIEW=joint|motion|bone|all (default joint; all = 3-stream fusion),
# RESULTS=dir (default ./results/linear), PYTHON (default .venv/bin/python, else python3),
# DRY_RUN=1 prints the commands only.
# Extra arguments are forwarded, e.g. --device cpu, --data-dir DIR, -j 8.
set -euo pipefail
source "$(dirname "$0")/eval_common.sh" "$@"   # PY, HERE, ROOT (a first argument that is not a flag), run
shift "$ROOT_SHIFT"
VIEW=${VIEW:-joint}
RESULTS=${RESULTS:-./results/linear}
BENCHMARKS=${BENCHMARKS:-"ntu60:cross_subject ntu60:cross_view ntu120:cross_subject ntu120:cross_setup pku_v2:cross_subject"}

for bench in $BENCHMARKS; do
    dataset=${bench%%:*}
    protocol=${bench##*:}
    ckpt=$(checkpoint_of "$ROOT/${dataset}_${protocol}" "$dataset")
    run "$PY" "$HERE/../action_classification.py" \
        --lr 0.1 --batch-size 64 --epochs 80 --schedule 50 70 --momentum 0.9 --wd 0 --eval-freq 5 \
        --pretrained "$ckpt" \
        --finetune-dataset "$dataset" --protocol "$protocol" \
        --finetune-skeleton-representation graph-based --view "$VIEW" \
        --output "$RESULTS/${dataset}_${protocol}_${VIEW}.json" \
        "$@"
done
