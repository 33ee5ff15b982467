#!/usr/bin/env bash
# Transfer learning (SPEC section 5): fine-tune the whole network, pretrained on NTU-60 or NTU-120
# cross-subject, on PKU-MMD II cross-subject (joint view, model in train mode).
#
#   bash scripts/transfer_pku2.sh [CHECKPOINT_ROOT] [extra action_classification.py args...]
#
# Reads <root>/ntu60_cross_subject/checkpoint_0450.pth.tar and <root>/ntu120_cross_subject/checkpoint_0450.pth.tar.
# lr 0.01 as the semi-supervised runs, batch 64, 80 epochs, lr x0.1 at 50 and 70: SPEC.md does not
# state the released transfer schedule; override with --lr/--epochs/--schedule.
# Environment: SOURCES (default "ntu60 ntu120"), CHECKPOINT, RESULTS (default ./results/transfer),
# SEED (default 1), PYTHON, DRY_RUN=1 (print the commands only).
set -euo pipefail
source "$(dirname "$0")/eval_common.sh" "$@"   # PY, HERE, ROOT (a first argument that is not a flag), run
shift "$ROOT_SHIFT"
RESULTS=${RESULTS:-./results/transfer}
SOURCES=${SOURCES:-"ntu60 ntu120"}

for source in $SOURCES; do
    ckpt=$(checkpoint_of "$ROOT/${source}_cross_subject" "$source")
    run "$PY" "$HERE/../action_classification.py" --finetune \
        --lr 0.01 --batch-size 64 --epochs 80 --schedule 50 70 --momentum 0.9 --wd 0 --eval-freq 5 \
        --seed "${SEED:-1}" \
        --pretrained "$ckpt" --finetune-dataset pku_v2 --protocol cross_subject \
        --finetune-skeleton-representation graph-based --view joint \
        --output "$RESULTS/${source}_xsub_to_pku_v2_xsub.json" \
        "$@"
done
