"""Train a tbps_mm model: ``python tools/train.py CONFIG [options]``.

Examples:
    python tools/train.py configs/tbps_synth.py --test
    python tools/train.py configs/tbps_cuhk.py --amp --work-dir work_dirs/cuhk
    python tools/train.py configs/tbps_cuhk.py --resume            # latest in work dir
    python tools/train.py configs/tbps_cuhk.py --resume work_dirs/cuhk/epoch_10.pth
    bash tools/dist_train.sh configs/tbps_cuhk.py 4  # 4 GPUs (or CPU processes)
    bash tools/dist_train.sh configs/tbps_cuhk.py 4 --auto-scale-lr

At the end it prints the commands that publish the best (else the last)
checkpoint, evaluate the published file and search images with it.
"""

import argparse
import os.path as osp
import sys
from typing import Optional

from mmengine.dist import is_main_process

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import (
    LaunchError,
    add_launch_args,
    build_runner,
    check_checkpoint,
    check_train_length,
    exit_process,
    prepare_config,
    resolve_work_dir,
    setup_distributed,
    teardown_distributed,
)
from tbps_mm.models.checkpoint import (
    TRUST_CHECKPOINT_HELP,
    CheckpointMismatchError,
    UnsafeCheckpointError,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a tbps_mm model')
    parser.add_argument('config', help='train config file')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the latest checkpoint in the work dir (no value or '
        '"auto") or from the given checkpoint',
    )
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision (AmpOptimWrapper)'
    )
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate linearly with the total batch (processes x '
        "train_dataloader.batch_size) against the config's "
        "auto_scale_lr.base_batch_size (MMEngine's rule)",
    )
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='do not evaluate during or after training',
    )
    parser.add_argument(
        '--test',
        action='store_true',
        help='after training, evaluate the final model on the test split',
    )
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='for --resume / load_from: ' + TRUST_CHECKPOINT_HELP,
    )
    add_launch_args(parser, work_dir_help='where logs and checkpoints go')
    return parser.parse_args(argv)


def merge_args(cfg, args):
    """Apply the command line on top of the config."""
    resolve_work_dir(cfg, args.config, args.work_dir)
    check_train_length(cfg, args.config)
    cfg.trust_checkpoint = bool(args.trust_checkpoint)
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper not in ('AmpOptimWrapper', 'mmengine.AmpOptimWrapper'):
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            raise LaunchError(
                f'--auto-scale-lr: config "{args.config}" has no '
                'auto_scale_lr.base_batch_size (the total batch size its learning '
                'rate is tuned for); add auto_scale_lr = dict(base_batch_size=N)'
            )
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        check_checkpoint(args.resume, 'resume checkpoint')
        cfg.resume = True
        cfg.load_from = args.resume
    elif cfg.get('load_from'):
        check_checkpoint(cfg.load_from, 'load_from checkpoint')
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    return cfg


def trained_checkpoint(runner) -> Optional[str]:
    """The best checkpoint the run kept (``save_best``), else its last one."""
    for key in ('best_ckpt', 'last_ckpt'):
        path = runner.message_hub.get_info(key)
        if path and osp.isfile(path):
            return path
    return None


def next_steps(config: str, checkpoint: str, work_dir: str) -> str:
    """The publish, test and search commands for a trained checkpoint."""

    def short(path: str) -> str:
        relative = osp.relpath(path)
        return path if relative.startswith('..') else relative

    checkpoint, work_dir = short(checkpoint), short(work_dir)
    stem = osp.splitext(osp.basename(config))[0]
    published = osp.join(work_dir, f'{stem}-<sha256[:8]>.safetensors')
    return '\n'.join(
        [
            f'Trained checkpoint: {checkpoint}. Next steps:',
            '  1. publish (weights only, named with its SHA-256 prefix):',
            '     python tools/model_converters/publish_model.py '
            f'{checkpoint} {osp.join(work_dir, stem + ".safetensors")} '
            f'--config {config}',
            '  2. evaluate the published file (the name step 1 prints):',
            f'     python tools/test.py {config} {published}',
            '  3. search your images with it:',
            f'     python tools/search.py {config} {published} '
            '--images DIR --query "a woman in a red coat"',
        ]
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = prepare_config(args, merge_args)
    if cfg is None:
        return 2
    setup_distributed(cfg, args.launcher)
    try:
        runner = build_runner(cfg)
        runner.train()
        if args.test:
            runner.test()
        checkpoint = trained_checkpoint(runner)
        if checkpoint and is_main_process():
            print(next_steps(args.config, checkpoint, runner.work_dir))
    except (CheckpointMismatchError, UnsafeCheckpointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    finally:
        teardown_distributed()
    return 0


if __name__ == '__main__':
    exit_process(main())
