#!/usr/bin/env bash
# Multi-process evaluation with torchrun (tools/dist_run.sh): one process per
# GPU, or per CPU worker on a machine without GPUs. Each process encodes its
# share of the gallery and queries; the metric gathers them and ranks on
# rank 0 (the numbers equal a single-process run).
#   bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py options]
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCS [test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROCS=$3
shift 3
exec bash "$(dirname "$0")/dist_run.sh" test.py "$NPROCS" "$CONFIG" "$CHECKPOINT" "$@"
