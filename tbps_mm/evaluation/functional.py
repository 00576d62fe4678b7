"""Retrieval metrics of the TBPS protocol: the single implementation in tbps_mm.

This module owns the field's numbers (R@K, mAP, mINP; docs/evaluation.md, section 1).
Every other part of tbps_mm (the metric class, ``tools/test.py``, the
benchmarks) calls these functions instead of re-implementing them.

Protocol, for each query (a row of ``sim``):

- a gallery item is *correct* when its label equals the query's label;
- the gallery is ranked by similarity, larger first;
- **tie rule** ("ties excluded"): a gallery item is ranked above a correct
  item only when its score is *strictly* higher. Equivalently, the ranking is
  the descending sort of the scores in which, among equal scores, the correct
  items come before the incorrect ones. Correct items tied with each other
  take consecutive ranks, so the rank of the ``j``-th correct item (1-based,
  correct items by descending score) is
  ``j + #{incorrect items scored strictly higher than it}``;
- R@K: percentage of queries whose first correct item has rank <= K;
- AP: mean over the correct items of ``j / rank_j``; mAP the mean over queries;
- INP: ``n / rank_n`` (``n`` correct items, ``rank_n`` the rank of the last);
  mINP the mean over queries;
- every query must have at least one correct gallery item (the field's
  protocol always has one); a query without one raises ``ValueError`` naming
  it, since AP and INP are undefined for it.

No argsort of the similarity matrix is needed: the rank of a correct item is
one plus the number of gallery scores strictly above it, found by a binary
search in the query's sorted scores (values only; no index matrix). Sorting a
chunk's rows (numpy's SIMD sort on the CPU) costs less than comparing every
score with every correct item's score once a query has more than a couple of
correct items. Queries are processed in chunks whose size is chosen from a
memory budget, so a 19,848 x 19,848 problem (ICFG-PEDES) runs in bounded
memory (256 MiB of temporaries by default).

Per-query AP is summed left to right with ``cumsum`` (trailing zero padding
cannot change the sum) and the means over queries use correctly rounded
summation (``math.fsum``), so the numbers are bit-identical whatever the
chunk size and whatever order the queries arrived in.

Written by hand because neither MMEngine nor MMPretrain offers
text-to-image retrieval metrics with mAP/mINP over labelled galleries
(MMPretrain's ``RetrievalRecall`` gives recall only, from a dense argsort).

Example:
    >>> import torch
    >>> from tbps_mm.evaluation.functional import rank_metrics
    >>> sim = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
    >>> rank_metrics(sim, [0, 1], [0, 1, 1], topk=(1, 2))['R1']
    100.0
"""

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence]

#: Default memory budget (bytes) of the temporaries of one query chunk.
DEFAULT_MEMORY_BUDGET = 256 * 1024**2


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """Convert a tensor, numpy array or sequence to a tensor without copying."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f'{name} must be a tensor, a numpy array or a sequence of numbers, '
            f'got {type(x).__name__}'
        ) from err


def _check_inputs(
    sim: ArrayLike, query_labels: ArrayLike, gallery_labels: ArrayLike
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate shapes and values; return tensors on the similarity's device."""
    sim = _as_tensor(sim, 'sim')
    if sim.dim() != 2:
        raise ValueError(
            f'sim must be a 2-D (num_queries, num_gallery) matrix, '
            f'got shape {tuple(sim.shape)}'
        )
    if sim.is_complex() or sim.dtype == torch.bool:
        raise TypeError(f'sim must hold real scores, got dtype {sim.dtype}')
    query_labels = _as_tensor(query_labels, 'query_labels').reshape(-1)
    gallery_labels = _as_tensor(gallery_labels, 'gallery_labels').reshape(-1)
    num_queries, num_gallery = sim.shape
    if query_labels.numel() != num_queries:
        raise ValueError(
            f'query_labels has {query_labels.numel()} entries but sim has '
            f'{num_queries} rows (one per query)'
        )
    if gallery_labels.numel() != num_gallery:
        raise ValueError(
            f'gallery_labels has {gallery_labels.numel()} entries but sim has '
            f'{num_gallery} columns (one per gallery item)'
        )
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(
            f'cannot rank an empty problem: {num_queries} queries, '
            f'{num_gallery} gallery items'
        )
    if sim.is_floating_point() and torch.isnan(sim).any():
        rows = torch.isnan(sim).any(dim=1).nonzero().flatten()[:5].tolist()
        raise ValueError(f'sim contains NaN scores (e.g. in query rows {rows})')
    device = sim.device
    return sim, query_labels.to(device), gallery_labels.to(device)


