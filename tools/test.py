"""Evaluate a tbps_mm model: ``python tools/test.py CONFIG CHECKPOINT [options]``.

Runs MMEngine's test loop over the config's test split (every gallery image
and every query encoded once), prints the field's table (task | R1 | R5 | R10
| mAP | mINP), and optionally writes the ranked lists (``--out``) and
ranked-list figures (``--show-dir``), worst queries first so that failures
are easy to find.

Examples:
    python tools/test.py configs/tbps_cuhk.py work_dirs/cuhk/best.pth
    python tools/test.py configs/tbps_cuhk.py model.pth --rerank --i2t
    python tools/test.py configs/tbps_synth.py model.pth --out ranked.json \\
        --show-dir work_dirs/vis --show-topk 10
    bash tools/dist_test.sh configs/tbps_cuhk.py model.pth 4
"""

import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional

from mmengine.config import DictAction
from mmengine.dist import is_main_process

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import (
    LaunchError,
    build_runner,
    check_checkpoint,
    load_config,
    setup_distributed,
    teardown_distributed,
)
from tbps_mm.evaluation import TBPSRetrievalMetric, format_retrieval_table
from tbps_mm.visualization import draw_ranked_list


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Evaluate a tbps_mm model')
    parser.add_argument('config', help='test config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where logs go')
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
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. test_dataloader.batch_size=128',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser.parse_args(argv)


def _is_retrieval_metric(cfg) -> bool:
    return (
        isinstance(cfg, dict)
        and str(cfg.get('type', '')).split('.')[-1] == 'TBPSRetrievalMetric'
    )


def merge_args(cfg, args):
    """Apply the command line on top of the config."""
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(
            './work_dirs', osp.splitext(osp.basename(args.config))[0]
        )
    check_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if cfg.get('test_dataloader') is None or cfg.get('test_evaluator') is None:
        raise LaunchError(
            f'config "{args.config}" has no test_dataloader / test_evaluator'
        )
    if args.show_topk < 1:
        raise LaunchError(f'--show-topk must be >= 1, got {args.show_topk}')
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
    return cfg


def find_metric(runner) -> Optional[TBPSRetrievalMetric]:
    for metric in runner.test_evaluator.metrics:
        if isinstance(metric, TBPSRetrievalMetric):
            return metric
    return None


def ranked_entries(ranked: dict, topk: int) -> list:
    """Per query: caption, gt person, its top-k gallery items and AP."""
    gallery = ranked['gallery']
    entries = []
    for q, query in enumerate(ranked['queries']):
        items = []
        for rank, (g, score) in enumerate(
            zip(
                ranked['indices'][q, :topk].tolist(),
                ranked['scores'][q, :topk].tolist(),
            ),
            start=1,
        ):
            item = gallery[g]
            items.append(
                dict(
                    rank=rank,
                    img_path=item.get('img_path'),
                    gt_label=item['gt_label'],
                    score=float(score),
                    correct=item['gt_label'] == query['gt_label'],
                )
            )
        entries.append(
            dict(
                sample_idx=query.get('sample_idx'),
                caption=query.get('text'),
                gt_label=query['gt_label'],
                ap=float(ranked['ap'][q]),
                first_correct_rank=float(ranked['first_rank'][q]),
                topk=items,
            )
        )
    return entries


def write_ranked_json(path: str, entries: list, metrics: dict, ranked: dict) -> None:
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(
            dict(metrics=metrics, reranked=ranked['reranked'], queries=entries),
            f,
            indent=1,
        )


def draw_worst_first(show_dir: str, entries: list, show_num: int) -> int:
    """Ranked-list figures sorted by AP, worst first; returns how many."""
    os.makedirs(show_dir, exist_ok=True)
    order = sorted(range(len(entries)), key=lambda i: (entries[i]['ap'], i))
    if show_num > 0:
        order = order[:show_num]
    for position, q in enumerate(order, start=1):
        entry = entries[q]
        header = (
            f'query {entry["sample_idx"]} | person {entry["gt_label"]} | '
            f'AP {100 * entry["ap"]:.1f} | first correct at rank '
            f'{entry["first_correct_rank"]:g}'
        )
        figure = draw_ranked_list(
            entry['caption'] or '',
            [item['img_path'] for item in entry['topk']],
            scores=[item['score'] for item in entry['topk']],
            correct=[item['correct'] for item in entry['topk']],
            header=header,
        )
        name = (
            f'{position:05d}_ap{100 * entry["ap"]:05.1f}_query{entry["sample_idx"]}.png'
        )
        figure.save(osp.join(show_dir, name))
    return len(order)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
        cfg = merge_args(cfg, args)
    except LaunchError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    setup_distributed(cfg, args.launcher)
    try:
        runner = build_runner(cfg)
        metrics = runner.test()
        if is_main_process():
            print(format_retrieval_table(metrics))
            metric = find_metric(runner)
            ranked = metric.ranked_results if metric is not None else None
            if ranked is not None and (args.out or args.show_dir):
                entries = ranked_entries(ranked, args.show_topk)
                if args.out:
                    write_ranked_json(args.out, entries, metrics, ranked)
                    print(f'ranked lists written to {args.out}')
                if args.show_dir:
                    count = draw_worst_first(args.show_dir, entries, args.show_num)
                    print(f'{count} ranked-list images written to {args.show_dir}')
    finally:
        teardown_distributed()
    return 0


if __name__ == '__main__':
    sys.exit(main())
