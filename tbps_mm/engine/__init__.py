"""Training machinery: the Runner that reads its checkpoints on torch >= 2.6,
and the helpers entry scripts share (config checks, CPU-safe distributed set-up)."""

from .launch import (
    LaunchError,
    build_runner,
    check_checkpoint,
    load_config,
    setup_distributed,
    teardown_distributed,
)
from .tbps_runner import TBPSRunner

__all__ = [
    'LaunchError',
    'TBPSRunner',
    'build_runner',
    'check_checkpoint',
    'load_config',
    'setup_distributed',
    'teardown_distributed',
]
