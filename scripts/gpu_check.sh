#!/usr/bin/env bash
# One prepared check of this repository on a GPU machine (issue 9), everything under one folder.
#
#   bash scripts/gpu_check.sh [--out DIR] [--cpu-dry-run]
#
# DIR defaults to $OUT when set, else runs/gpu_check-<date>. Parts, each with its own timeout so that
# one failure does not hide the rest (a global budget skips what would run past 8 minutes):
#   selfcheck   the start-up self-check every run makes on CUDA (bigru.check_model): the BiGRU
#               implementation the runs use against the reference, float32 and under autocast; reported
#               first in summary.txt (a failure means the runs fall back to the slow 'loop')
#   info        GPU name, driver, torch/CUDA/cuDNN versions
#   exactness   float32: the default BiGRU path (and 'custom', 'fused') against 'loop': features, loss
#               and every gradient, train and eval mode, to 1e-5 of the magnitude; no per-call weight copy
#   bench       benchmark.py train at the paper's size (H=1024, batch 64, 64 frames, K=16384, top-k
#               8192): stepwise (each implementation) and loop, float32
#   bench_amp   the same with --amp
#   data        prepare_data.py synthetic: a small prepared set
#   pretrain    pretrain_cmd.py for a few steps, float32;  pretrain_amp: the same with --amp
#   torchrun    the same through torchrun --nproc_per_node=1;  nccl: a one-process all_reduce (NCCL)
#   knn         knn_eval.py on the pretrained checkpoint;  linear: action_classification.py, 1 epoch
# At the end: summary.txt (one line per part) and the exit status = number of failed parts.
# --cpu-dry-run runs every part on the CPU at tiny sizes (gloo instead of NCCL), in under 3 minutes.
set -u

cd "$(dirname "$0")/.." || exit 99
DRY=0
DIR="${OUT:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) DIR="$2"; shift 2 ;;
        --cpu-dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (expected --out DIR, --cpu-dry-run)" >&2; exit 2 ;;
    esac
done
[ -n "$DIR" ] || DIR="runs/gpu_check-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$DIR" || exit 99
DIR="$(cd "$DIR" && pwd)"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY="${PYTHON:-python3}"; fi
SUMMARY="$DIR/summary.txt"
: > "$SUMMARY"
BUDGET=${GPU_CHECK_BUDGET_S:-480}
START=$(date +%s)
FAILED=0

if [ "$DRY" = 1 ]; then
    DEV=cpu; BACKEND=gloo
    H=32; BATCH=8; FRAMES=16; K=64; TOPK=16; STEPS=1; CLIPS=60; PRE_STEPS=2; EX_H=16; EX_T=9
    THREADS="--threads 1"; WORKERS=0
    BUDGET=${GPU_CHECK_BUDGET_S:-900}   # a shared CPU can be slow; the dry run checks that parts work
else
    DEV=cuda; BACKEND=nccl
    H=1024; BATCH=64; FRAMES=64; K=16384; TOPK=8192; STEPS=3; CLIPS=600; PRE_STEPS=6; EX_H=64; EX_T=33
    THREADS=""; WORKERS=4
fi
echo "gpu_check: device $DEV, output in $DIR, python $PY" | tee -a "$SUMMARY"

# part NAME TIMEOUT_S COMMAND...: runs with stdout+stderr in NAME.log, records PASS / FAIL / TIMEOUT / SKIP
part() {
    local name="$1" limit="$2"; shift 2
    local now left t0 rc status
    now=$(date +%s); left=$((BUDGET - (now - START)))
    if [ "$left" -lt 15 ]; then
        echo "SKIP    $name (global budget of ${BUDGET}s spent)" | tee -a "$SUMMARY"
        FAILED=$((FAILED + 1))
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$DIR/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=PASS ;;
        124|137) status=TIMEOUT ;;
        *) status=FAIL ;;
    esac
    [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
    printf '%-7s %-12s rc=%-3s %4ss  (%s.log)\n' "$status" "$name" "$rc" "$(( $(date +%s) - t0 ))" "$name" \
        | tee -a "$SUMMARY"
}