def auto_chunk_size(
    num_gallery: int,
    max_correct: int,
    element_size: int = 4,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> int:
    """Number of queries per chunk that keeps the temporaries within a budget.

    One query costs about ``num_gallery * (3 * element_size + 1)`` bytes (its
    masked and sorted score copies, the numpy sort's buffer and its boolean
    match row) plus a few ``max_correct``-sized rows.

    Args:
        num_gallery (int): Gallery size G.
        max_correct (int): The most correct gallery items of any query.
        element_size (int): Bytes per similarity score. Defaults to 4.
        memory_budget (int): Bytes allowed for one chunk. Defaults to 256 MiB.

    Returns:
        int: The chunk size, at least 1.

    Example:
        >>> auto_chunk_size(19848, 20)
        1035
    """
    per_query = num_gallery * (3 * element_size + 1) + 64 * max(max_correct, 1)
    return max(1, int(memory_budget // per_query))


def query_rank_stats(
    sim: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    chunk_size: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Per-query ranking statistics, computed chunk by chunk.

    Args:
        sim (Tensor | np.ndarray): (Q, G) similarities, larger = more similar.
        query_labels (Tensor | np.ndarray | Sequence[int]): (Q,) labels.
        gallery_labels (Tensor | np.ndarray | Sequence[int]): (G,) labels.
        chunk_size (int, optional): Queries per chunk. ``None`` picks one from
            :data:`DEFAULT_MEMORY_BUDGET`.

    Returns:
        dict[str, Tensor]: CPU tensors of length Q: ``first_rank`` (int64, the
        rank of the first correct item), ``num_correct`` (int64), ``last_rank``
        (int64, the rank of the last correct item), ``ap`` and ``inp``
        (float64, fractions in [0, 1]).

    Raises:
        ValueError: on malformed input or a query without a correct item.

    Example:
        >>> stats = query_rank_stats([[0.1, 0.9, 0.8, 0.7]], [1], [0, 1, 0, 1])
        >>> stats['first_rank'].tolist(), stats['last_rank'].tolist()
        ([1], [3])
    """
    sim, query_labels, gallery_labels = _check_inputs(sim, query_labels, gallery_labels)
    num_queries, num_gallery = sim.shape

    # The correct items of a query without a (Q, G) match matrix: group the
    # gallery by label once; a query's correct items are the contiguous run
    # of its label in that order.
    gallery_order = torch.argsort(gallery_labels, stable=True)
    uniq, counts = torch.unique_consecutive(
        gallery_labels[gallery_order], return_counts=True
    )
    run_starts = torch.cumsum(counts, 0) - counts
    pos = torch.searchsorted(uniq, query_labels).clamp(max=uniq.numel() - 1)
    found = uniq[pos] == query_labels
    num_correct = torch.where(found, counts[pos], torch.zeros_like(counts[pos]))
    missing = (~found).nonzero().flatten()
    if missing.numel() > 0:
        examples = [(int(i), query_labels[i].item()) for i in missing[:5].tolist()]
        raise ValueError(
            f'{missing.numel()} of {num_queries} queries have no correct '
            f'gallery item, so their AP/INP are undefined; (query index, '
            f'label) e.g. {examples}. Every query label must occur in the '
            f'gallery labels.'
        )
    first_correct = run_starts[pos]
    max_correct = int(num_correct.max())
    if chunk_size is None:
        chunk_size = auto_chunk_size(num_gallery, max_correct, sim.element_size())
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')

    first_ranks, last_ranks, aps = [], [], []
    for start in range(0, num_queries, chunk_size):
        stop = start + chunk_size
        first, last, ap = _chunk_rank_stats(
            sim[start:stop],
            gallery_order,
            first_correct[start:stop],
            num_correct[start:stop],
        )
        first_ranks.append(first)
        last_ranks.append(last)
        aps.append(ap)
    num_correct = num_correct.cpu().long()
    last_rank = torch.cat(last_ranks)
    return dict(
        first_rank=torch.cat(first_ranks),
        last_rank=last_rank,
        num_correct=num_correct,
        ap=torch.cat(aps),
        inp=num_correct.double() / last_rank.double(),
    )


def _sort_rows(sim: torch.Tensor) -> torch.Tensor:
    """Sort every row ascending (values only).

    On the CPU numpy's SIMD sort is used: it is faster than ``torch.sort``,
    which also builds an index matrix that is not needed here.
    """
    sim = sim.detach()
    if sim.device.type == 'cpu' and sim.dtype in (
        torch.float32,
        torch.float64,
        torch.int32,
        torch.int64,
    ):
        return torch.from_numpy(np.sort(sim.numpy(), axis=1))
    return torch.sort(sim, dim=1).values


def _chunk_rank_stats(
    sim: torch.Tensor,
    gallery_order: torch.Tensor,
    first_correct: torch.Tensor,
    num_correct: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """First rank, last rank and AP of every query of one chunk (see module).

    Args:
        sim (Tensor): (C, G) similarities of the chunk's queries.
        gallery_order (Tensor): (G,) gallery indices grouped by label.
        first_correct (Tensor): (C,) where each query's label run starts in
            ``gallery_order``.
        num_correct (Tensor): (C,) length of that run (>= 1).
    """
    num_gallery = sim.shape[1]
    width = int(num_correct.max())
    offsets = torch.arange(width, device=sim.device)
    valid = offsets[None, :] < num_correct[:, None]  # (C, M)
    slots = (first_correct[:, None] + offsets[None, :]).clamp(max=num_gallery - 1)
    correct_scores = sim.gather(1, gallery_order[slots])
    # Descending, padding last: padded slots sort below every real score.
    lowest = float('-inf') if sim.is_floating_point() else torch.iinfo(sim.dtype).min
    correct_scores = correct_scores.masked_fill(~valid, lowest)
    correct_scores = correct_scores.sort(dim=1, descending=True).values
    # Items scored strictly higher than each correct item (ties are not
    # "higher": the tie rule): a binary search in the sorted scores gives the
    # number scored <= it; then the correct ones among the higher items.
    not_higher = torch.searchsorted(
        _sort_rows(sim), correct_scores.contiguous(), right=True
    )
    higher_all = num_gallery - not_higher
    higher_correct = (correct_scores[:, None, :] > correct_scores[:, :, None]) & valid[
        :, None, :
    ]
    higher_correct = higher_correct.sum(dim=2)
    position = (offsets + 1)[None, :]  # j, 1-based
    ranks = position + (higher_all - higher_correct)  # (C, M), int64
    ranks = torch.where(valid, ranks, torch.ones_like(ranks))

    precision = position.double() / ranks.double()
    precision = torch.where(valid, precision, torch.zeros_like(precision))
    # Sequential left-to-right sum: independent of padding and chunking.
    ap = precision.cumsum(dim=1)[:, -1] / num_correct.double()
    last_rank = ranks.gather(1, (num_correct - 1)[:, None]).squeeze(1)
    return ranks[:, 0].cpu(), last_rank.cpu(), ap.cpu()


def summarize_rank_stats(
    stats: Dict[str, torch.Tensor], topk: Sequence[int] = (1, 5, 10)
) -> Dict[str, float]:
    """Turn per-query statistics into the field's numbers, in percent.

    Args:
        stats (dict[str, Tensor]): Output of :func:`query_rank_stats` (or the
            concatenation of several of them over disjoint query sets).
        topk (Sequence[int]): The K of each R@K. Defaults to (1, 5, 10).

    Returns:
        dict[str, float]: ``R{K}`` for each K, ``mAP`` and ``mINP``.

    Example:
        >>> stats = query_rank_stats([[0.1, 0.9, 0.8, 0.7]], [1], [0, 1, 0, 1])
        >>> summarize_rank_stats(stats, topk=(1,))['mINP']
        66.66666666666666
    """
    first_rank = stats['first_rank']
    num_queries = first_rank.numel()
    if num_queries == 0:
        raise ValueError('cannot summarise the ranking of zero queries')
    results: Dict[str, float] = {}
    for k in topk:
        k = int(k)
        if k < 1:
            raise ValueError(f'topk values must be >= 1, got {k}')
        hits = int((first_rank <= k).sum())
        results[f'R{k}'] = 100.0 * hits / num_queries
    # fsum is correctly rounded: the mean does not depend on query order.
    results['mAP'] = 100.0 * math.fsum(stats['ap'].tolist()) / num_queries
    results['mINP'] = 100.0 * math.fsum(stats['inp'].tolist()) / num_queries
    return results


def rank_metrics(
    sim: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    topk: Sequence[int] = (1, 5, 10),
    chunk_size: Optional[int] = None,
) -> Dict[str, float]:
    """R@K, mAP and mINP (percent) of a retrieval problem, as the field reports.

    See the module docstring for the protocol and the tie rule.

    Args:
        sim (Tensor | np.ndarray): (Q, G) similarities, larger = more similar.
        query_labels (Tensor | np.ndarray | Sequence[int]): (Q,) labels.
        gallery_labels (Tensor | np.ndarray | Sequence[int]): (G,) labels.
        topk (Sequence[int]): The K of each R@K. Defaults to (1, 5, 10).
        chunk_size (int, optional): Queries per chunk; ``None`` picks one from
            a 256 MiB budget. The result does not depend on it.

    Returns:
        dict[str, float]: ``R1``, ``R5``, ``R10`` (one per K), ``mAP``, ``mINP``.

    Example:
        >>> # correctness in rank order: [0, 1, 1, 0, 0, 1]
        >>> sim = [[6., 5., 4., 3., 2., 1.]]
        >>> m = rank_metrics(sim, [1], [0, 1, 1, 0, 0, 1], topk=(1, 5))
        >>> round(m['mAP'], 2), m['mINP'], m['R1'], m['R5']
        (55.56, 50.0, 0.0, 100.0)
    """
    stats = query_rank_stats(sim, query_labels, gallery_labels, chunk_size)
    return summarize_rank_stats(stats, topk)


def rank_lists(
    sim: ArrayLike, k: int, chunk_size: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The top-k gallery items of every query, best first, chunk by chunk.

    Args:
        sim (Tensor | np.ndarray): (Q, G) similarities, larger = more similar.
        k (int): Items per query; clipped to G.
        chunk_size (int, optional): Queries per chunk; ``None`` keeps each
            chunk's similarity copy within 256 MiB.

    Returns:
        tuple[Tensor, Tensor]: ``scores`` (Q, k) and ``indices`` (Q, k, int64),
        on the CPU. Equal scores come in ``torch.topk``'s order.

    Example:
        >>> scores, indices = rank_lists([[0.1, 0.9, 0.5]], k=2)
        >>> indices.tolist()
        [[1, 2]]
    """
    sim = _as_tensor(sim, 'sim')
    if sim.dim() != 2 or sim.shape[1] == 0:
        raise ValueError(
            f'sim must be a non-empty 2-D (num_queries, num_gallery) matrix, '
            f'got shape {tuple(sim.shape)}'
        )
    if k < 1:
        raise ValueError(f'k must be >= 1, got {k}')
    k = min(int(k), sim.shape[1])
    if chunk_size is None:
        chunk_size = max(
            1, DEFAULT_MEMORY_BUDGET // (sim.shape[1] * sim.element_size())
        )
    scores, indices = [], []
    for start in range(0, sim.shape[0], chunk_size):
        top = sim[start : start + chunk_size].topk(k, dim=1, sorted=True)
        scores.append(top.values.cpu())
        indices.append(top.indices.cpu())
    if not scores:
        return sim.new_zeros((0, k)).cpu(), torch.zeros((0, k), dtype=torch.long)
    return torch.cat(scores), torch.cat(indices)
