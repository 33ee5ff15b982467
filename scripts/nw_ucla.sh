#!/usr/bin/env bash
# CMD on real skeletons in one command: NW-UCLA (Northwestern-UCLA Multiview Action3D, 1,484 clips,
# 10 actions, 20-joint Kinect v1 skeletons), cross-view (views 1 and 2 train, 1,020 clips; view 3 tests,
# 464 clips). About 21 minutes on 2 CPU cores (BiGRU; docs/results.md gives the measured times).
#
#   NW_UCLA_DIR=path/to/all_sqe bash scripts/nw_ucla.sh               # BiGRU
#   NW_UCLA_DIR=path/to/all_sqe ENCODER=stgcn bash scripts/nw_ucla.sh  # ST-GCN
#
# 1. creates or reuses .venv as scripts/test.sh does (unless PYTHON names an interpreter to use),
# 2. prepares the data (prepare_data.py nw_ucla: the JSON files checked, pre-normalised, the cross-view
#    split) into the run folder,
# 3. pretrains CMD (the released loss, augmentations and SGD; the CPU recipe below),
# 4. evaluates CMD's encoder, a randomly initialised encoder of the same sizes (BatchNorm statistics
#    estimated on the training clips) and the raw coordinates, with linear evaluation and 1-NN, on the
#    joint view and the 3-stream fusion (scripts/cmd_vs_baselines.sh, shared with scripts/demo.sh),
# 5. prints one table (also written as summary.json).
# Three seeds' summaries give the mean and spread: python scripts/comparison_table.py --runs R*/summary.json
#
# NW_UCLA_DIR [data/raw/NW-UCLA/all_sqe] the folder of aAA_sSS_eEE_vVV.json files (where to get it:
# docs/data.md). Everything goes under runs/nw_ucla-<encoder>-<UTC date and time>/ (NW_UCLA_RUN_DIR=path
# picks another folder, which must not exist yet). CUDA is used when present, else the CPU. The recipe can
# be changed through the environment (defaults in brackets; first BiGRU, then ST-GCN): SEED [0] (also
# the initialisation of the random encoder and the linear heads), EPOCHS [bigru 100, stgcn 50] pretraining
# epochs (31 steps each at batch 32, 15 at 64), HIDDEN [128, 32] GRU hidden size / last ST-GCN width, STGCN_BASE [-, 4] width of
# ST-GCN blocks 1-4, STGCN_INIT [-, pytorch] --stgcn-init (the contrastive methods' N(0, 0.02) collapses
# here: docs/model.md, "ST-GCN on NW-UCLA"), QUEUE [512] MoCo queue (at most the training set: a larger one holds each clip's own
# older keys as negatives), TOPK [128] CMD top-k, LR [0.05, 0.01], KEY_MOMENTUM [0.99] MoCo momentum of the
# key encoders (the released 0.999 leaves them near their random start in 1,500 steps), BATCH [bigru 32, stgcn 64],
# LINEAR_EPOCHS [30], WINDOW [32] frames per clip (pretraining and every evaluation),
# AUG_ROTATE [0] degrees of random 3-D rotation, AUG_NOISE [0] joint-noise standard deviation, AUG_SHEAR [1]
# shear magnitude, AUG_CORRUPT_PROB [0] joint-corruption probability (the last four: the
# pretraining views' --aug-* flags, docs/differences.md), ALIGN_FRAMES [bigru all, stgcn first] where the pre-normalisation's
# rotations come from (first = frame 0 as released, all = the clip's mean spine and shoulder vectors:
# prepare_data.py nw_ucla --align-frames), EXTRA_FLAGS [] more pretrain_cmd.py flags.
# SPLIT [test]: test = the cross-view protocol above; val = the validation protocol (view 1 trains, view 2
# validates, view 3 is never read: protocol cross_view_val), where recipes are chosen (docs/results.md).
# The GPU recipe at the paper's sizes is scripts/pretrain_nw_ucla.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

ENCODER=${ENCODER:-bigru}
case $ENCODER in
    bigru)      # the recipe chosen on the validation protocol (docs/results.md): 32 frames, no joint
                # corruption, batch 32, the pre-normalisation's rotations from the whole clip
        : "${EPOCHS:=100}" "${HIDDEN:=128}" "${LR:=0.05}" "${BATCH:=32}" "${ALIGN_FRAMES:=all}" ;;
    stgcn)      # chosen on the validation protocol (docs/results.md): 32 frames, no joint corruption
        : "${EPOCHS:=50}" "${HIDDEN:=32}" "${STGCN_BASE:=4}" "${STGCN_INIT:=pytorch}" "${LR:=0.01}" ;;
    *)
        echo "nw_ucla.sh: ENCODER=$ENCODER: expected bigru or stgcn" >&2
        exit 2 ;;
