#!/usr/bin/env bash
# GPU cost benchmark in one command (about 3-5 minutes on one GPU, Beauty, batch 256):
#   bash benchmarks/gpu.sh                 # writes results/epoch_cost-gpu.json and prints two tables
# Needs a CUDA build of torch in .venv (make install TORCH_SPEC=torch) and one visible GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: torch sees no CUDA device')"
MODELS="SASRec LPO4Rec DPO4Rec SDPO4Rec SimPO4Rec ORPO4Rec"
"$PY" benchmarks/epoch_cost.py --device cuda --epochs 4 --models $MODELS --json results/epoch_cost-gpu.json
"$PY" benchmarks/epoch_profile.py --device cuda --batches 200 --models SASRec LPO4Rec DPO4Rec
