"""A fixed-step probe of a model config: how far N training steps take it.

Choosing a quick-start model means comparing candidates at a budget far
below a full run. This probe trains a config for ``--steps`` iterations with
MMEngine's Runner (``IterBasedTrainLoop``; the quick start's optimizer,
gradient clipping, data and model; the schedule's shape over iterations: a
linear warm-up, then cosine decay), without validation, then tests it with
``runner.test()``, i.e. the config's ``TBPSRetrievalMetric``: text-to-image
R@1 / R@5 / R@10 / mAP of the fused, coarse-only and parts-only scores. It
prints them with the seconds per step and the mean losses of the last 50
steps.

A probe ranks candidates; it is not a substitute for the full run
(``tools/train.py CONFIG --test``), whose numbers are the ones reported.
Every change to the config goes through the config file or
``--cfg-options`` (e.g. ``configs/ablations/synth_global.py`` for the
global-only model).

Example:
    python tools/analysis_tools/model_probe.py configs/tbps_synth.py --steps 600
    python tools/analysis_tools/model_probe.py configs/tbps_synth.py \\
        --steps 600 --threads 1 --cfg-options model.losses.div=None
"""

import argparse
import os.path as osp
import sys
import time
from typing import Dict, Optional, Sequence

import torch
from _harness import iteration_schedule, write_result
from mmengine.config import Config, DictAction

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import build_runner, load_config
from tbps_mm.evaluation import format_retrieval_table


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a tbps_mm model config')
    parser.add_argument('--steps', type=int, default=300, help='training steps')
    parser.add_argument(
        '--lr', type=float, help="AdamW learning rate (default: the config's)"
    )
    parser.add_argument(
        '--batch-size', type=int, help="training batch (default: the config's)"
    )
    parser.add_argument('--seed', type=int, default=0, help='init and data seed')
    parser.add_argument('--threads', type=int, help='torch threads')
    parser.add_argument('--log-every', type=int, default=50)
    parser.add_argument(
        '--work-dir',
        help='where the Runner logs (default: work_dirs/model_probe/<config>)',
    )
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='config overrides'
    )
    args = parser.parse_args(argv)
    if args.steps < 2 or (args.batch_size is not None and args.batch_size < 2):
        parser.error('--steps and --batch-size must be >= 2')
    return args


def probe_config(cfg: Config, args: argparse.Namespace) -> Config:
    """The config with the probe's budget: iterations, no validation.

    Args:
        cfg (Config): The model config (after ``--cfg-options``).
        args (argparse.Namespace): ``steps``, ``lr``, ``batch_size``,
            ``seed``, ``log_every``, ``work_dir``.

    Returns:
        Config: ``cfg``, changed in place: ``IterBasedTrainLoop`` of
        ``steps`` iterations over an ``InfiniteSampler``,
        ``iteration_schedule``, one checkpoint at the end, no validation
        loop.
    """
    stem = osp.splitext(osp.basename(args.config))[0]
    cfg.work_dir = args.work_dir or osp.join('work_dirs', 'model_probe', stem)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.steps)
    cfg.train_dataloader.sampler = dict(type='InfiniteSampler', shuffle=True)
    cfg.param_scheduler = iteration_schedule(args.steps)
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=args.steps, max_keep_ckpts=1
    )
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=args.log_every)
    cfg.log_processor = dict(cfg.get('log_processor', {}), by_epoch=False)
    cfg.randomness = dict(cfg.get('randomness', {}), seed=args.seed)
    if args.lr is not None:
        cfg.optim_wrapper.optimizer.lr = args.lr
    if args.batch_size is not None:
        cfg.train_dataloader.batch_size = args.batch_size
    return cfg


def final_losses(runner, window: int = 50) -> Dict[str, float]:
    """Mean of every logged loss over the last ``window`` steps."""
    return {
        key.split('/', 1)[1]: float(buffer.mean(window))
        for key, buffer in runner.message_hub.log_scalars.items()
        if key.startswith('train/loss')
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = probe_config(load_config(args.config, args.cfg_options), args)
    runner = build_runner(cfg)
    start = time.perf_counter()
    runner.train()
    train_s = time.perf_counter() - start
    losses = final_losses(runner)
    metrics = runner.test()
    print(
        f'\n{args.config}: {args.steps} steps x batch '
        f'{cfg.train_dataloader.batch_size}, lr '
        f'{cfg.optim_wrapper.optimizer.lr:g}, seed {args.seed}; training '
        f'{train_s:.0f} s ({train_s / args.steps:.2f} s/step)\n'
    )
    print(format_retrieval_table(metrics))
    print(
        '\nmean losses, last 50 steps: '
        + ', '.join(f'{k} {v:.3f}' for k, v in losses.items())
    )
    write_result(
        args,
        dict(
            lr=cfg.optim_wrapper.optimizer.lr,
            batch_size=cfg.train_dataloader.batch_size,
            train_seconds=train_s,
            metrics=metrics,
            final_losses=losses,
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
