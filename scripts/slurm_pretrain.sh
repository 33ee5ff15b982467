#!/usr/bin/env bash
#SBATCH --job-name=cmd-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
# An example Slurm batch script: one of the pretraining recipes (scripts/pretrain_*.sh) on several nodes.
# Slurm starts one task per node; each task runs torchrun, which starts one process per GPU of its node
# and meets the others at the first node (c10d rendezvous). --batch-size stays the global batch (64 in
# the recipe: with 2 nodes x 4 GPUs, 8 clips per GPU); K must stay a multiple of it. Edit the #SBATCH
# lines (partition, account, GPUs, time) for your cluster; run from the repository root on a shared disk:
#
#   sbatch scripts/slurm_pretrain.sh [RECIPE] [extra pretrain_cmd.py args...]
#   sbatch --nodes=4 scripts/slurm_pretrain.sh pretrain_ntu120_xsub.sh --resume auto
#
# RECIPE is a script name in scripts/ (default pretrain_ntu60_xsub.sh). Checkpoints and logs go where the
# recipe puts them (./checkpoints/<dataset>_<protocol>); --resume auto continues after a preemption.
# GPUS_PER_NODE (default: the count of visible GPUs) and PORT (default 29500) can be set.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
RECIPE=pretrain_ntu60_xsub.sh
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    RECIPE=$1
    shift
fi
if [ ! -f "scripts/$RECIPE" ]; then
    echo "no recipe scripts/$RECIPE; expected one of: $(cd scripts && ls pretrain_*.sh | grep -v recipe | xargs)" >&2
    exit 2
fi
source scripts/python.sh
GPUS_PER_NODE=${GPUS_PER_NODE:-$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export LAUNCHER="$PY -m torch.distributed.run --nnodes=$SLURM_NNODES --nproc_per_node=$GPUS_PER_NODE \
--rdzv_id=$SLURM_JOB_ID --rdzv_backend=c10d --rdzv_endpoint=$HEAD:${PORT:-29500}"
srun --kill-on-bad-exit=1 bash "scripts/$RECIPE" "$@"
