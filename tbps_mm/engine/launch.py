"""What the entry scripts share: config loading, distributed set-up, runner build.

``tools/train.py``, ``tools/test.py`` and friends stay thin; the checks that
must happen *before* a Runner creates its work dir live here, so that a typo in
a path or an option fails with one clear line and leaves nothing behind.

MMEngine 0.10.7 cannot start a distributed job on a machine without CUDA
(``init_dist`` calls ``torch.cuda.set_device`` and DDP is handed
``device_ids=[rank]``). :func:`setup_distributed` initialises a gloo process
group itself in that case and configures DDP without device ids, so that
``tools/dist_train.sh`` runs on CPU too (which is how it is tested).
"""

import argparse
import atexit
import inspect
import os
import os.path as osp
import sys
from typing import Callable, NoReturn, Optional, Sequence

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict, DictAction

from tbps_mm.config_paths import resolve_config_paths
from tbps_mm.models.checkpoint import TRUST_CHECKPOINT_HELP
from tbps_mm.registry import RUNNERS


class LaunchError(Exception):
    """A user error found before anything ran (bad path, bad option)."""


def add_launch_args(
    parser: argparse.ArgumentParser, work_dir_help: str = 'where logs go'
) -> argparse.ArgumentParser:
    """Add the arguments every entry script shares to ``parser``.

    ``--work-dir``, ``--cfg-options`` (MMEngine's ``DictAction``),
    ``--launcher`` and ``--local_rank`` / ``--local-rank`` (which torchrun
    passes to older launch styles).

    Args:
        parser (argparse.ArgumentParser): The script's parser.
        work_dir_help (str): Help text of ``--work-dir``.

    Returns:
        argparse.ArgumentParser: ``parser``.

    Example:
        >>> parser = add_launch_args(argparse.ArgumentParser())
        >>> parser.parse_args(['--launcher', 'pytorch']).launcher
        'pytorch'
    """
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_dataloader.batch_size=32',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def add_checkpoint_args(
    parser: argparse.ArgumentParser, what: str = 'model config file'
) -> argparse.ArgumentParser:
    """Add the arguments every tool that loads a trained model takes.

    ``config`` and ``checkpoint`` (positional), ``--trust-checkpoint``
    (unpickle the checkpoint in full, for a file the user trusts; off by
    default) and ``--cfg-options`` (MMEngine's ``DictAction``): what
    ``tbps_mm.apis.init_model`` takes.

    Args:
        parser (argparse.ArgumentParser): The script's parser.
        what (str): Help text of ``config``.

    Returns:
        argparse.ArgumentParser: ``parser``.

    Example:
        >>> parser = add_checkpoint_args(argparse.ArgumentParser())
        >>> parser.parse_args(['cfg.py', 'w.pth']).trust_checkpoint
        False
    """
    parser.add_argument('config', help=what)
    parser.add_argument(
        'checkpoint',
        help='checkpoint: a published .safetensors, a state dict or a training '
        'checkpoint (read without running code from it)',
    )
    parser.add_argument(
        '--trust-checkpoint', action='store_true', help=TRUST_CHECKPOINT_HELP
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.fusion_weight=0.5',
    )
    return parser


