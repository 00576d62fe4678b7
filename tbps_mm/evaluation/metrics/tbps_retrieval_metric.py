"""``TBPSRetrievalMetric``: the TBPS protocol as an MMEngine metric.

It owns the bridge between MMEngine's evaluation loop and
:func:`tbps_mm.evaluation.functional.rank_metrics`: ``process`` keeps, per
sample, its modality, label, ``sample_idx`` and embeddings (on the CPU);
``compute_metrics`` splits the gallery (``modality='image'``) from the queries
(``modality='text'``), builds the similarities query chunk by query chunk
(never the full matrix) and reports, in percent:

- ``t2i/R1 ... t2i/mINP``: the fused score ``s_coarse + lambda * mean_k s_k``;
- ``t2i-coarse/...``: the coarse (global) embeddings only;
- ``t2i-parts/...``: the part embeddings only (when the model has parts);
- ``t2i-rerank/...``: the fused score after k-reciprocal re-ranking
  (``rerank=True``);
- ``i2t/...``: image-to-text with the fused score (``i2t=True``);
- ``t2i-family/R1, mAP, mINP`` (and ``t2i-family-coarse/...``,
  ``t2i-family-parts/...``): every query ranked against its own family's
  gallery only (``within_family=True``, SynthPedes families; the samples
  carry ``family_id``), :func:`~tbps_mm.evaluation.functional.grouped_rank_stats`.

The numbers are identical in one process and under DDP: MMEngine's
``collect_results`` returns the samples in dataset order and drops the
distributed sampler's padding by dataset size; the metric additionally keeps
one record per ``sample_idx`` and sorts by it, so a padded duplicate can never
count twice. All the ranking runs on rank 0 over the same records.

After computing, the field's table (task | R1 | R5 | R10 | mAP | mINP) is
logged with MMEngine's logger (console and log file). With ``keep_ranked > 0``
the top ranked gallery items of every query are kept in
:attr:`ranked_results` (on rank 0) and published in MMEngine's message hub
under :data:`RANKED_LISTS_INFO`, where hooks such as ``RankedListHook``
(``tools/test.py --out / --show-dir``) read them.

Example:
    >>> metric = TBPSRetrievalMetric(i2t=True)
    >>> # val_evaluator = dict(type='TBPSRetrievalMetric') in a config
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, print_log
from mmengine.structures import BaseDataElement

from tbps_mm.fused_score import fuse_scores, score_terms
from tbps_mm.registry import METRICS

from ..functional import (
    DEFAULT_MEMORY_BUDGET,
    grouped_rank_stats,
    query_rank_stats,
    rank_lists,
    summarize_rank_stats,
)
from ..rerank import KReciprocalReranker
from ..retrieval_table import format_retrieval_table

__all__ = ['RANKED_LISTS_INFO', 'TBPSRetrievalMetric']

#: Message-hub key of the ranked lists kept with ``keep_ranked > 0``.
RANKED_LISTS_INFO = 'tbps_ranked_lists'

MODALITY_PREFIX = {'image': 'img', 'text': 'text'}


def _label(value, where: str) -> int:
    """A person label as an int (DataSample stores a 1-element tensor)."""
    if value is None:
        raise KeyError(f'{where} has no gt_label')
    tensor = torch.as_tensor(value).reshape(-1)
    if tensor.numel() != 1:
        raise ValueError(f'{where} has gt_label {value!r}; expected one label')
    return int(tensor[0])


@METRICS.register_module()
class TBPSRetrievalMetric(BaseMetric):
    """Text-to-image retrieval metrics of the TBPS protocol.

    Args:
        topk (Sequence[int]): The K of each R@K. Defaults to (1, 5, 10).
        fusion_weight (float, optional): lambda of the fused score. ``None``
            (default) takes the ``fusion_weight`` the model put in the
            samples' metainfo: lambda is the model's, so validation ranks
            the score search and export rank, and no evaluator copy can
            drift from it. Set it only to override on purpose (a lambda
            sweep over one set of embeddings).
        i2t (bool): Also report image-to-text. Defaults to False.
        rerank (bool): Also report k-reciprocal re-ranking of the fused score
            (``t2i-rerank/...``). Defaults to False.
        rerank_cfg (dict, optional): ``k1``, ``k2``, ``lambda_value`` for
            :class:`~tbps_mm.evaluation.rerank.KReciprocalReranker`.
        chunk_size (int, optional): Queries per similarity chunk; ``None``
            keeps each chunk's temporaries within 256 MiB. The numbers do not
            depend on it.
        keep_ranked (int): Keep the top ``keep_ranked`` gallery items of
            every query (fused score, re-ranked when ``rerank``) in
            :attr:`ranked_results`. Defaults to 0 (keep nothing).
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        within_family (bool): Also report the within-family numbers
            (``t2i-family/...``; chance R@1 = 1 / family size). Every sample
            must carry ``family_id`` (SynthPedes with ``families=M``).
            Defaults to False.
        prefix (str, optional): Prepended to every key (``prefix/t2i/R1``).
        collect_dir (str, optional): Shared folder for CPU collection.

    Example:
        >>> val_evaluator = dict(type='TBPSRetrievalMetric', rerank=True,
        ...                      rerank_cfg=dict(k1=20, k2=6))
    """

    # The keys carry their task already (``t2i/R1``); an empty default
    # prefix keeps them as they are (and MMEngine quiet about it).
    default_prefix = ''

    def __init__(
        self,
        topk: Sequence[int] = (1, 5, 10),
        fusion_weight: Optional[float] = None,
        i2t: bool = False,
        rerank: bool = False,
        rerank_cfg: Optional[dict] = None,
        chunk_size: Optional[int] = None,
        keep_ranked: int = 0,
        within_family: bool = False,
        collect_device: str = 'cpu',
        prefix: Optional[str] = None,
        collect_dir: Optional[str] = None,
    ) -> None:
        super().__init__(
            collect_device=collect_device, prefix=prefix, collect_dir=collect_dir
        )
        self.topk = tuple(int(k) for k in topk)
        if not self.topk or min(self.topk) < 1:
            raise ValueError(f'topk must hold integers >= 1, got {topk!r}')
        self.fusion_weight = None if fusion_weight is None else float(fusion_weight)
        self.i2t = bool(i2t)
        self.rerank = bool(rerank)
        self.rerank_cfg = dict(rerank_cfg or {})
        unknown = set(self.rerank_cfg) - {'k1', 'k2', 'lambda_value'}
        if unknown:
            raise ValueError(
                f'rerank_cfg has unknown keys {sorted(unknown)}; '
                "allowed: 'k1', 'k2', 'lambda_value'"
            )
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
        self.chunk_size = chunk_size
        self.keep_ranked = int(keep_ranked)
        self.within_family = bool(within_family)
        #: Set by :meth:`compute_metrics` when ``keep_ranked > 0`` (rank 0).
        self.ranked_results: Optional[dict] = None

    # ------------------------------------------------------------------ #
    # Collection
    # ------------------------------------------------------------------ #
    def process(self, data_batch, data_samples: Sequence) -> None:
        """Keep the embeddings, label and identity of every sample.

        Args:
            data_batch: The batch (unused: everything needed is in the
                predictions).
            data_samples (Sequence[dict | DataSample]): The model's
                ``predict`` outputs (docs/data_flow.md section 4).
        """
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            self.results.append(self._record(sample))

    @staticmethod
    def _record(sample: dict) -> dict:
        sample_idx = sample.get('sample_idx')
        where = f'sample {sample_idx}' if sample_idx is not None else 'a sample'
        modality = sample.get('modality')
        if modality is None:  # infer it from the embeddings present
            present = [m for m, p in MODALITY_PREFIX.items() if f'{p}_embed' in sample]
            modality = present[0] if len(present) == 1 else None
        if modality not in MODALITY_PREFIX:
            raise ValueError(
                f'TBPSRetrievalMetric: {where} has modality {modality!r}; it '
                "evaluates gallery ('image') and query ('text') items of a "
                'val/test split (docs/data_flow.md section 1)'
            )
        key = MODALITY_PREFIX[modality]
        embed = sample.get(f'{key}_embed')
        if embed is None:
            raise KeyError(
                f'TBPSRetrievalMetric: {where} ({modality}) has no "{key}_embed": '
                "the model's predict must add it (docs/data_flow.md section 4)"
            )
        embed = torch.as_tensor(embed).detach().cpu().float().reshape(-1)
        parts = sample.get(f'{key}_part_embeds')
        if parts is None:
            parts = embed.new_zeros((0, embed.numel()))
        parts = torch.as_tensor(parts).detach().cpu().float()
        record = dict(
            sample_idx=None if sample_idx is None else int(sample_idx),
            modality=modality,
            gt_label=_label(sample.get('gt_label'), f'TBPSRetrievalMetric: {where}'),
            embed=embed,
            part_embeds=parts,
            fusion_weight=sample.get('fusion_weight'),
        )
        for name in ('img_path', 'text', 'image_id', 'person_id', 'family_id'):
            if sample.get(name) is not None:
                record[name] = sample[name]
        return record

    # ------------------------------------------------------------------ #
    # Computation
    # ------------------------------------------------------------------ #
    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Rank every query against the gallery and summarise.

        Args:
            results (list[dict]): The records of all ranks, in dataset order.

        Returns:
            dict[str, float]: ``t2i/R1``, ..., as listed in the module
            docstring.
        """
        results = self._unique(results)
        gallery = [r for r in results if r['modality'] == 'image']
        queries = [r for r in results if r['modality'] == 'text']
        if not gallery or not queries:
            raise ValueError(
                f'TBPSRetrievalMetric got {len(gallery)} gallery images and '
                f'{len(queries)} queries; both are needed: evaluate on a '
                'val/test split (gallery items, then query items)'
            )
        g, q = self._stack(gallery, 'gallery'), self._stack(queries, 'query')
        if g['embed'].shape[1] != q['embed'].shape[1] or (
            g['parts'].shape[1:] != q['parts'].shape[1:]
        ):
            raise ValueError(
                'TBPSRetrievalMetric: image and text embeddings differ in shape '
                f'(coarse {tuple(g["embed"].shape[1:])} vs '
                f'{tuple(q["embed"].shape[1:])}, parts '
                f'{tuple(g["parts"].shape[1:])} vs {tuple(q["parts"].shape[1:])})'
            )
        weight = self._resolve_fusion_weight(results)
        num_parts = g['parts'].shape[1]
        print_log(
            f'TBPSRetrievalMetric: ranking {len(queries)} queries against '
            f'{len(gallery)} gallery images (K={num_parts}, lambda={weight})',
            logger='current',
        )

        tasks = ['t2i', 't2i-coarse'] + (['t2i-parts'] if num_parts else [])
        keep = self.keep_ranked if not self.rerank else 0
        stats, lists = self._rank(q, g, weight, tasks, keep)
        if self.rerank:
            stats['t2i-rerank'], lists = self._rank_reranked(
                q, g, weight, self.keep_ranked
            )
        if self.i2t:
            stats['i2t'] = self._rank(g, q, weight, ['t2i'], 0)[0]['t2i']
        metrics: Dict[str, float] = {}
        for task, task_stats in stats.items():
            summary = summarize_rank_stats(task_stats, self.topk)
            metrics.update({f'{task}/{k}': v for k, v in summary.items()})
        if self.within_family:
            metrics.update(self._within_family(queries, gallery, q, g, weight, tasks))

        if self.keep_ranked > 0:
            ranked_task = 't2i-rerank' if self.rerank else 't2i'
            self.ranked_results = self._ranked(
                queries, gallery, stats[ranked_task], lists
            )
            # Runtime information, not training state: never saved to a
            # checkpoint.
            MessageHub.get_current_instance().update_info(
                RANKED_LISTS_INFO, self.ranked_results, resumed=False
            )
        table = format_retrieval_table(metrics)
        print_log('Text-based person search results:\n' + table, logger='current')
        return metrics

    @staticmethod
    def _within_family(
        queries: List[dict],
        gallery: List[dict],
        q: Dict[str, torch.Tensor],
        g: Dict[str, torch.Tensor],
        weight: float,
        tasks: List[str],
    ) -> Dict[str, float]:
        """R@1 / mAP / mINP of every query ranked in its family's gallery."""
        families = {}
        for side, records in (('query', queries), ('gallery', gallery)):
            missing = [r.get('sample_idx') for r in records if 'family_id' not in r]
            if missing:
                raise KeyError(
                    f'TBPSRetrievalMetric(within_family=True): {len(missing)} '
                    f'{side} samples have no family_id (e.g. sample '
                    f'{missing[0]}); evaluate a SynthPedes generated with '
                    'families=M'
                )
            families[side] = torch.tensor(
                [int(r['family_id']) for r in records], dtype=torch.long
            )
        metrics: Dict[str, float] = {}
        for task in tasks:
            parts = []
            for family in torch.unique(families['query']).tolist():
                rows = (families['query'] == family).nonzero().flatten()
                cols = (families['gallery'] == family).nonzero().flatten()
                sub_q = {k: v[rows] for k, v in q.items()}
                sub_g = {k: v[cols] for k, v in g.items()}
                scores = TBPSRetrievalMetric._scores(sub_q, sub_g, slice(None), weight)
                parts.append(
                    grouped_rank_stats(
                        scores[task],
                        sub_q['labels'],
                        sub_g['labels'],
                        torch.full((rows.numel(),), family),
                        torch.full((cols.numel(),), family),
                    )
                )
            summary = summarize_rank_stats(_concat(parts), (1,))
            name = task.replace('t2i', 't2i-family', 1)
            metrics.update({f'{name}/{k}': v for k, v in summary.items()})
        return metrics

    @staticmethod
    def _unique(results: List[dict]) -> List[dict]:
        """One record per ``sample_idx``, in ``sample_idx`` order."""
        if any(r['sample_idx'] is None for r in results):
            return list(results)
        unique = {}
        for r in results:
            unique.setdefault(r['sample_idx'], r)
        return [unique[i] for i in sorted(unique)]

    @staticmethod
    def _stack(records: List[dict], side: str) -> Dict[str, torch.Tensor]:
        shapes = {tuple(r['part_embeds'].shape) for r in records}
        dims = {r['embed'].numel() for r in records}
        if len(shapes) > 1 or len(dims) > 1:
            raise ValueError(
                f'TBPSRetrievalMetric: {side} embeddings differ in shape across '
                f'samples (coarse dims {sorted(dims)}, part shapes {sorted(shapes)})'
            )
        return dict(
            embed=torch.stack([r['embed'] for r in records]),
            parts=torch.stack([r['part_embeds'] for r in records]),
            labels=torch.tensor([r['gt_label'] for r in records], dtype=torch.long),
        )

    def _resolve_fusion_weight(self, results: List[dict]) -> float:
        if self.fusion_weight is not None:
            return self.fusion_weight
        weights = {
            float(r['fusion_weight'])
            for r in results
            if r.get('fusion_weight') is not None
        }
        if len(weights) > 1:
            raise ValueError(
                'TBPSRetrievalMetric: samples carry different fusion_weight '
                f"values {sorted(weights)}; set the metric's fusion_weight"
            )
        if not weights:
            raise ValueError(
                "TBPSRetrievalMetric: no fusion_weight in the samples' metainfo "
                "(the model's predict sets it); set the metric's fusion_weight"
            )
        return weights.pop()

    def _chunk(self, num_gallery: int) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        # Three (C, G) score matrices plus the ranking's temporaries.
        return max(1, DEFAULT_MEMORY_BUDGET // (num_gallery * 4 * 8))

    @staticmethod
    def _scores(
        q: Dict[str, torch.Tensor],
        g: Dict[str, torch.Tensor],
        rows: slice,
        weight: float,
    ) -> Dict[str, torch.Tensor]:
        """Fused, coarse and parts similarities of the query rows ``rows``."""
        coarse, parts = score_terms(
            q['embed'][rows], q['parts'][rows], g['embed'], g['parts']
        )
        out = {'t2i-coarse': coarse, 't2i': fuse_scores(coarse, parts, weight)}
        if parts is not None:
            out['t2i-parts'] = parts
        return out

    def _rank(
        self,
        q: Dict[str, torch.Tensor],
        g: Dict[str, torch.Tensor],
        weight: float,
        tasks: List[str],
        keep: int,
    ) -> Tuple[Dict[str, Dict[str, torch.Tensor]], Optional[tuple]]:
        """Per-query rank statistics of every task, query chunk by chunk.

        Returns the statistics per task and, when ``keep > 0``, the top
        ``keep`` (scores, indices) of the fused score.
        """
        chunk = self._chunk(g['embed'].shape[0])
        parts: Dict[str, list] = {t: [] for t in tasks}
        lists = []
        for start in range(0, q['embed'].shape[0], chunk):
            rows = slice(start, start + chunk)
            scores = self._scores(q, g, rows, weight)
            for task in tasks:
                parts[task].append(
                    query_rank_stats(scores[task], q['labels'][rows], g['labels'])
                )
            if keep > 0:
                lists.append(rank_lists(scores['t2i'], keep))
        stats = {t: _concat(parts[t]) for t in tasks}
        return stats, (_concat_lists(lists) if lists else None)

    def _rank_reranked(
        self,
        q: Dict[str, torch.Tensor],
        g: Dict[str, torch.Tensor],
        weight: float,
        keep: int,
    ) -> Tuple[Dict[str, torch.Tensor], Optional[tuple]]:
        """Rank statistics (and top-``keep`` lists) of the re-ranked score."""

        def gallery_rows(start: int, stop: int) -> torch.Tensor:
            return self._scores(g, g, slice(start, stop), weight)['t2i']

        reranker = KReciprocalReranker(
            gallery_rows, num_gallery=g['embed'].shape[0], **self.rerank_cfg
        )
        chunk = self._chunk(g['embed'].shape[0])
        parts, lists = [], []
        for start in range(0, q['embed'].shape[0], chunk):
            rows = slice(start, start + chunk)
            sim = reranker(self._scores(q, g, rows, weight)['t2i'])
            parts.append(query_rank_stats(sim, q['labels'][rows], g['labels']))
            if keep > 0:
                lists.append(rank_lists(sim, keep))
        return _concat(parts), (_concat_lists(lists) if lists else None)

    def _ranked(
        self,
        queries: List[dict],
        gallery: List[dict],
        stats: Dict[str, torch.Tensor],
        lists: tuple,
    ) -> dict:
        """The kept ranked lists with what is needed to show them."""
        scores, indices = lists

        def describe(r: dict) -> dict:
            keep = ('sample_idx', 'gt_label', 'img_path', 'text', 'image_id')
            return {k: r[k] for k in keep if k in r}

        return dict(
            queries=[describe(r) for r in queries],
            gallery=[describe(r) for r in gallery],
            indices=indices,
            scores=scores,
            ap=stats['ap'],
            first_rank=stats['first_rank'],
            reranked=self.rerank,
        )


def _concat(parts: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _concat_lists(lists: list):
    return torch.cat([s for s, _ in lists]), torch.cat([i for _, i in lists])
