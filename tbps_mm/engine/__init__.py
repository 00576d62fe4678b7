"""Training machinery: the Runner that reads its checkpoints on torch >= 2.6,
the hooks, the optimizer-wrapper constructor that rejects learning-rate
multipliers matching no parameter, what entry scripts share (common arguments,
config checks, CPU-safe distributed set-up) and the reader of what a run wrote
into its work dir."""

from .hooks import MarginWarmupHook, RankedListHook
from .launch import (
    LaunchError,
    add_checkpoint_args,
    add_index_args,
    add_inference_args,
    add_launch_args,
    build_runner,
    check_checkpoint,
    check_train_length,
    exit_process,
    index_args_error,
    index_options,
    inference_options,
    load_config,
    prepare_config,
    resolve_work_dir,
    setup_distributed,
    teardown_distributed,
)
from .optim_wrapper_constructor import TBPSOptimWrapperConstructor, parameter_names
from .run_logs import list_test_metrics, read_scalars, read_test_metrics
from .tbps_runner import TBPSRunner

__all__ = [
    'LaunchError',
    'RankedListHook',
    'TBPSOptimWrapperConstructor',
    'TBPSRunner',
    'exit_process',
    'add_checkpoint_args',
    'add_index_args',
    'add_inference_args',
    'add_launch_args',
    'build_runner',
    'check_checkpoint',
    'check_train_length',
    'index_args_error',
    'index_options',
    'inference_options',
    'list_test_metrics',
    'load_config',
    'parameter_names',
    'prepare_config',
    'read_scalars',
    'read_test_metrics',
    'resolve_work_dir',
    'setup_distributed',
    'teardown_distributed',
]
