#!/usr/bin/env bash
# The main job in one command, on the built-in synthetic dataset (no download; about 9 minutes on
# 2 CPU cores, faster on a GPU):
#
#   bash scripts/demo.sh
#
# 1. creates or reuses .venv as scripts/test.sh does (unless PYTHON names an interpreter to use),
# 2. generates and prepares the synthetic set (prepare_data.py synthetic, cross-subject split) and draws
#    its first training clip (draw_skeleton.py: an animated GIF and a PNG strip),
# 3. pretrains CMD (pretrain_cmd.py: the released loss, augmentations and SGD; a small BiGRU, or a small
#    ST-GCN with DEMO_ENCODER=stgcn),
# 4. evaluates CMD's encoder and a randomly initialised one (--pretrained none) with linear evaluation
#    and 1-NN, on the joint view and the 3-stream fusion, and the raw coordinates with 1-NN,
# 5. prints one table (also written as summary.json) and where everything is.
#
# Everything goes under runs/demo-<UTC date and time>/ (DEMO_RUN_DIR=path picks another folder, which
# must not exist yet). The steps after data preparation are scripts/cmd_vs_baselines.sh's, shared with
# scripts/nw_ucla.sh. CUDA is used when present, else the CPU. The recipe can be changed through the
# environment (defaults in brackets): DEMO_CLIPS [1500] synthetic clips, DEMO_EPOCHS [45] pretraining
# epochs, DEMO_HIDDEN [64] GRU hidden size, DEMO_QUEUE [512] MoCo queue, DEMO_TOPK [128] CMD top-k,
# DEMO_LR [0.05], DEMO_KEY_MOMENTUM [0.99] MoCo momentum of the key encoders (released: 0.999,
# too slow for 675 steps: the keys would stay close to their random start), DEMO_BATCH [64],
# DEMO_LINEAR_EPOCHS [20], DEMO_SEED [0] (data, initialisation, augmentation); DEMO_QUICK=1 is a tiny
# run (a minute) that checks the machinery, not the method.
#
# DEMO_ENCODER [bigru] picks the encoder of CMD and of the random baseline: bigru (the recipe above) or
# stgcn (about 14 minutes on 2 CPU cores), with its own defaults, measured in docs/model.md ("Synthetic
# check"): DEMO_STGCN_BASE [4] width of blocks 1-4, DEMO_HIDDEN [32] width of the last block,
# DEMO_EPOCHS [10], DEMO_BATCH [32], DEMO_LR [0.1], DEMO_QUEUE [512], DEMO_TOPK [128],
# DEMO_KEY_MOMENTUM [0.99], DEMO_STGCN_INIT [contrastive] (--stgcn-init); the random ST-GCN has the
# same sizes and initialisation. On real skeletons this recipe collapses; DEMO_STGCN_INIT=pytorch
# DEMO_LR=0.01 is the one shown to learn there (docs/model.md, "ST-GCN on NW-UCLA").
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

if [ -n "${DEMO_QUICK:-}" ]; then
    : "${DEMO_CLIPS:=150}" "${DEMO_EPOCHS:=1}" "${DEMO_HIDDEN:=8}" "${DEMO_QUEUE:=32}" "${DEMO_TOPK:=8}"
    : "${DEMO_BATCH:=16}" "${DEMO_LINEAR_EPOCHS:=1}"
fi
ENCODER=${DEMO_ENCODER:-bigru}
case $ENCODER in
    bigru) ;;
    stgcn)
        if [ -n "${DEMO_QUICK:-}" ]; then : "${DEMO_STGCN_BASE:=2}"; fi
        : "${DEMO_STGCN_BASE:=4}" "${DEMO_HIDDEN:=32}" "${DEMO_EPOCHS:=10}" "${DEMO_BATCH:=32}"
        : "${DEMO_LR:=0.1}" "${DEMO_QUEUE:=512}" "${DEMO_TOPK:=128}" "${DEMO_KEY_MOMENTUM:=0.99}"
        : "${DEMO_STGCN_INIT:=contrastive}" ;;
    *)
        echo "demo.sh: DEMO_ENCODER=$ENCODER: expected bigru or stgcn" >&2
        exit 2 ;;
esac
CLIPS=${DEMO_CLIPS:-1500}
EPOCHS=${DEMO_EPOCHS:-45}
HIDDEN=${DEMO_HIDDEN:-64}
QUEUE=${DEMO_QUEUE:-512}
TOPK=${DEMO_TOPK:-128}
LR=${DEMO_LR:-0.05}
KEY_MOMENTUM=${DEMO_KEY_MOMENTUM:-0.99}
BATCH=${DEMO_BATCH:-64}
LINEAR_EPOCHS=${DEMO_LINEAR_EPOCHS:-20}
SEED=${DEMO_SEED:-0}
# the encoder's flags, given to every pretraining and evaluation command (CMD's and the random one's)
if [ "$ENCODER" = stgcn ]; then
    STGCN_BASE=$DEMO_STGCN_BASE
    ENCODER_FLAGS=(--encoder stgcn --stgcn-base-channels "$STGCN_BASE" --hidden-size "$HIDDEN"
                   --stgcn-init "$DEMO_STGCN_INIT")
    ENCODER_NAME="ST-GCN base $STGCN_BASE, last $HIDDEN, $DEMO_STGCN_INIT init"
else
    ENCODER_FLAGS=(--hidden-size "$HIDDEN")
    ENCODER_NAME="BiGRU H=$HIDDEN"
fi

# shellcheck source=scripts/cmd_vs_baselines.sh
source scripts/cmd_vs_baselines.sh
NAME=demo.sh
make_run_folder "${DEMO_RUN_DIR:-}" demo
choose_python
choose_device
DATASET=synthetic
PROTOCOL=cross_subject
DATA=$RUN/data
echo "== run folder $RUN; device $DEVICE ($CORES cores); Python $PY"

stage "generating and preparing $CLIPS synthetic clips" "$RUN/logs/prepare_data.log" \
    "$PY" prepare_data.py synthetic --out "$DATA/synthetic" --benchmarks xsub --num-clips "$CLIPS" \
    --seed "$SEED" --workers "$CORES"
stage "drawing the first training clip" "$RUN/logs/draw_skeleton.log" \
    "$PY" draw_skeleton.py --dataset synthetic --protocol cross_subject --data-dir "$DATA" --clips 0 \
    --out-dir "$RUN/skeleton"

if [ "$ENCODER" = bigru ]; then
    TITLE="synthetic cross-subject, test split; top-1 accuracy (%)"
else
    TITLE="synthetic cross-subject, test split; top-1 accuracy (%); CMD and random encoder: $ENCODER_NAME"
fi
SCHEDULE=$(( EPOCHS * 4 / 5 ))
run_comparison
print_outputs "$started"
echo "  a training clip:    $(echo "$RUN"/skeleton/*.gif) (and a .png strip; draw_skeleton.py draws any clip)"
echo "  data:               $DATA (delete it when done: about $(du -sh "$DATA" | cut -f1))"
