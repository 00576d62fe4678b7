#!/usr/bin/env bash
# torchrun for the tbps_mm tools: one process per GPU, or per CPU worker on a
# machine without GPUs (gloo backend; see tbps_mm/engine/launch.py).
# dist_train.sh and dist_test.sh call it; NNODES, NODE_RANK, PORT and
# MASTER_ADDR select the rendezvous, PYTHON the interpreter (default: python
# on PATH).
#   bash tools/dist_run.sh TOOL NUM_PROCS [TOOL arguments]
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 TOOL NUM_PROCS [TOOL arguments]" >&2
    exit 2
fi
TOOL=$1
NPROCS=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROCS" \
    --master_port="${PORT:-29500}" \
    "$ROOT/tools/$TOOL" --launcher pytorch "$@"
