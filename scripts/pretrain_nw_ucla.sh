#!/usr/bin/env bash
# CMD pretraining on NW-UCLA cross-view at the paper's sizes, for one GPU (NOT MEASURED YET: no GPU has
# been lent to this project; scripts/nw_ucla.sh is the measured CPU recipe).
#
#   python prepare_data.py nw_ucla --raw-dir path/to/all_sqe
#   bash scripts/pretrain_nw_ucla.sh                  # BiGRU, H = 1024, 3 layers (the paper's encoder)
#   ENCODER=stgcn bash scripts/pretrain_nw_ucla.sh    # ST-GCN base 16, last 256 (the contrastive methods')
#
# The released recipe (scripts/pretrain_recipe.sh: MLP head, InfoNCE T 0.07, teacher T 0.05, student T
# 0.1, SGD, 451 epochs with lr x0.1 at 351), adapted to a training set of 1,020 clips:
# - queue K = 960 (BiGRU, 15 batches of 64) or 896 (ST-GCN, 7 batches of 128): no larger than the
#   training set, so that the queue never holds a clip's own older key as a negative (the released
#   16,384 is 16 times NW-UCLA's training set);
# - top-k half the queue (480 / 448), the released top-k / K ratio (8192 / 16384);
# - 451 epochs of 15 (BiGRU) or 7 (ST-GCN) steps: about 6,800 / 3,200 steps, enough for the released key
#   momentum 0.999 (a time constant of 1,000 steps);
# - ST-GCN: --stgcn-init pytorch and lr 0.01 (batch 128), as in scripts/nw_ucla.sh's measured ST-GCN
#   recipe: the contrastive methods' N(0, 0.02) init with lr 0.1 collapsed the features on NW-UCLA at
#   small widths (docs/model.md, "ST-GCN on NW-UCLA"); at base 16 this is an extrapolation.
# Extra arguments are forwarded and win (e.g. --resume auto, --data-dir DIR, --epochs 200). Checkpoints:
# ./checkpoints/nw_ucla_cross_view[_stgcn]/; evaluate with the existing scripts, e.g.
#   BENCHMARKS=nw_ucla:cross_view CHECKPOINT=checkpoint_0450.pth.tar bash scripts/linear_eval.sh ./checkpoints
set -euo pipefail
source "$(dirname "$0")/pretrain_recipe.sh"
case ${ENCODER:-bigru} in
    bigru)
        pretrain_recipe nw_ucla cross_view 451 351 \
            --contrast-k 960 --topk 480 \
            "$@" ;;
    stgcn)
        pretrain_recipe nw_ucla cross_view 451 351 \
            --encoder stgcn --stgcn-base-channels 16 --hidden-size 256 --stgcn-init pytorch \
            --lr 0.01 --batch-size 128 --contrast-k 896 --topk 448 \
            --checkpoint-path ./checkpoints/nw_ucla_cross_view_stgcn \
            "$@" ;;
    *)
        echo "pretrain_nw_ucla.sh: ENCODER=${ENCODER}: expected bigru or stgcn" >&2
        exit 2 ;;
esac
