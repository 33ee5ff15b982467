#!/usr/bin/env bash
# kNN evaluation (SPEC section 5) of the CMD checkpoints of all five benchmarks: 2H-dim features of the
# joint query encoder, 0.95 centre crop, L2-normalised, cosine 1-NN (KNN="1 5 20" for several k).
#
#   bash scripts/knn_eval.sh [CHECKPOINT_ROOT] [extra knn_eval.py args...]
#
# Same checkpoint layout and environment variables as scripts/linear_eval.sh (BENCHMARKS, CHECKPOINT,
# VIEW, PYTHON, DRY_RUN); RESULTS defaults to ./results/knn. Extra arguments are forwarded.
set -euo pipefail
ROOT=./checkpoints
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then   # a first argument that is not a flag is the root
    ROOT=$1
    shift
fi
PY=${PYTHON:-python}
HERE=$(dirname "$0")
VIEW=${VIEW:-joint}
KNN=${KNN:-1}
RESULTS=${RESULTS:-./results/knn}
BENCHMARKS=${BENCHMARKS:-"ntu60:cross_subject ntu60:cross_view ntu120:cross_subject ntu120:cross_setup pku_v2:cross_subject"}

default_checkpoint() {
    if [ "$1" = pku_v2 ]; then echo checkpoint_1000.pth.tar; else echo checkpoint_0450.pth.tar; fi
}

for bench in $BENCHMARKS; do
    dataset=${bench%%:*}
    protocol=${bench##*:}
    ckpt="$ROOT/${dataset}_${protocol}/${CHECKPOINT:-$(default_checkpoint "$dataset")}"
    # shellcheck disable=SC2086  # KNN is a list of k values
    cmd=("$PY" "$HERE/../knn_eval.py"
         --pretrained "$ckpt"
         --finetune-dataset "$dataset" --protocol "$protocol"
         --finetune-skeleton-representation seq-based --view "$VIEW"
         --knn-neighbours $KNN
         --output "$RESULTS/${dataset}_${protocol}_${VIEW}.json"
         "$@")
    echo "+ ${cmd[*]}"
    [ -n "${DRY_RUN:-}" ] || "${cmd[@]}"
done
