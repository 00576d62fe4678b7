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
import inspect
import os
import os.path as osp
import sys
from typing import Callable, Optional

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


def add_inference_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments the inference tools share (search, serve).

    ``--device``, ``--batch-size`` (images per forward pass while indexing),
    ``--cfg-options`` (MMEngine's ``DictAction``) and ``--trust-checkpoint``.

    Args:
        parser (argparse.ArgumentParser): The script's parser.

    Returns:
        argparse.ArgumentParser: ``parser``.

    Example:
        >>> parser = add_inference_args(argparse.ArgumentParser())
        >>> parser.parse_args(['--batch-size', '8']).batch_size
        8
    """
    parser.add_argument('--device', default='cpu', help='torch device')
    parser.add_argument('--batch-size', type=int, default=32, help='indexing batch')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. model.fusion_weight=0.5',
    )
    parser.add_argument(
        '--trust-checkpoint', action='store_true', help=TRUST_CHECKPOINT_HELP
    )
    return parser


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


def build_runner(cfg: Config):
    """Build the Runner the config asks for (``runner_type``, else MMEngine's)."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    from mmengine.runner import Runner

    return Runner.from_cfg(cfg)
