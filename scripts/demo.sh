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
# must not exist yet). CUDA is used when present, else the CPU. The recipe can be changed through the
# environment (defaults in brackets): DEMO_CLIPS [1500] synthetic clips, DEMO_EPOCHS [30] pretraining
# epochs, DEMO_HIDDEN [64] GRU hidden size, DEMO_QUEUE [512] MoCo queue, DEMO_TOPK [128] CMD top-k,
# DEMO_LR [0.01], DEMO_KEY_MOMENTUM [0.99] MoCo momentum of the key encoders (released: 0.999,
# too slow for 450 steps: the keys would stay close to their random start), DEMO_BATCH [64],
# DEMO_LINEAR_EPOCHS [20], DEMO_SEED [0] (data, initialisation, augmentation); DEMO_QUICK=1 is a tiny
# run (a minute) that checks the machinery, not the method.
#
# DEMO_ENCODER [bigru] picks the encoder of CMD and of the random baseline: bigru (the recipe above) or
# stgcn (about 14 minutes on 2 CPU cores), with its own defaults, measured in docs/model.md ("Synthetic
# check"): DEMO_STGCN_BASE [4] width of blocks 1-4, DEMO_HIDDEN [32] width of the last block,
# DEMO_EPOCHS [10], DEMO_BATCH [32], DEMO_LR [0.1], DEMO_QUEUE [512], DEMO_TOPK [128],
# DEMO_KEY_MOMENTUM [0.99]; the random ST-GCN has the same sizes.
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
        : "${DEMO_LR:=0.1}" "${DEMO_QUEUE:=512}" "${DEMO_TOPK:=128}" "${DEMO_KEY_MOMENTUM:=0.99}" ;;
    *)
        echo "demo.sh: DEMO_ENCODER=$ENCODER: expected bigru or stgcn" >&2
        exit 2 ;;
esac
CLIPS=${DEMO_CLIPS:-1500}
EPOCHS=${DEMO_EPOCHS:-30}
HIDDEN=${DEMO_HIDDEN:-64}
QUEUE=${DEMO_QUEUE:-512}
TOPK=${DEMO_TOPK:-128}
LR=${DEMO_LR:-0.01}
KEY_MOMENTUM=${DEMO_KEY_MOMENTUM:-0.99}
BATCH=${DEMO_BATCH:-64}
LINEAR_EPOCHS=${DEMO_LINEAR_EPOCHS:-20}
SEED=${DEMO_SEED:-0}
# the encoder's flags, given to every pretraining and evaluation command (CMD's and the random one's)
if [ "$ENCODER" = stgcn ]; then
    STGCN_BASE=$DEMO_STGCN_BASE
    ENCODER_FLAGS=(--encoder stgcn --stgcn-base-channels "$STGCN_BASE" --hidden-size "$HIDDEN")
    ENCODER_NAME="ST-GCN base $STGCN_BASE, last $HIDDEN"
else
    ENCODER_FLAGS=(--hidden-size "$HIDDEN")
    ENCODER_NAME="BiGRU H=$HIDDEN"
fi

# --- the run folder
if [ -n "${DEMO_RUN_DIR:-}" ]; then
    RUN=$DEMO_RUN_DIR
    if [ -e "$RUN" ]; then
        echo "demo.sh: DEMO_RUN_DIR=$RUN exists already; give a new folder" >&2
        exit 2
    fi
else
    RUN=runs/demo-$(date -u +%Y%m%d-%H%M%S)
    n=2
    while [ -e "$RUN" ]; do RUN=runs/demo-$(date -u +%Y%m%d-%H%M%S)-$n; n=$((n + 1)); done
fi
# --- the interpreter: PYTHON when given, else the project's .venv (created or updated by test.sh)
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
else
    echo "== setting up .venv (scripts/test.sh --version: creates or reuses it, installs the requirements)"
    bash scripts/test.sh --version >/dev/null
    PY=.venv/bin/python
fi

DATA=$RUN/data
CKPT=$RUN/checkpoints
LOGS=$RUN/logs
RESULTS=$RUN/results
TB=$RUN/tensorboard
mkdir -p "$LOGS" "$RESULTS"

# --- device; jobs run two at a time, each with half the cores
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    DEVICE=cuda WORKERS=4
else
    DEVICE=cpu WORKERS=0          # the augmentations are cheap; worker start-up is not, on 2 cores
fi
CORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
HALF=$(( CORES / 2 > 0 ? CORES / 2 : 1 ))
echo "== run folder $RUN; device $DEVICE ($CORES cores); Python $PY"

stage() {  # stage NAME LOGFILE CMD...: run CMD with its output in LOGFILE, say how long it took
    local name=$1 log=$2 t0
    shift 2
    t0=$(date +%s)
    echo "== $name (log: $log)"
    if ! "$@" >"$log" 2>&1; then
        echo "demo.sh: $name failed; the end of $log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    echo "   done in $(( $(date +%s) - t0 )) s"
}

stage "generating and preparing $CLIPS synthetic clips" "$LOGS/prepare_data.log" \
    "$PY" prepare_data.py synthetic --out "$DATA/synthetic" --benchmarks xsub --num-clips "$CLIPS" \
    --seed "$SEED" --workers "$CORES"
stage "drawing the first training clip" "$LOGS/draw_skeleton.log" \
    "$PY" draw_skeleton.py --dataset synthetic --protocol cross_subject --data-dir "$DATA" --clips 0 \
    --out-dir "$RUN/skeleton"

