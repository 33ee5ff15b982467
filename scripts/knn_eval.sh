#!/usr/bin/env bash
# kNN evaluation (SPEC section 5) of the CMD checkpoints of all five benchmarks: 2H-dim features of the
# joint query encoder, 0.95 centre crop, L2-normalised, cosine 1-NN (KNN="1 5 20" for several k).
#
#   bash scripts/knn_eval.sh [CHECKPOINT_ROOT] [extra knn_eval.py args...]
#
# Same checkpoint layout and environment variables as scripts/linear_eval.sh (BENCHMARKS, CHECKPOINT,
# VIEW, PYTHON, DRY_RUN); RESULTS defaults to ./results/knn. Extra arguments are forwarded.
set -euo pipefail
source "$(dirname "$0")/eval_common.sh" "$@"   # PY, HERE, ROOT (a first argument that is not a flag), run
shift "$ROOT_SHIFT"
VIEW=${VIEW:-joint}
KNN=${KNN:-1}
RESULTS=${RESULTS:-./results/knn}
BENCHMARKS=${BENCHMARKS:-"ntu60:cross_subject ntu60:cross_view ntu120:cross_subject ntu120:cross_setup pku_v2:cross_subject"}

for bench in $BENCHMARKS; do
    dataset=${bench%%:*}
    protocol=${bench##*:}
    ckpt=$(checkpoint_of "$ROOT/${dataset}_${protocol}" "$dataset")
    # shellcheck disable=SC2086  # KNN is a list of k values
    run "$PY" "$HERE/../knn_eval.py" \
        --pretrained "$ckpt" \
        --finetune-dataset "$dataset" --protocol "$protocol" \
        --finetune-skeleton-representation graph-based --view "$VIEW" \
        --knn-neighbours $KNN \
        --output "$RESULTS/${dataset}_${protocol}_${VIEW}.json" \
        "$@"
done
