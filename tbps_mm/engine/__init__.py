"""Training machinery: the Runner that reads its checkpoints on torch >= 2.6,
the helpers entry scripts share (config checks, CPU-safe distributed set-up)
and the reader of what a run wrote into its work dir."""

from .launch import (
    LaunchError,
    build_runner,
    check_checkpoint,
    load_config,
    setup_distributed,
    teardown_distributed,
)
from .run_logs import list_test_metrics, read_scalars, read_test_metrics
from .tbps_runner import TBPSRunner

__all__ = [
    'LaunchError',
    'TBPSRunner',
    'build_runner',
    'check_checkpoint',
    'list_test_metrics',
    'load_config',
    'read_scalars',
    'read_test_metrics',
    'setup_distributed',
    'teardown_distributed',
]
