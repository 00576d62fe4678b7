"""Evaluate a tbps_mm model: ``python tools/test.py CONFIG CHECKPOINT [options]``.

Runs MMEngine's test loop over the config's test split (every gallery image
and every query encoded once); ``TBPSRetrievalMetric`` logs the field's table
(task | R1 | R5 | R10 | mAP | mINP) to the console and the log file. With
``--out`` / ``--show-dir`` a ``RankedListHook`` writes the ranked lists and
draws them through ``TBPSVisualizer``, worst queries first so that failures
are easy to find.

Examples:
    python tools/test.py configs/tbps_cuhk.py work_dirs/cuhk/best.pth
    python tools/test.py configs/tbps_cuhk.py model.pth --rerank --i2t
    python tools/test.py configs/tbps_synth.py model.pth --out ranked.json \\
        --show-dir work_dirs/vis --show-topk 10
    bash tools/dist_test.sh configs/tbps_cuhk.py model.pth 4
"""

import argparse
import sys

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import (
    LaunchError,
    add_launch_args,
    build_runner,
    check_checkpoint,
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
    parser = argparse.ArgumentParser(description='Evaluate a tbps_mm model')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='write the ranked lists (JSON: per query, its top-k)'
    )
    parser.add_argument(
        '--show-dir', help='write ranked-list images, worst queries (by AP) first'
    )
    parser.add_argument(
        '--show-topk', type=int, default=10, help='gallery items per ranked list'
    )
    parser.add_argument(
        '--show-num',
        type=int,
        default=100,
        help='how many queries --show-dir draws (worst AP first; 0 = all)',
    )
    parser.add_argument(
        '--rerank', action='store_true', help='add k-reciprocal re-ranking'
    )
    parser.add_argument(
        '--i2t', action='store_true', help='add image-to-text retrieval'
    )
    parser.add_argument(
        '--trust-checkpoint', action='store_true', help=TRUST_CHECKPOINT_HELP
    )
    add_launch_args(parser)
    return parser.parse_args(argv)


def _is_retrieval_metric(cfg) -> bool:
    return (
        isinstance(cfg, dict)
        and str(cfg.get('type', '')).split('.')[-1] == 'TBPSRetrievalMetric'
    )


def merge_args(cfg, args):
    """Apply the command line on top of the config."""
    resolve_work_dir(cfg, args.config, args.work_dir)
    check_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    cfg.trust_checkpoint = bool(args.trust_checkpoint)
    if cfg.get('test_dataloader') is None or cfg.get('test_evaluator') is None:
        raise LaunchError(
            f'config "{args.config}" has no test_dataloader / test_evaluator'
        )
    if args.show_topk < 1:
        raise LaunchError(f'--show-topk must be >= 1, got {args.show_topk}')
    if args.show_num < 0:
        raise LaunchError(f'--show-num must be >= 0, got {args.show_num}')
    evaluators = cfg.test_evaluator
    evaluators = evaluators if isinstance(evaluators, list) else [evaluators]
    metrics = [m for m in evaluators if _is_retrieval_metric(m)]
    if not metrics:
        raise LaunchError(
            f'config "{args.config}": test_evaluator has no TBPSRetrievalMetric'
        )
    for metric in metrics:
        if args.rerank:
            metric['rerank'] = True
        if args.i2t:
            metric['i2t'] = True
        if args.out or args.show_dir:
            metric['keep_ranked'] = max(metric.get('keep_ranked', 0), args.show_topk)
    if args.out or args.show_dir:
        hooks = list(cfg.get('custom_hooks') or [])
        hooks.append(
            dict(
                type='RankedListHook',
                out_file=args.out,
                show_dir=args.show_dir,
                topk=args.show_topk,
                num=args.show_num,
            )
        )
        cfg.custom_hooks = hooks
    return cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = prepare_config(args, merge_args)
    if cfg is None:
        return 2
    setup_distributed(cfg, args.launcher)
    try:
        build_runner(cfg).test()
    except (CheckpointMismatchError, UnsafeCheckpointError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    finally:
        teardown_distributed()
    return 0


if __name__ == '__main__':
    exit_process(main())