esac
QUEUE=${QUEUE:-512}
TOPK=${TOPK:-128}
KEY_MOMENTUM=${KEY_MOMENTUM:-0.99}
WINDOW=${WINDOW:-32}                # both recipes (chosen on the validation protocol)
SPLIT=${SPLIT:-test}
ALIGN_FRAMES=${ALIGN_FRAMES:-first}
AUG_ROTATE=${AUG_ROTATE:-0}
AUG_NOISE=${AUG_NOISE:-0}
AUG_SHEAR=${AUG_SHEAR:-1}
AUG_CORRUPT_PROB=${AUG_CORRUPT_PROB:-0}
PRETRAIN_EXTRA=(--aug-rotate "$AUG_ROTATE" --aug-noise "$AUG_NOISE" --aug-shear "$AUG_SHEAR"
                --aug-corrupt-prob "$AUG_CORRUPT_PROB" ${EXTRA_FLAGS:-})
BATCH=${BATCH:-64}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-30}
SEED=${SEED:-0}
NW_UCLA_DIR=${NW_UCLA_DIR:-data/raw/NW-UCLA/all_sqe}
if [ "$ENCODER" = stgcn ]; then
    ENCODER_FLAGS=(--encoder stgcn --stgcn-base-channels "$STGCN_BASE" --hidden-size "$HIDDEN"
                   --stgcn-init "$STGCN_INIT")
    ENCODER_NAME="ST-GCN base $STGCN_BASE, last $HIDDEN, $STGCN_INIT init"
else
    ENCODER_FLAGS=(--hidden-size "$HIDDEN")
    ENCODER_NAME="BiGRU H=$HIDDEN"
fi

if [ ! -d "$NW_UCLA_DIR" ] || ! compgen -G "$NW_UCLA_DIR/a*_s*_e*_v*.json" >/dev/null; then
    cat >&2 <<EOF
nw_ucla.sh: NW_UCLA_DIR=$NW_UCLA_DIR holds no NW-UCLA clips (aAA_sSS_eEE_vVV.json).
  The skeletons are public: all_sqe.zip, linked from the data instructions of CTR-GCN
  (https://github.com/Uason-Chen/CTR-GCN#data-preparation; https://www.dropbox.com/s/10pcm4pksjy6mkq/all_sqe.zip).
  Unzip it and run: NW_UCLA_DIR=path/to/all_sqe bash scripts/nw_ucla.sh  (docs/data.md, "NW-UCLA")
EOF
    exit 2
fi

# shellcheck source=scripts/cmd_vs_baselines.sh
source scripts/cmd_vs_baselines.sh
NAME=nw_ucla.sh
make_run_folder "${NW_UCLA_RUN_DIR:-}" "nw_ucla-$ENCODER"
choose_python
choose_device
DATASET=nw_ucla
case $SPLIT in
    test) PROTOCOL=cross_view ;;
    val) PROTOCOL=cross_view_val ;;     # view 1 trains, view 2 validates; view 3 is never read
    *) echo "nw_ucla.sh: SPLIT=$SPLIT: expected test or val" >&2; exit 2 ;;
esac
DATA=$RUN/data
echo "== run folder $RUN; device $DEVICE ($CORES cores); Python $PY"

stage "preparing NW-UCLA from $NW_UCLA_DIR" "$RUN/logs/prepare_data.log" \
    "$PY" prepare_data.py nw_ucla --raw-dir "$NW_UCLA_DIR" --out "$DATA/nw_ucla" --workers "$CORES" \
    --align-frames "$ALIGN_FRAMES"
stage "drawing the first test clip" "$RUN/logs/draw_skeleton.log" \
    "$PY" draw_skeleton.py --dataset nw_ucla --protocol "$PROTOCOL" --data-dir "$DATA" --part val --clips 0 \
    --out-dir "$RUN/skeleton"

SPLIT_NAME="cross-view (view 3), test split"
[ "$SPLIT" = val ] && SPLIT_NAME="validation (view 1 trains, view 2 validates)"
TITLE="NW-UCLA $SPLIT_NAME; top-1 accuracy (%); CMD and random encoder: $ENCODER_NAME, seed $SEED"
SCHEDULE=$(( EPOCHS * 4 / 5 ))
run_comparison
print_outputs "$started"
echo "  a test clip:        $(echo "$RUN"/skeleton/*.gif) (and a .png strip; draw_skeleton.py draws any clip)"
echo "  data:               $DATA (delete it when done: about $(du -sh "$DATA" | cut -f1))"
