# CMD against its baselines on one benchmark, for scripts/demo.sh and scripts/nw_ucla.sh (sourced, not
# run): pretrain CMD, evaluate its encoder, a randomly initialised encoder of the same sizes
# (--pretrained none; BatchNorm statistics estimated on the training clips) and the raw coordinates, with
# linear evaluation and 1-NN on the joint view and the 3-stream fusion; print one table and write
# summary.json. The caller sets, before `run_comparison`:
#   NAME         what the run is called in messages (e.g. demo.sh)
#   DATASET, PROTOCOL, DATA (the --data-dir root), RUN (the run folder, created by `make_run_folder`)
#   TITLE        the table's title
#   ENCODER_FLAGS (array), ENCODER_NAME, EPOCHS, SCHEDULE (lr drop epochs), QUEUE, TOPK, LR, KEY_MOMENTUM,
#   BATCH, LINEAR_EPOCHS, SEED, and optionally WINDOW (frames per clip, default 64: pretraining and every
#   evaluation) and PRETRAIN_EXTRA (array: more pretrain_cmd.py flags)
# and runs `choose_python` and `make_run_folder` first (before any work).

choose_python() {  # PY: $PYTHON when given, else the project's .venv (created or updated by test.sh)
    if [ -n "${PYTHON:-}" ]; then
        PY=$PYTHON
    else
        echo "== setting up .venv (scripts/test.sh --version: creates or reuses it, installs the requirements)"
        bash scripts/test.sh --version >/dev/null
        PY=.venv/bin/python
    fi
}

make_run_folder() {  # make_run_folder GIVEN PREFIX: RUN=GIVEN (must not exist) or runs/PREFIX-<UTC time>
    local given=$1 prefix=$2 n=2
    if [ -n "$given" ]; then
        RUN=$given
        if [ -e "$RUN" ]; then
            echo "$NAME: run folder $RUN exists already; give a new folder" >&2
            exit 2
        fi
    else
        RUN=runs/$prefix-$(date -u +%Y%m%d-%H%M%S)
        while [ -e "$RUN" ]; do RUN=runs/$prefix-$(date -u +%Y%m%d-%H%M%S)-$n; n=$((n + 1)); done
    fi
    mkdir -p "$RUN/logs" "$RUN/results"
}

choose_device() {  # DEVICE and WORKERS; CORES and HALF (jobs run two at a time, each with half the cores)
    if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        DEVICE=cuda WORKERS=4
    else
        DEVICE=cpu WORKERS=0          # the augmentations are cheap; worker start-up is not, on 2 cores
    fi
    CORES=$("$PY" -c "import os; print(len(os.sched_getaffinity(0)))")
    HALF=$(( CORES / 2 > 0 ? CORES / 2 : 1 ))
}

stage() {  # stage NAME LOGFILE CMD...: run CMD with its output in LOGFILE, say how long it took
    local name=$1 log=$2 t0
    shift 2
    t0=$(date +%s)
    echo "== $name (log: $log)"
    if ! "$@" >"$log" 2>&1; then
        echo "$NAME: $name failed; the end of $log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    echo "   done in $(( $(date +%s) - t0 )) s"
}

evaluate() {  # evaluate NAME PRETRAINED VIEW: 1-NN (with a t-SNE picture on the joint view) and linear
    local name=$1 pretrained=$2 view=$3 tsne=()
    local common=(--finetune-dataset "$DATASET" --protocol "$PROTOCOL" --data-dir "$DATA" --device "$DEVICE"
                  -j "$WORKERS" --seed "$SEED" "${ENCODER_FLAGS[@]}" --view "$view" --window "${WINDOW:-64}")
    if [ "$view" = joint ]; then tsne=(--tsne "$RUN/tsne_joint_$name.png"); fi
    "$PY" knn_eval.py --pretrained "$pretrained" "${common[@]}" --output "$RUN/results/knn_${view}_$name.json" \
        ${tsne[@]+"${tsne[@]}"} || return 1
    "$PY" action_classification.py --pretrained "$pretrained" "${common[@]}" \
        --epochs "$LINEAR_EPOCHS" --schedule $(( LINEAR_EPOCHS * 3 / 5 )) $(( LINEAR_EPOCHS * 4 / 5 )) \
        --output "$RUN/results/linear_${view}_$name.json" || return 1
}

baselines() {  # the random encoder on both views, then 1-NN and the linear probe on the raw coordinates
    local view raw
    for view in joint all; do evaluate random none "$view" || return 1; done
    for view in joint all; do
        raw=(--pretrained raw --finetune-dataset "$DATASET" --protocol "$PROTOCOL" --data-dir "$DATA"
             --device "$DEVICE" -j "$WORKERS" --view "$view" --window "${WINDOW:-64}")
        "$PY" knn_eval.py "${raw[@]}" --output "$RUN/results/knn_${view}_raw.json" || return 1
        "$PY" action_classification.py "${raw[@]}" --seed "$SEED" --epochs "$LINEAR_EPOCHS" \
            --schedule $(( LINEAR_EPOCHS * 3 / 5 )) $(( LINEAR_EPOCHS * 4 / 5 )) \
            --output "$RUN/results/linear_${view}_raw.json" || return 1
    done
}

