#!/usr/bin/env bash
# CMD pretraining on NTU RGB+D 60 cross-subject: the paper's recipe
# (BiGRU, MLP head, lr 0.01, batch 64, 451 epochs, lr x0.1 at 351).
# Designed for one GPU; the shared flags are in scripts/pretrain_recipe.sh.
# Extra arguments are forwarded and win: e.g. --resume auto, --device cpu, --data-dir DIR.
# Several GPUs: NPROC=4 bash scripts/pretrain_ntu60_xsub.sh (torchrun; --batch-size stays the global batch).
# Run from the repository root: data from ./data, checkpoints to
#   ./checkpoints/ntu60_cross_subject unless overridden.
set -euo pipefail
source "$(dirname "$0")/pretrain_recipe.sh"
pretrain_recipe ntu60 cross_subject 451 351 "$@"
