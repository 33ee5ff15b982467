#!/usr/bin/env bash
# CMD pretraining on NTU RGB+D 120 cross-subject: the paper's recipe
# (BiGRU, MLP head, lr 0.01, batch 64, 451 epochs, lr x0.1 at 351).
# Designed for one GPU. Extra arguments are forwarded: e.g. --resume auto, --device cpu, --data-dir DIR.
# Several GPUs: NPROC=4 bash scripts/pretrain_ntu120_xsub.sh (torchrun; --batch-size stays the global batch).
# Run from the repository root: data from ./data, checkpoints to
#   ./checkpoints/ntu120_cross_subject unless overridden.
set -euo pipefail
PY=${PYTHON:-python}
HERE=$(dirname "$0")
if [ "${NPROC:-1}" -gt 1 ]; then
    LAUNCH=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
else
    LAUNCH=("$PY")
fi
exec "${LAUNCH[@]}" "$HERE/../pretrain_cmd.py" \
    --lr 0.01 \
    --batch-size 64 \
    --teacher-t 0.05 \
    --student-t 0.1 \
    --topk 8192 \
    --mlp \
    --contrast-t 0.07 \
    --contrast-k 16384 \
    --checkpoint-path ./checkpoints/ntu120_cross_subject \
    --schedule 351 \
    --epochs 451 \
    --pre-dataset ntu120 \
    --skeleton-representation seq-based \
    --protocol cross_subject \
    "$@"
