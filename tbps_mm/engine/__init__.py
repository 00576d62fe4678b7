"""Training machinery: the Runner that reads its checkpoints on torch >= 2.6,
the hooks, and what entry scripts share (common arguments, config checks,
CPU-safe distributed set-up)."""

from .hooks import RankedListHook
from .launch import (
    LaunchError,
    add_launch_args,
    build_runner,
    check_checkpoint,
    load_config,
    resolve_work_dir,
    setup_distributed,
    teardown_distributed,
)
from .tbps_runner import TBPSRunner

__all__ = [
    'LaunchError',
    'RankedListHook',
    'TBPSRunner',
    'add_launch_args',
    'build_runner',
    'check_checkpoint',
    'load_config',
    'resolve_work_dir',
    'setup_distributed',
    'teardown_distributed',
]