def add_inference_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the model and encoder arguments the inference tools share.

    :func:`add_checkpoint_args`, plus ``--onnx DIR`` (encode with
    onnxruntime through exported graphs), ``--device`` and ``--batch-size``
    (items per forward pass): what ``tbps_mm.apis.init_model`` and
    ``FusedEncoder`` take.

    Args:
        parser (argparse.ArgumentParser): The script's parser.

    Returns:
        argparse.ArgumentParser: ``parser``.

    Example:
        >>> parser = add_inference_args(argparse.ArgumentParser())
        >>> parser.parse_args(['cfg.py', 'w.pth', '--batch-size', '8']).batch_size
        8
    """
    add_checkpoint_args(parser)
    parser.add_argument(
        '--onnx',
        metavar='DIR',
        help='encode with onnxruntime through the graphs '
        'tools/deployment/pytorch2onnx.py exported into DIR',
    )
    parser.add_argument('--device', default='cpu', help='torch device')
    parser.add_argument(
        '--batch-size', type=int, default=32, help='items per forward pass'
    )
    return parser


def inference_options(args: argparse.Namespace) -> dict:
    """:func:`add_inference_args`' values as ``TBPSInferencer`` keywords
    (``device``, ``batch_size``, ``backend``, ``onnx_dir``,
    ``trust_checkpoint``)."""
    return dict(
        device=args.device,
        batch_size=args.batch_size,
        backend='onnxruntime' if args.onnx else 'pytorch',
        onnx_dir=args.onnx,
        trust_checkpoint=args.trust_checkpoint,
    )


#: The integer index options that must be >= 1 when given.
_POSITIVE_INDEX_ARGS = ('nlist', 'nprobe', 'rank', 'refine_factor', 'chunk_size')


def add_index_args(
    parser: argparse.ArgumentParser, index_types: Sequence[str]
) -> argparse.ArgumentParser:
    """Add the gallery index arguments the search tools share.

    ``--index FILE``, ``--index-type`` (``'auto'`` or one of
    ``index_types``), ``--nlist``, ``--nprobe``, ``--rank``,
    ``--refine-factor``, ``--rebuild-index`` and ``--chunk-size``: what
    ``TBPSInferencer.index`` takes. Check them with
    :func:`index_args_error`.

    Args:
        parser (argparse.ArgumentParser): The script's parser.
        index_types (Sequence[str]): The index types the index package
            builds.

    Returns:
        argparse.ArgumentParser: ``parser``.

    Example:
        >>> parser = add_index_args(argparse.ArgumentParser(), ('flat',))
        >>> parser.parse_args(['--nprobe', '8']).nprobe
        8
    """
    parser.add_argument(
        '--index',
        help='gallery index file (default: .tbps_mm_gallery.idx inside the '
        'first image folder)',
    )
    parser.add_argument(
        '--index-type',
        choices=('auto',) + tuple(index_types),
        default='auto',
        help='exact search (flat), IVF with 8-bit codes (ivf-sq8), IVF over a '
        'learned projection (pca-ivf-sq8), its candidates re-scored exactly '
        'from float16 vectors on disk (two-stage), or by gallery size (auto: '
        'flat below 100,000 images, two-stage above); see docs/evaluation.md',
    )
    parser.add_argument(
        '--nlist', type=int, help='IVF cells (default: sqrt(gallery size))'
    )
    parser.add_argument(
        '--nprobe',
        type=int,
        help='IVF cells visited per query (default: measured for recall@10 '
        '0.99 when the index is built)',
    )
    parser.add_argument(
        '--rank',
        type=int,
        help='pca-ivf-sq8, two-stage: projected dimensions (default: 256)',
    )
    parser.add_argument(
        '--refine-factor',
        type=int,
        help='two-stage: candidates re-scored per result (default: 10)',
    )
    parser.add_argument(
        '--rebuild-index', action='store_true', help='encode the images again'
    )
    parser.add_argument(
        '--chunk-size',
        type=int,
        default=1024,
        help='images encoded between two writes of the resumable encoding '
        'cache (what an interrupted build can lose)',
    )
    return parser


def index_args_error(args: argparse.Namespace) -> Optional[str]:
    """The first bad value among :func:`add_index_args`' integers, or None.

    Args:
        args (argparse.Namespace): Parsed arguments.

    Returns:
        str | None: E.g. ``'--nprobe must be >= 1, got 0'``.
    """
    for name in _POSITIVE_INDEX_ARGS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            return f'--{name.replace("_", "-")} must be >= 1, got {value}'
    return None


def index_options(args: argparse.Namespace) -> dict:
    """:func:`add_index_args`' values as ``TBPSInferencer.index`` keywords."""
    return dict(
        index_file=args.index,
        rebuild=args.rebuild_index,
        index_type=args.index_type,
        nlist=args.nlist,
        nprobe=args.nprobe,
        rank=args.rank,
        refine_factor=args.refine_factor,
        chunk_size=args.chunk_size,
    )