# ------------------------------------------------------------------------------------------ self-check
part selfcheck 120 "$PY" - "$DEV" "$H" <<'EOF'
"""The runs' start-up self-check (bigru.self_check) at the paper's encoder size, float32 and --amp."""
import json
import sys

import torch

import cmd_model
from cli import devices
from encoders import bigru

device, hidden = torch.device(sys.argv[1]), int(sys.argv[2])
gru = cmd_model.StepwiseGRU(150, hidden, 3).to(device)
failed = 0
for amp in dict.fromkeys((None, devices.amp_dtype(device))):
    record = bigru.self_check(gru, device, amp)
    print(json.dumps(record))
    print(f"self-check: '{record['implementation']}' on {device}, autocast {record['autocast']}: "
          f"{'PASS' if record['passed'] else 'FAIL: ' + record['reason']} (largest relative error "
          f"{record['largest_error']:.2g}, {record['seconds']:.2f} s)")
    failed += not record["passed"]
sys.exit(failed)
EOF

# ------------------------------------------------------------------------------------------ info
info() {
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
        nvidia-smi
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" - "$DEV" <<'EOF'
import sys, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
if sys.argv[1] == "cuda":
    assert torch.cuda.is_available(), "CUDA is not available to torch"
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
          "bf16", torch.cuda.is_bf16_supported())
EOF
}
export PY DEV
export -f info
part info 60 bash -c info

# ------------------------------------------------------------------------------------------ exactness
part exactness 180 "$PY" - "$DEV" "$EX_H" "$EX_T" <<'EOF'
"""float32 exactness of every implementation of the released BiGRU against 'loop' (SPEC s.2)."""
import sys
import warnings

import torch
import torch.nn.functional as F

import cmd_model

