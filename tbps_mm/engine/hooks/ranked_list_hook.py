"""``RankedListHook``: write and draw the ranked lists of a test run.

``TBPSRetrievalMetric(keep_ranked=K)`` publishes every query's top K gallery
items in MMEngine's message hub (``RANKED_LISTS_INFO``) when it computes. After
the test epoch this hook turns them into a JSON file (per query: caption,
person, AP, first correct rank, top K with scores and correctness) and into
ranked-list figures drawn by :class:`~tbps_mm.visualization.TBPSVisualizer`,
worst queries (by AP) first so that failures are easy to find. It is what
``tools/test.py --out / --show-dir`` adds to the config.

Example:
    >>> custom_hooks = [dict(type='RankedListHook', out_file='ranked.json',
    ...                      show_dir='work_dirs/vis', topk=10, num=100)]
"""

import json
import os
import os.path as osp
from typing import Dict, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook

from tbps_mm.evaluation.metrics import RANKED_LISTS_INFO
from tbps_mm.registry import HOOKS
from tbps_mm.visualization import TBPSVisualizer

__all__ = ['RankedListHook', 'ranked_entries']


def ranked_entries(ranked: dict, topk: int) -> List[dict]:
    """Per query: caption, person, AP, first correct rank and its top ``topk``.

    Args:
        ranked (dict): The metric's ranked lists (``queries``, ``gallery``,
            ``indices``, ``scores``, ``ap``, ``first_rank``).
        topk (int): Gallery items kept per query.

    Returns:
        list[dict]: One entry per query, in the metric's query order.

    Example:
        >>> entries = ranked_entries(metric.ranked_results, 5)  # doctest: +SKIP
    """
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
                first_correct_rank=int(ranked['first_rank'][q]),
                topk=items,
            )
        )
    return entries


@HOOKS.register_module()
class RankedListHook(Hook):
    """Write (``out_file``) and draw (``show_dir``) a test run's ranked lists.

    Needs a ``TBPSRetrievalMetric`` in the test evaluator with
    ``keep_ranked >= topk``. Runs on the main process only.

    Args:
        out_file (str, optional): JSON file for the ranked lists and the
            test metrics.
        show_dir (str, optional): Folder for the ranked-list figures
            (``<position>_ap<AP>_query<sample_idx>.png``).
        topk (int): Gallery items per ranked list. Defaults to 10.
        num (int): How many queries ``show_dir`` gets, worst AP first; 0
            draws all. Defaults to 100.

    Example:
        >>> hook = dict(type='RankedListHook', show_dir='work_dirs/vis')
    """

    priority = 'LOW'

    def __init__(
        self,
        out_file: Optional[str] = None,
        show_dir: Optional[str] = None,
        topk: int = 10,
        num: int = 100,
    ) -> None:
        if out_file is None and show_dir is None:
            raise ValueError('RankedListHook: give out_file, show_dir or both')
        if topk < 1:
            raise ValueError(f'RankedListHook: topk must be >= 1, got {topk}')
        if num < 0:
            raise ValueError(f'RankedListHook: num must be >= 0, got {num}')
        self.out_file = out_file
        self.show_dir = show_dir
        self.topk = int(topk)
        self.num = int(num)

    def after_test_epoch(
        self, runner, metrics: Optional[Dict[str, float]] = None
    ) -> None:
        """Read the metric's ranked lists from the message hub; write and draw."""
        if not is_main_process():
            return
        ranked = runner.message_hub.get_info(RANKED_LISTS_INFO)
        if ranked is None:
            raise RuntimeError(
                'RankedListHook: no ranked lists in the message hub; the test '
                'evaluator needs a TBPSRetrievalMetric with keep_ranked >= '
                f'{self.topk}'
            )
        entries = ranked_entries(ranked, self.topk)
        if self.out_file:
            self._write(entries, dict(metrics or {}), ranked['reranked'])
            runner.logger.info(f'ranked lists written to {self.out_file}')
        if self.show_dir:
            count = self._draw(runner, entries)
            runner.logger.info(f'{count} ranked-list images written to {self.show_dir}')

    def _write(self, entries: List[dict], metrics: dict, reranked: bool) -> None:
        os.makedirs(osp.dirname(osp.abspath(self.out_file)), exist_ok=True)
        with open(self.out_file, 'w', encoding='utf-8') as f:
            json.dump(
                dict(metrics=metrics, reranked=reranked, queries=entries),
                f,
                indent=1,
            )

    def _draw(self, runner, entries: List[dict]) -> int:
        visualizer = runner.visualizer
        if not isinstance(visualizer, TBPSVisualizer):
            visualizer = TBPSVisualizer.get_instance('tbps_ranked_lists')
        os.makedirs(self.show_dir, exist_ok=True)
        order = sorted(range(len(entries)), key=lambda i: (entries[i]['ap'], i))
        if self.num > 0:
            order = order[: self.num]
        for position, q in enumerate(order, start=1):
            entry = entries[q]
            name = (
                f'{position:05d}_ap{100 * entry["ap"]:05.1f}_query{entry["sample_idx"]}'
            )
            visualizer.add_ranked_list(
                name,
                entry['caption'] or '',
                [item['img_path'] for item in entry['topk']],
                scores=[item['score'] for item in entry['topk']],
                correct=[item['correct'] for item in entry['topk']],
                header=(
                    f'query {entry["sample_idx"]} | person {entry["gt_label"]} | '
                    f'AP {100 * entry["ap"]:.1f} | first correct at rank '
                    f'{entry["first_correct_rank"]}'
                ),
                out_file=osp.join(self.show_dir, name + '.png'),
            )
        return len(order)