def resolve_work_dir(cfg: Config, config_path: str, work_dir: Optional[str]) -> None:
    """Set ``cfg.work_dir``: the command line's, the config's, or a default.

    The default is ``./work_dirs/<config file stem>``, MMEngine's habit.

    Args:
        cfg (Config): The config, changed in place.
        config_path (str): The config file (names the default folder).
        work_dir (str, optional): ``--work-dir``.

    Example:
        >>> resolve_work_dir(cfg, 'configs/tbps_synth.py', None)  # doctest: +SKIP
        >>> cfg.work_dir
        './work_dirs/tbps_synth'
    """
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(config_path))[0]
        )


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file and apply ``--cfg-options`` overrides strictly.

    Args:
        path (str): The config file.
        cfg_options (dict, optional): ``{'a.b.c': value}`` overrides, as
            parsed by MMEngine's ``DictAction``.

    Returns:
        Config: The merged config, its relative data and model paths made
        absolute against the config's root
        (:func:`tbps_mm.config_paths.resolve_config_paths`: ``TBPS_DATA_ROOT``,
        else the folder holding the config's ``configs`` folder).

    Raises:
        LaunchError: The file does not exist, or an override names a key the
            config does not have. New keys are accepted only inside a
            component dict (one with a ``type``), whose constructor validates
            them when it is built, and top-level Runner arguments
            (``custom_hooks``, ``load_from``, ...).

    Example:
        >>> cfg = load_config('configs/tbps_synth.py',
        ...                   {'train_dataloader.batch_size': 32})
    """
    if not osp.isfile(path):
        raise LaunchError(f'config file "{path}" does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        for key in cfg_options:
            check_override_key(cfg, key)
        cfg.merge_from_dict(cfg_options)
    resolve_config_paths(cfg, path)
    return cfg


def prepare_config(
    args: argparse.Namespace,
    merge_args: Callable[[Config, argparse.Namespace], Config],
) -> Optional[Config]:
    """The config an entry script runs: ``args.config`` with
    ``args.cfg_options`` (:func:`load_config`), then the script's own
    command-line merge.

    Args:
        args (argparse.Namespace): Parsed arguments with ``config`` and
            ``cfg_options``.
        merge_args (callable): ``merge_args(cfg, args) -> cfg``, the script's
            options on top of the config; raises :class:`LaunchError` on bad
            input.

    Returns:
        Config | None: The config, or None after printing ``error: ...`` to
        stderr when a :class:`LaunchError` was raised (the script then exits
        with status 2, before any work dir exists).

    Example:
        >>> cfg = prepare_config(args, merge_args)  # doctest: +SKIP
        >>> if cfg is None:
        ...     sys.exit(2)
    """
    try:
        return merge_args(load_config(args.config, args.cfg_options), args)
    except LaunchError as err:
        print(f'error: {err}', file=sys.stderr)
        return None


def check_override_key(cfg: Config, key: str) -> None:
    """Raise :class:`LaunchError` when ``key`` does not fit ``cfg``."""
    node = cfg
    parts = key.split('.')
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = '.'.join(parts[:depth]) or 'the config'
        if isinstance(node, (list, tuple)):
            if not part.isdigit() or int(part) >= len(node):
                raise LaunchError(
                    f'--cfg-options key "{key}": "{where}" is a list of '
                    f'{len(node)} items, "{part}" is not an index in it'
                )
            node = node[int(part)]
            continue
        if not isinstance(node, (dict, Config, ConfigDict)):
            raise LaunchError(
                f'--cfg-options key "{key}": "{where}" is a value, not a dict'
            )
        if part not in node:
            if last and 'type' in node:
                return  # a constructor argument; the build checks its name
            if depth == 0 and part in _runner_arguments():
                return  # a Runner argument the config leaves at its default
            options = ', '.join(sorted(str(k) for k in node.keys())[:20])
            raise LaunchError(
                f'--cfg-options key "{key}" does not exist: "{where}" has no '
                f'"{part}" (it has: {options})'
            )
        node = node[part]


def _runner_arguments() -> set:
    from mmengine.runner import Runner

    return set(inspect.signature(Runner.__init__).parameters) - {'self'}


def check_checkpoint(path: Optional[str], what: str = 'checkpoint') -> None:
    """Raise :class:`LaunchError` when a local checkpoint path is missing."""
    if path and '://' not in path and not osp.isfile(path):
        raise LaunchError(f'{what} "{path}" does not exist')


def check_train_length(cfg: Config, config_path: str) -> None:
    """Raise :class:`LaunchError` unless the train loop runs at least one step.

    Args:
        cfg (Config): The merged config.
        config_path (str): The config file (named in the error).

    Example:
        >>> check_train_length(Config(dict(train_cfg=dict(max_epochs=0))),
        ...                    'x.py')  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        LaunchError: config "x.py": train_cfg.max_epochs must be ...
    """
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_epochs', 'max_iters'):
        value = train_cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LaunchError(
                f'config "{config_path}": train_cfg.{key} must be a whole number '
                f'>= 1, got {value!r}'
            )


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Prepare ``cfg`` for ``launcher`` and start CPU process groups.

    With CUDA, MMEngine's own ``init_dist`` does the work. Without CUDA, a
    gloo group is started here, before the Runner, and DDP is configured
    without ``device_ids``.

    Args:
        cfg (Config): The config; ``launcher`` and the DDP wrapper are set.
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
    """
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if torch_dist.is_initialized():
        return
    if launcher == 'slurm':
        _export_slurm_env()
    torch_dist.init_process_group(backend='gloo')


def _export_slurm_env() -> None:
    """Translate SLURM's variables into the ones ``init_process_group`` reads."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_NODELIST', '127.0.0.1')
        os.environ['MASTER_ADDR'] = nodes.split(',')[0].split('[')[0]


def teardown_distributed() -> None:
    """Destroy the process group (without it, CPU runs sometimes abort at exit)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """Leave an entry script with ``code``.

    A process of a CPU (gloo) group can abort in the interpreter's native
    teardown after a finished run ("terminate called without an active
    exception": a gloo thread still joinable when its destructor runs), which
    turns a complete run into a failed one. So such a process runs Python's
    exit handlers (log files are flushed and closed there), flushes its
    streams and leaves with ``os._exit``, skipping the native destructors;
    everything the run writes is written before this is called. Any other
    process exits normally.

    Args:
        code (int): The exit status.
    """
    world_size = os.environ.get('WORLD_SIZE', '1')
    if not world_size.isdigit() or int(world_size) < 2 or torch.cuda.is_available():
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def build_runner(cfg: Config):
    """Build the Runner the config asks for (``runner_type``, else MMEngine's)."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    from mmengine.runner import Runner

    return Runner.from_cfg(cfg)