side_by_side() {  # side_by_side "TITLE" LOG1 "CMD1" LOG2 "CMD2": two jobs at once, half the cores each
    # The first job to fail stops the other (its whole process group) at once, and its log's end is
    # shown: a refused pretraining never waits minutes for the baselines beside it.
    local title=$1 log1=$2 cmd1=$3 log2=$4 cmd2=$5 t0 pid1 pid2 pid status other log running left
    t0=$(date +%s)
    echo "== $title (logs: $log1, $log2)"
    set -m            # each job in a process group of its own: stopping it stops its commands too
    ( export OMP_NUM_THREADS=$HALF; eval "$cmd1" ) >"$log1" 2>&1 &
    pid1=$!
    ( export OMP_NUM_THREADS=$HALF; eval "$cmd2" ) >"$log2" 2>&1 &
    pid2=$!
    set +m
    running=("$pid1" "$pid2")
    while [ ${#running[@]} -gt 0 ]; do    # polled (bash 3 has no `wait -n`): which job ended, and how
        sleep 1
        left=()
        for pid in "${running[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then left+=("$pid"); continue; fi
            status=0
            wait "$pid" || status=$?
            if [ "$status" -ne 0 ]; then
                if [ "$pid" = "$pid1" ]; then log=$log1 other=$pid2; else log=$log2 other=$pid1; fi
                kill -- "-$other" 2>/dev/null || true
                wait "$other" 2>/dev/null || true
                echo "$NAME: a step failed (exit status $status; the job beside it was stopped); the end of" \
                    "$log:" >&2
                tail -n 20 "$log" >&2
                exit 1
            fi
        done
        running=(${left[@]+"${left[@]}"})
    done
    echo "   done in $(( $(date +%s) - t0 )) s"
}

run_comparison() {  # pretraining beside the baselines, then CMD's evaluations; the table and summary.json
    CKPT=$RUN/checkpoints
    CHECKPOINT=$CKPT/checkpoint_$(printf %04d $(( EPOCHS - 1 ))).pth.tar
    # One thread per job and two jobs at a time: the small encoders gain little from a second thread, and
    # two threads spin against each other when anything else runs on the machine.
    side_by_side "pretraining CMD ($ENCODER_NAME, $EPOCHS epochs, queue $QUEUE, top-k $TOPK), \
meanwhile evaluating a random encoder and the raw coordinates" "$RUN/logs/pretrain.log" \
        '"$PY" pretrain_cmd.py --pre-dataset "$DATASET" --protocol "$PROTOCOL" --data-dir "$DATA" \
            --device "$DEVICE" -j "$WORKERS" --seed "$SEED" "${ENCODER_FLAGS[@]}" --mlp \
            --contrast-k "$QUEUE" --topk "$TOPK" --contrast-m "$KEY_MOMENTUM" --lr "$LR" --batch-size "$BATCH" \
            --epochs "$EPOCHS" --schedule $SCHEDULE --save-freq "$EPOCHS" --window "${WINDOW:-64}" \
            ${PRETRAIN_EXTRA[@]+"${PRETRAIN_EXTRA[@]}"} --checkpoint-path "$CKPT" --log-dir "$RUN/tensorboard"' \
        "$RUN/logs/eval_baselines.log" 'baselines'
    side_by_side "evaluating CMD's encoder on the joint view and on the 3-stream fusion" \
        "$RUN/logs/eval_cmd_joint.log" 'evaluate cmd "$CHECKPOINT" joint' \
        "$RUN/logs/eval_cmd_all.log" 'evaluate cmd "$CHECKPOINT" all'
    echo
    echo "== $TITLE"
    "$PY" scripts/comparison_table.py "$RUN/results" --output "$RUN/summary.json"
    "$PY" scripts/plot_training_curves.py "$CKPT/log.jsonl" "$RUN/training_curves.png" \
        --title "CMD pretraining, $DATASET $PROTOCOL, $ENCODER_NAME, queue $QUEUE, top-k $TOPK" >/dev/null
}

print_outputs() {  # print_outputs STARTED: the wall time and where everything is
    local elapsed=$(( $(date +%s) - $1 ))
    cat <<EOF

finished in $(( elapsed / 60 )) min $(( elapsed % 60 )) s
  checkpoints:        $CKPT (last: $CHECKPOINT; config.json, log.jsonl)
  logs:               $RUN/logs
  tensorboard events: $RUN/tensorboard   (view: $PY -m tensorboard.main --logdir $RUN/tensorboard)
  results JSON:       $RUN/results
  summary:            $RUN/summary.json
  training curves:    $RUN/training_curves.png (loss and contrastive top-1 per epoch, from log.jsonl)
  t-SNE pictures:     $RUN/tsne_joint_cmd.png, $RUN/tsne_joint_random.png
EOF
}
