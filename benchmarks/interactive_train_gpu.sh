#!/usr/bin/env bash
# Train the five leave-one-family-out models and the full model at once on one GPU machine (16 cores), from the
# bank's source archive (see interactive_train.py --export-sources); used for the models in docs/interactive.md.
#
#   bash benchmarks/interactive_train_gpu.sh [BUDGET] [OUTDIR]     # e.g. 7.5m; models land in benchmarks/models
#
# Each run: 2 sample-drawing workers, batch 128, lr 3e-3, U-Net widths 16-32-64-128-256, bf16 on the GPU (six
# processes share the GPU, so few large batches beat many small ones: at batch 32 each run made only ~6.5 steps/s).
set -u
BUDGET=${1:-7.5m}
LOGS=${2:-benchmarks/models}
ARGS="--sources benchmarks/gpu/sources.pkl.xz --device cuda --workers 2 --batch-size 128 --lr 3e-3 --widths 16,32,64,128,256"
export PYTHONPATH=src:benchmarks OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$LOGS"
PY=${PYTHON:-python3}
for held in brain_mri cardiac_mri ct_mr_body fundus lesions none; do
    $PY benchmarks/interactive_train.py $ARGS --held-out "$held" --time-budget "$BUDGET" > "$LOGS/log_$held.txt" 2>&1 &
done
wait
tail -n 2 "$LOGS"/log_*.txt
