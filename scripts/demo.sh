#!/usr/bin/env bash
# The main job in one command, on the built-in synthetic dataset (no download; about 12 minutes on
# 2 CPU cores, faster on a GPU):
#
#   bash scripts/demo.sh
#
# 1. creates or reuses .venv as scripts/test.sh does (unless PYTHON names an interpreter to use),
# 2. generates and prepares the synthetic set (prepare_data.py synthetic, cross-subject split),
# 3. pretrains CMD (pretrain_cmd.py: the released loss, augmentations and SGD; a small BiGRU),
# 4. evaluates CMD's encoder and a randomly initialised one (--pretrained none) with linear evaluation
#    and 1-NN, on the joint view and the 3-stream fusion, and the raw coordinates with 1-NN,
# 5. prints one table (also written as summary.json) and where everything is.
#
# Everything goes under runs/demo-<UTC date and time>/ (DEMO_RUN_DIR=path picks another folder, which
# must not exist yet). CUDA is used when present, else the CPU. The recipe can be changed through the
# environment (defaults in brackets): DEMO_CLIPS [1500] synthetic clips, DEMO_EPOCHS [30] pretraining
# epochs, DEMO_HIDDEN [64] GRU hidden size, DEMO_QUEUE [512] MoCo queue, DEMO_TOPK [128] CMD top-k,
# DEMO_LR [0.01], DEMO_BATCH [64], DEMO_LINEAR_EPOCHS [20]; DEMO_QUICK=1 is a tiny run (a minute) that
# checks the machinery, not the method.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

if [ -n "${DEMO_QUICK:-}" ]; then
    : "${DEMO_CLIPS:=150}" "${DEMO_EPOCHS:=1}" "${DEMO_HIDDEN:=8}" "${DEMO_QUEUE:=32}" "${DEMO_TOPK:=8}"
    : "${DEMO_BATCH:=16}" "${DEMO_LINEAR_EPOCHS:=1}"
fi
CLIPS=${DEMO_CLIPS:-1500}
EPOCHS=${DEMO_EPOCHS:-30}
HIDDEN=${DEMO_HIDDEN:-64}
QUEUE=${DEMO_QUEUE:-512}
TOPK=${DEMO_TOPK:-128}
LR=${DEMO_LR:-0.01}
BATCH=${DEMO_BATCH:-64}
LINEAR_EPOCHS=${DEMO_LINEAR_EPOCHS:-20}
SEED=0

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

# --- device and threads: two evaluations run side by side, each with half the cores
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

stage "pretraining CMD: BiGRU H=$HIDDEN, $EPOCHS epochs, queue $QUEUE, top-k $TOPK" "$LOGS/pretrain.log" \
    "$PY" pretrain_cmd.py --pre-dataset synthetic --protocol cross_subject --data-dir "$DATA" \
    --device "$DEVICE" -j "$WORKERS" --seed "$SEED" --hidden-size "$HIDDEN" --mlp \
    --contrast-k "$QUEUE" --topk "$TOPK" --lr "$LR" --batch-size "$BATCH" \
    --epochs "$EPOCHS" --schedule $(( EPOCHS * 4 / 5 )) --save-freq "$EPOCHS" \
    --checkpoint-path "$CKPT" --log-dir "$TB"
CHECKPOINT=$CKPT/checkpoint_$(printf %04d $(( EPOCHS - 1 ))).pth.tar

evaluate() {  # evaluate NAME PRETRAINED: linear and 1-NN on the joint view and the fusion
    local name=$1 pretrained=$2 view tsne
    local common=(--finetune-dataset synthetic --protocol cross_subject --data-dir "$DATA" --device "$DEVICE"
                  -j "$WORKERS" --seed "$SEED" --hidden-size "$HIDDEN")
    for view in joint all; do
        tsne=()
        if [ "$view" = joint ]; then tsne=(--tsne "$RUN/tsne_joint_$name.png"); fi
        "$PY" knn_eval.py --pretrained "$pretrained" "${common[@]}" --view "$view" \
            --output "$RESULTS/knn_${view}_$name.json" "${tsne[@]}" || return 1
        "$PY" action_classification.py --pretrained "$pretrained" "${common[@]}" --view "$view" \
            --epochs "$LINEAR_EPOCHS" --schedule $(( LINEAR_EPOCHS * 3 / 5 )) $(( LINEAR_EPOCHS * 4 / 5 )) \
            --output "$RESULTS/linear_${view}_$name.json" || return 1
    done
}

evaluate_raw() {  # 1-NN on the flattened centre-cropped clips themselves
    local view
    for view in joint all; do
        "$PY" knn_eval.py --pretrained raw --finetune-dataset synthetic --protocol cross_subject \
            --data-dir "$DATA" --device "$DEVICE" -j "$WORKERS" --view "$view" \
            --output "$RESULTS/knn_${view}_raw.json" || return 1
    done
}

t0=$(date +%s)
echo "== evaluating the random encoder and the raw coordinates (log: $LOGS/eval_random.log)" \
     "and CMD (log: $LOGS/eval_cmd.log) side by side"
( export OMP_NUM_THREADS=$HALF; evaluate random none >"$LOGS/eval_random.log" 2>&1 &&
  evaluate_raw >>"$LOGS/eval_random.log" 2>&1 ) &
random_pid=$!
( export OMP_NUM_THREADS=$HALF; evaluate cmd "$CHECKPOINT" >"$LOGS/eval_cmd.log" 2>&1 ) &
cmd_pid=$!
failed=
wait "$random_pid" || failed="$failed $LOGS/eval_random.log"
wait "$cmd_pid" || failed="$failed $LOGS/eval_cmd.log"
if [ -n "$failed" ]; then
    for log in $failed; do echo "demo.sh: evaluation failed; the end of $log:" >&2; tail -n 20 "$log" >&2; done
    exit 1
fi
echo "   done in $(( $(date +%s) - t0 )) s"

echo
echo "== synthetic cross-subject, test split; top-1 accuracy (%)"
"$PY" scripts/demo_summary.py "$RESULTS" --output "$RUN/summary.json"
elapsed=$(( $(date +%s) - started ))
cat <<EOF

finished in $(( elapsed / 60 )) min $(( elapsed % 60 )) s
  checkpoints:        $CKPT (last: $CHECKPOINT; config.json, log.jsonl)
  logs:               $LOGS
  tensorboard events: $TB   (view: $PY -m tensorboard.main --logdir $TB)
  results JSON:       $RESULTS
  summary:            $RUN/summary.json
  t-SNE pictures:     $RUN/tsne_joint_cmd.png, $RUN/tsne_joint_random.png
  data:               $DATA (delete it when done: about $(du -sh "$DATA" | cut -f1))
EOF