evaluate() {  # evaluate NAME PRETRAINED VIEW: 1-NN (with a t-SNE picture on the joint view) and linear
    local name=$1 pretrained=$2 view=$3 tsne=()
    local common=(--finetune-dataset synthetic --protocol cross_subject --data-dir "$DATA" --device "$DEVICE"
                  -j "$WORKERS" --seed "$SEED" "${ENCODER_FLAGS[@]}" --view "$view")
    if [ "$view" = joint ]; then tsne=(--tsne "$RUN/tsne_joint_$name.png"); fi
    "$PY" knn_eval.py --pretrained "$pretrained" "${common[@]}" --output "$RESULTS/knn_${view}_$name.json" \
        ${tsne[@]+"${tsne[@]}"} || return 1
    "$PY" action_classification.py --pretrained "$pretrained" "${common[@]}" \
        --epochs "$LINEAR_EPOCHS" --schedule $(( LINEAR_EPOCHS * 3 / 5 )) $(( LINEAR_EPOCHS * 4 / 5 )) \
        --output "$RESULTS/linear_${view}_$name.json" || return 1
}

baselines() {  # the random encoder on both views, then 1-NN on the raw coordinates (no encoder)
    local view
    for view in joint all; do evaluate random none "$view" || return 1; done
    for view in joint all; do
        "$PY" knn_eval.py --pretrained raw --finetune-dataset synthetic --protocol cross_subject \
            --data-dir "$DATA" --device "$DEVICE" -j "$WORKERS" --view "$view" \
            --output "$RESULTS/knn_${view}_raw.json" || return 1
    done
}

side_by_side() {  # side_by_side "TITLE" LOG1 "CMD1" LOG2 "CMD2": two jobs at once, half the cores each
    local title=$1 log1=$2 cmd1=$3 log2=$4 cmd2=$5 t0 pid1 pid2 failed=()
    t0=$(date +%s)
    echo "== $title (logs: $log1, $log2)"
    ( export OMP_NUM_THREADS=$HALF; eval "$cmd1" ) >"$log1" 2>&1 &
    pid1=$!
    ( export OMP_NUM_THREADS=$HALF; eval "$cmd2" ) >"$log2" 2>&1 &
    pid2=$!
    wait "$pid1" || failed+=("$log1")
    wait "$pid2" || failed+=("$log2")
    for log in ${failed[@]+"${failed[@]}"}; do
        echo "demo.sh: a job failed; the end of $log:" >&2
        tail -n 20 "$log" >&2
    done
    [ ${#failed[@]} -eq 0 ] || exit 1
    echo "   done in $(( $(date +%s) - t0 )) s"
}

# One thread per job and two jobs at a time: the small BiGRU gains little from a second thread, and
# two threads spin against each other when anything else runs on the machine.
CHECKPOINT=$CKPT/checkpoint_$(printf %04d $(( EPOCHS - 1 ))).pth.tar
side_by_side "pretraining CMD ($ENCODER_NAME, $EPOCHS epochs, queue $QUEUE, top-k $TOPK), \
meanwhile evaluating a random encoder and the raw coordinates" "$LOGS/pretrain.log" \
    '"$PY" pretrain_cmd.py --pre-dataset synthetic --protocol cross_subject --data-dir "$DATA" \
        --device "$DEVICE" -j "$WORKERS" --seed "$SEED" "${ENCODER_FLAGS[@]}" --mlp \
        --contrast-k "$QUEUE" --topk "$TOPK" --contrast-m "$KEY_MOMENTUM" --lr "$LR" --batch-size "$BATCH" \
        --epochs "$EPOCHS" --schedule $(( EPOCHS * 4 / 5 )) --save-freq "$EPOCHS" \
        --checkpoint-path "$CKPT" --log-dir "$TB"' \
    "$LOGS/eval_baselines.log" 'baselines'
side_by_side "evaluating CMD's encoder on the joint view and on the 3-stream fusion" \
    "$LOGS/eval_cmd_joint.log" 'evaluate cmd "$CHECKPOINT" joint' \
    "$LOGS/eval_cmd_all.log" 'evaluate cmd "$CHECKPOINT" all'

echo
if [ "$ENCODER" = bigru ]; then
    echo "== synthetic cross-subject, test split; top-1 accuracy (%)"
else
    echo "== synthetic cross-subject, test split; top-1 accuracy (%); CMD and random encoder: $ENCODER_NAME"
fi
"$PY" scripts/demo_summary.py "$RESULTS" --output "$RUN/summary.json"
"$PY" scripts/plot_training_curves.py "$CKPT/log.jsonl" "$RUN/training_curves.png" \
    --title "CMD pretraining, synthetic cross-subject, $ENCODER_NAME, queue $QUEUE, top-k $TOPK" >/dev/null
elapsed=$(( $(date +%s) - started ))
cat <<EOF

finished in $(( elapsed / 60 )) min $(( elapsed % 60 )) s
  checkpoints:        $CKPT (last: $CHECKPOINT; config.json, log.jsonl)
  logs:               $LOGS
  tensorboard events: $TB   (view: $PY -m tensorboard.main --logdir $TB)
  results JSON:       $RESULTS
  summary:            $RUN/summary.json
  training curves:    $RUN/training_curves.png (loss and contrastive top-1 per epoch, from log.jsonl)
  t-SNE pictures:     $RUN/tsne_joint_cmd.png, $RUN/tsne_joint_random.png
  a training clip:    $(echo "$RUN"/skeleton/*.gif) (and a .png strip; draw_skeleton.py draws any clip)
  data:               $DATA (delete it when done: about $(du -sh "$DATA" | cut -f1))
EOF
