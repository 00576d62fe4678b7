"""Training machinery: the Runner that reads its checkpoints on torch >= 2.6,
the optimizer-wrapper constructor that rejects learning-rate multipliers
matching no parameter, and the helpers entry scripts share (config checks,
CPU-safe distributed set-up)."""

from .launch import (
    LaunchError,
    build_runner,
    check_checkpoint,
    load_config,
    setup_distributed,
    teardown_distributed,
)
from .optim_wrapper_constructor import TBPSOptimWrapperConstructor, parameter_names
from .tbps_runner import TBPSRunner, load_training_checkpoint

__all__ = [
    'LaunchError',
    'TBPSOptimWrapperConstructor',
    'TBPSRunner',
    'build_runner',
    'check_checkpoint',
    'load_config',
    'load_training_checkpoint',
    'parameter_names',
    'setup_distributed',
    'teardown_distributed',
]
