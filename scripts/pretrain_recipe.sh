# The released CMD pretraining recipe (SPEC section 7), shared by scripts/pretrain_*.sh; not run directly.
# BiGRU encoder, MLP head, SGD lr 0.01, batch 64 (global), teacher T 0.05, student T 0.1, top-k 8192,
# InfoNCE T 0.07, queue K 16384; checkpoints to ./checkpoints/<dataset>_<protocol>.
#
#   pretrain_recipe DATASET PROTOCOL EPOCHS MILESTONE [extra pretrain_cmd.py args, which win...]
#
# Environment: PYTHON (interpreter; default .venv/bin/python, else python3), NPROC (> 1: launch that
# many processes with torchrun on this machine; --batch-size stays the global batch), LAUNCHER (a whole
# launch command that replaces the interpreter, as scripts/slurm_pretrain.sh sets for several nodes).
pretrain_recipe() {
    local dataset=$1 protocol=$2 epochs=$3 milestone=$4
    shift 4
    local PY
    source "$(dirname "${BASH_SOURCE[0]}")/python.sh"
    local py=$PY
    local launch=("$py")
    if [ -n "${LAUNCHER:-}" ]; then           # e.g. a multi-node torchrun (scripts/slurm_pretrain.sh)
        read -ra launch <<< "$LAUNCHER"
    elif [ "${NPROC:-1}" -gt 1 ]; then
        launch=("$py" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
    fi
    exec "${launch[@]}" "$(dirname "${BASH_SOURCE[0]}")/../pretrain_cmd.py" \
        --lr 0.01 \
        --batch-size 64 \
        --teacher-t 0.05 \
        --student-t 0.1 \
        --topk 8192 \
        --mlp \
        --contrast-t 0.07 \
        --contrast-k 16384 \
        --checkpoint-path "./checkpoints/${dataset}_${protocol}" \
        --schedule "$milestone" \
        --epochs "$epochs" \
        --pre-dataset "$dataset" \
        --skeleton-representation graph-based \
        --protocol "$protocol" \
        "$@"
}
