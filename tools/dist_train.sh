#!/usr/bin/env bash
# Multi-process training with torchrun (tools/dist_run.sh): one process per
# GPU, or per CPU worker on a machine without GPUs.
#   bash tools/dist_train.sh CONFIG NUM_PROCS [train.py options]
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NUM_PROCS [train.py options]" >&2
    exit 2
fi
CONFIG=$1
NPROCS=$2
shift 2
exec bash "$(dirname "$0")/dist_run.sh" train.py "$NPROCS" "$CONFIG" "$@"