device, hidden, frames = torch.device(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
# float32 means float32 here: no TF32 in cuDNN or in matrix products
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def run(enc, x, target, check_copies):
    xi = x.clone().requires_grad_(True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats = enc.features(xi)
        loss = F.cross_entropy(enc.fc(feats), target) + feats.pow(2).mean()
        loss.backward()
    copies = [str(w.message) for w in caught if "contiguous chunk" in str(w.message)]
    if check_copies and copies:
        raise SystemExit(f"{enc.gru_mode}: cuDNN copied the weights on a call: {copies[0]}")
    return ([("features", feats.detach()), ("loss", loss.detach()), ("input grad", xi.grad)]
            + [(n, p.grad) for n, p in enc.named_parameters()])


worst = 0.0
for train in (True, False):
    torch.manual_seed(0)
    ref = cmd_model.BiGRUEncoder(10, hidden_size=hidden, gru_mode="loop").to(device).train(train)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    x = torch.randn(5, 3, frames, 25, 2, device=device)
    target = torch.randint(0, 10, (5,), device=device)
    expected = run(ref, x, target, False)
    for mode in ("stepwise", "custom", "fused"):
        fast = cmd_model.BiGRUEncoder(10, hidden_size=hidden, gru_mode=mode).to(device).train(train)
        fast.load_state_dict(state)
        res = [run(fast, x, target, True), expected]
        errs = {}
        for (name, a), (_, b) in zip(*res):
            errs[name] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
        name, err = max(errs.items(), key=lambda kv: kv[1])
        impl = fast.encoder.implementation(device)
        print(f"{mode:9s} ({impl:6s}) {'train' if train else 'eval '}: "
              f"largest relative error {err:.2e} ({name})")
        worst = max(worst, err)
print(f"worst relative error {worst:.2e} (limit 1e-5)")
sys.exit(0 if worst <= 1e-5 else 1)
EOF

# ------------------------------------------------------------------------------------------ benchmark
BENCH=(train --device "$DEV" --hidden-size "$H" --batch-size "$BATCH" --frames "$FRAMES" --contrast-k "$K"
       --topk "$TOPK" --steps "$STEPS" --warmup 1)
part bench 240 "$PY" benchmark.py "${BENCH[@]}" --modes stepwise custom fused loop --json "$DIR/bench.json" \
    $THREADS
part bench_amp 150 "$PY" benchmark.py "${BENCH[@]}" --amp --modes stepwise custom fused --no-augment \
    --json "$DIR/bench_amp.json" $THREADS

# ------------------------------------------------------------------------------------------ the CLIs
DATA="$DIR/data"
part data 120 "$PY" prepare_data.py synthetic --out "$DATA/synthetic" --num-clips "$CLIPS" --workers 4
PRE=(--pre-dataset synthetic --data-dir "$DATA" --device "$DEV" --hidden-size "$H" --batch-size "$BATCH"
     --contrast-k "$K" --topk "$TOPK" --mlp --epochs 1 --max-steps "$PRE_STEPS" --seed 0 -j "$WORKERS"
     --print-freq 2)
part pretrain 150 "$PY" pretrain_cmd.py "${PRE[@]}" --checkpoint-path "$DIR/pretrain" $THREADS
part pretrain_amp 150 "$PY" pretrain_cmd.py "${PRE[@]}" --amp --checkpoint-path "$DIR/pretrain_amp" $THREADS
part torchrun 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 pretrain_cmd.py "${PRE[@]}" \
    --checkpoint-path "$DIR/pretrain_torchrun" $THREADS
cat > "$DIR/collective_check.py" <<'EOF'
"""torchrun --nproc_per_node=1: one all_reduce through the backend named on the command line."""
import sys

import torch
import torch.distributed as dist

from cli import distributed

backend = sys.argv[1]
info, device = distributed.init_distributed("cuda" if backend == "nccl" else "cpu")
if not dist.is_initialized():
    dist.init_process_group(backend=backend)
t = torch.ones(3, device=device)
dist.all_reduce(t)
torch.testing.assert_close(t.cpu(), torch.ones(3) * dist.get_world_size())
print(f"{backend} all_reduce on {device}: ok (world size {dist.get_world_size()})")
dist.destroy_process_group()
EOF
part "$BACKEND" 90 env PYTHONPATH="$PWD" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 \
    "$DIR/collective_check.py" "$BACKEND"
CKPT="$DIR/pretrain/checkpoint_last.pth.tar"
EVAL=(--pretrained "$CKPT" --finetune-dataset synthetic --data-dir "$DATA" --device "$DEV" -j "$WORKERS"
      --seed 0)
part knn 120 "$PY" knn_eval.py "${EVAL[@]}" -b "$BATCH" --output "$DIR/knn.json" $THREADS
part linear 150 "$PY" action_classification.py "${EVAL[@]}" -b "$BATCH" --epochs 1 --eval-freq 1 \
    --checkpoint-path "$DIR/linear" --output "$DIR/linear.json" $THREADS

# ------------------------------------------------------------------------------------------ summary
{
    echo "total $(( $(date +%s) - START ))s; $FAILED part(s) did not pass"
    if [ -f "$DIR/selfcheck.log" ]; then echo "--- selfcheck"; grep '^self-check' "$DIR/selfcheck.log"; fi
    if [ -f "$DIR/bench.log" ]; then echo "--- bench"; tail -n 12 "$DIR/bench.log"; fi
    if [ -f "$DIR/bench_amp.log" ]; then echo "--- bench_amp"; tail -n 8 "$DIR/bench_amp.log"; fi
    if [ -f "$DIR/exactness.log" ]; then echo "--- exactness"; tail -n 7 "$DIR/exactness.log"; fi
} | tee -a "$SUMMARY"
exit "$FAILED"
