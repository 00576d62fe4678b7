"""Retrieval metrics of the TBPS protocol: the single implementation in tbps_mm.

This module owns the field's numbers (R@K, mAP, mINP; docs/evaluation.md, section 1).
Every other part of tbps_mm (the metric class, ``tools/test.py``, the
benchmarks) calls these functions instead of re-implementing them.

Protocol, for each query (a row of ``sim``):

- a gallery item is *correct* when its label equals the query's label;
- the gallery is ranked by similarity, larger first;
- R@K: percentage of queries whose first correct item has rank <= K;
- AP: mean over the correct items of ``j / rank_j`` (``j``-th correct item);
  mAP the mean over queries;
- INP: ``n / rank_n`` (``n`` correct items, ``rank_n`` the rank of the last);
  mINP the mean over queries;
- every query must have at least one correct gallery item (the field's
  protocol always has one); a query without one raises ``ValueError`` naming
  it, since AP and INP are undefined for it.

**Tie rule: expectation under a random order of tied items.** An argsort
(IRRA's ``rank()``) puts equal scores in an arbitrary order; here every
number is its expectation over all orders of the tied items, each equally
likely, so ties can neither help nor hurt a model on average. A model that
gives every item the same score gets chance-level numbers, not 100. For one
group of ``t`` tied items holding ``c`` correct ones, with ``A`` items
(``a`` of them correct) scored strictly higher:

- R@K: the probability that a correct item is within the first ``K``, i.e.
  for the group holding the best correct score (``a = 0``),
  ``1 - C(t - c, m) / C(t, m)`` with ``m = clip(K - A, 0, t)``
  (hypergeometric: none of the group's first ``m`` places is correct);
- AP: position ``i`` of the group (``A < i <= A + t``) holds a correct item
  with probability ``c / t``, and given that, ``(i - A - 1) (c - 1) / (t - 1)``
  correct items of the group precede it in expectation, so the group adds
  ``(c / t) sum_i (a + 1 + (i - A - 1) (c - 1) / (t - 1)) / i`` to the sum
  of precisions: a closed form in harmonic numbers (McSherry and Najork,
  "Computing information retrieval performance measures efficiently in the
  presence of tied scores", ECIR 2008);
- INP: the last correct item is at ``A + L`` where ``L``, the largest of
  ``c`` random places among ``t``, has ``P(L = l) = C(l - 1, c - 1) / C(t, c)``;
  the expectation of ``n / (A + L)`` is summed over ``l``.

When no correct item ties with an incorrect one (continuous scores), every
order gives the same ranking and the numbers are those of an argsort of the
scores, computed by the same operations as the argsort protocol's (``j /
rank_j``, ``n / rank_n``, hit counts), so they are equal to it as floats.
Ties among correct items only do not change any number.

No argsort of the similarity matrix is needed: the items scored strictly
higher than a correct item and those tied with it are counted by two binary
searches in the query's sorted scores (values only; no index matrix).
Sorting a chunk's rows (numpy's SIMD sort on the CPU) costs less than
comparing every score with every correct item's score once a query has more
than a couple of correct items. Queries are processed in chunks whose size
is chosen from a memory budget, so a 19,848 x 19,848 problem (ICFG-PEDES)
runs in bounded memory (256 MiB of temporaries by default).

Per-query AP is summed left to right with ``cumsum`` (trailing zero padding
cannot change the sum) and the means over queries use correctly rounded
summation (``math.fsum``), so the numbers do not depend on the chunk size or
on the order the queries arrived in.

Written by hand because neither MMEngine nor MMPretrain offers
text-to-image retrieval metrics with mAP/mINP over labelled galleries
(MMPretrain's ``RetrievalRecall`` gives recall only, from a dense argsort).

Example:
    >>> import torch
    >>> from tbps_mm.evaluation.functional import query_rank_stats, rank_metrics
    >>> sim = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.3, 0.7]])
    >>> rank_metrics(sim, [0, 1], [0, 1, 1], topk=(1, 2))['R1']
    100.0
    >>> # Every score equal: the correct item's expected rank is the middle
    >>> # one (rank_metrics would give R@1 = 25, chance, and log a warning).
    >>> query_rank_stats([[0.5, 0.5, 0.5, 0.5]], [1], [0, 1, 0, 0])['first_rank']
    tensor([2.5000], dtype=torch.float64)
"""

import logging
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log

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
    """Validate shapes; return tensors on the similarity's device.

    NaN scores are found later, in each chunk's sorted rows (where they sort
    last), which costs no extra pass over the matrix.
    """
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
        dict[str, Tensor]: CPU tensors of length Q. ``num_correct`` (int64);
        for the group of items tied with the best-scored correct item:
        ``first_above`` (int64, items scored strictly higher, all
        incorrect), ``first_tied`` (int64, items in the group, itself
        included) and ``first_tied_correct`` (int64, correct ones among
        them), from which :func:`summarize_rank_stats` computes R@K;
        ``first_rank`` and ``last_rank`` (float64, the expected ranks of the
        first and the last correct item); ``ap`` and ``inp`` (float64,
        expectations, fractions in [0, 1]); ``tied`` (bool, a correct item
        ties an incorrect one, so the order of ties matters).

    Raises:
        ValueError: on malformed input or a query without a correct item.

    Example:
        >>> stats = query_rank_stats([[0.1, 0.9, 0.8, 0.7]], [1], [0, 1, 0, 1])
        >>> stats['first_rank'].tolist(), stats['last_rank'].tolist()
        ([1.0], [3.0])
        >>> # The correct item ties two incorrect ones: expected rank 2.
        >>> query_rank_stats([[0.5, 0.5, 0.5]], [1], [0, 1, 0])['first_rank']
        tensor([2.], dtype=torch.float64)
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
    # harmonic[i] = 1 + 1/2 + ... + 1/i: the expected AP of tied groups.
    harmonic = torch.cat(
        [
            torch.zeros(1, dtype=torch.float64, device=sim.device),
            torch.arange(1, num_gallery + 1, dtype=torch.float64, device=sim.device)
            .reciprocal()
            .cumsum(0),
        ]
    )

    chunks = [
        _chunk_rank_stats(
            sim[start : start + chunk_size],
            gallery_order,
            first_correct[start : start + chunk_size],
            num_correct[start : start + chunk_size],
            harmonic,
            start,
        )
        for start in range(0, num_queries, chunk_size)
    ]
    stats = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
    stats['num_correct'] = num_correct.cpu().long()
    return stats


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
    harmonic: torch.Tensor,
    row_offset: int = 0,
) -> Dict[str, torch.Tensor]:
    """The statistics of :func:`query_rank_stats` for one chunk of queries.

    Args:
        sim (Tensor): (C, G) similarities of the chunk's queries.
        gallery_order (Tensor): (G,) gallery indices grouped by label.
        first_correct (Tensor): (C,) where each query's label run starts in
            ``gallery_order``.
        num_correct (Tensor): (C,) length of that run (>= 1).
        harmonic (Tensor): (G + 1,) float64 harmonic numbers ``H(0..G)``.
        row_offset (int): Index of the chunk's first query (for messages).

    Returns:
        dict[str, Tensor]: every key of :func:`query_rank_stats` but
        ``num_correct``, on the CPU.
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
    # Two binary searches in the sorted scores: the items scored <= and
    # < each correct item, hence those strictly higher (``above``) and
    # those tied with it, itself included (``tied``).
    sorted_rows = _sort_rows(sim)
    if sim.is_floating_point():
        nan_rows = sorted_rows[:, -1].isnan()  # NaN sorts last
        if bool(nan_rows.any()):
            rows = (nan_rows.nonzero().flatten()[:5] + row_offset).tolist()
            raise ValueError(f'sim contains NaN scores (e.g. in query rows {rows})')
    values = correct_scores.contiguous()
    not_higher = torch.searchsorted(sorted_rows, values, right=True)
    above = num_gallery - not_higher
    tied = not_higher - torch.searchsorted(sorted_rows, values, right=False)
    # The same two counts among the correct items.
    other = correct_scores[:, None, :]
    this = correct_scores[:, :, None]
    above_correct = ((other > this) & valid[:, None, :]).sum(dim=2)
    tied_correct = ((other == this) & valid[:, None, :]).sum(dim=2)
    tied_incorrect = (tied > tied_correct) & valid  # the order of ties matters

    # Precision at each correct item. Without an incorrect tie the ranking
    # is fixed: the j-th correct item has rank j + (incorrect items above).
    position = (offsets + 1)[None, :]  # j, 1-based
    ranks = position + (above - above_correct)  # (C, M), int64
    ranks = torch.where(valid, ranks, torch.ones_like(ranks))
    precision = position.double() / ranks.double()
    if bool(tied_incorrect.any()):
        # Each correct item of a tied group gets 1/t of the group's expected
        # sum of precisions (module docstring):
        # (1/t) sum_{i=A+1}^{A+t} (a + 1 + beta (i - A - 1)) / i,
        # beta = (c - 1) / (t - 1); in harmonic numbers
        # ((a + 1 - beta (A + 1)) (H(A + t) - H(A)) + beta t) / t.
        a_above, t_tied = above.double(), tied.double()
        beta = (tied_correct - 1).double() / (tied - 1).clamp(min=1).double()
        harmonic_sum = harmonic[(above + tied).clamp(max=num_gallery)] - harmonic[above]
        expected = (
            (above_correct.double() + 1 - beta * (a_above + 1)) * harmonic_sum
            + beta * t_tied
        ) / t_tied
        precision = torch.where(tied_incorrect, expected, precision)
    precision = torch.where(valid, precision, torch.zeros_like(precision))
    # Sequential left-to-right sum: independent of padding and chunking.
    ap = precision.cumsum(dim=1)[:, -1] / num_correct.double()

    last = (num_correct - 1)[:, None]

    def at_last(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, last).squeeze(1)

    last_above, last_tied = at_last(above), at_last(tied)
    last_tied_correct = at_last(tied_correct)
    last_rank = at_last(ranks)
    inp = num_correct.double() / last_rank.double()
    expected_last = last_rank.double()
    last_is_tied = at_last(tied_incorrect)
    if bool(last_is_tied.any()):
        inp[last_is_tied] = _expected_inp(
            num_correct[last_is_tied],
            last_above[last_is_tied],
            last_tied[last_is_tied],
            last_tied_correct[last_is_tied],
        )
        c = last_tied_correct.double()
        expected_last = torch.where(
            last_is_tied,
            last_above.double() + c * (last_tied.double() + 1) / (c + 1),
            expected_last,
        )

    first_above, first_tied = above[:, 0], tied[:, 0]
    first_tied_correct = tied_correct[:, 0]
    # E[min of c random places among t] = (t + 1) / (c + 1).
    first_rank = first_above.double() + (first_tied.double() + 1) / (
        first_tied_correct.double() + 1
    )
    out = dict(
        first_above=first_above,
        first_tied=first_tied,
        first_tied_correct=first_tied_correct,
        first_rank=first_rank,
        last_rank=expected_last,
        ap=ap,
        inp=inp,
        tied=tied_incorrect.any(dim=1),
    )
    return {k: v.cpu() for k, v in out.items()}


def _expected_inp(
    num_correct: torch.Tensor,
    above: torch.Tensor,
    tied: torch.Tensor,
    tied_correct: torch.Tensor,
) -> torch.Tensor:
    """E[n / (A + L)] of queries whose last correct item ties incorrect ones.

    ``L`` is the largest of ``c`` places drawn at random among the ``t`` of
    the tied group, ``P(L = l) = C(l - 1, c - 1) / C(t, c)`` for
    ``c <= l <= t``. Queries sharing ``(n, A, t, c)`` share the value, so
    the sum over ``l`` runs once per distinct combination.

    Args:
        num_correct (Tensor): (N,) ``n``.
        above (Tensor): (N,) ``A``, items scored strictly higher.
        tied (Tensor): (N,) ``t``, items in the tied group.
        tied_correct (Tensor): (N,) ``c``, correct items in it.

    Returns:
        Tensor: (N,) float64 expected INP.
    """
    keys = torch.stack([num_correct, above, tied, tied_correct], dim=1).cpu()
    combos, inverse = torch.unique(keys, dim=0, return_inverse=True)
    values = torch.empty(combos.shape[0], dtype=torch.float64)
    for i, (n, a, t, c) in enumerate(combos.tolist()):
        places = torch.arange(c, t + 1, dtype=torch.float64)
        # log C(l - 1, c - 1), normalised over l (the sum is C(t, c)).
        log_weight = (
            torch.lgamma(places)
            - torch.lgamma(torch.tensor(float(c)))
            - torch.lgamma(places - c + 1)
        )
        weight = torch.softmax(log_weight, dim=0)
        values[i] = (weight * (n / (a + places))).sum()
    return values[inverse].to(num_correct.device)


def _hit_probability(stats: Dict[str, torch.Tensor], k: int) -> torch.Tensor:
    """Per query, the probability that a correct item is within the top ``k``.

    ``1 - C(t - c, m) / C(t, m)``, ``m = clip(k - A, 0, t)``, for the group
    of ``t`` items (``c`` correct) tied with the best correct item and the
    ``A`` items above it: 0 or 1 when that group holds no incorrect item.
    """
    above, tied = stats['first_above'], stats['first_tied']
    tied_incorrect = tied - stats['first_tied_correct']
    places = torch.minimum((k - above).clamp(min=0), tied)
    none_correct = torch.ones(above.shape, dtype=torch.float64)
    for i in range(int(places.max()) if places.numel() else 0):
        factor = (tied_incorrect - i).clamp(min=0).double() / (
            (tied - i).clamp(min=1).double()
        )
        none_correct = torch.where(i < places, none_correct * factor, none_correct)
    return 1.0 - none_correct


def summarize_rank_stats(
    stats: Dict[str, torch.Tensor], topk: Sequence[int] = (1, 5, 10)
) -> Dict[str, float]:
    """Turn per-query statistics into the field's numbers, in percent.

    Logs a warning with the number of queries whose correct items tie
    incorrect ones (their numbers are expectations over the tie orders).

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
    num_queries = stats['first_rank'].numel()
    if num_queries == 0:
        raise ValueError('cannot summarise the ranking of zero queries')
    num_tied = int(stats['tied'].sum())
    if num_tied:
        print_log(
            f'{num_tied} of {num_queries} queries have a correct gallery item '
            'whose score equals an incorrect one; their R@K, AP and INP are '
            'expectations over the orders of the tied items',
            logger='current',
            level=logging.WARNING,
        )
    results: Dict[str, float] = {}
    for k in topk:
        k = int(k)
        if k < 1:
            raise ValueError(f'topk values must be >= 1, got {k}')
        # fsum of 0/1 probabilities is the exact hit count.
        hits = math.fsum(_hit_probability(stats, k).tolist())
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

    See the module docstring for the protocol and the tie rule (numbers are
    expectations over the orders of tied items).

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


def grouped_rank_stats(
    sim: ArrayLike,
    query_labels: ArrayLike,
    gallery_labels: ArrayLike,
    query_groups: ArrayLike,
    gallery_groups: ArrayLike,
) -> Dict[str, torch.Tensor]:
    """Per-query rank statistics when each query ranks only its group's gallery.

    The within-family protocol of SynthPedes families (docs/evaluation.md):
    a query of group ``f`` is ranked against the gallery items of group ``f``
    only, so R@1 is the rate at which the right person beats the people who
    share most of their body parts with them (chance: 1 / the number of
    identities in the group). Ties count in expectation, as everywhere
    (:func:`query_rank_stats`).

    Args:
        sim (Tensor | np.ndarray): (Q, G) similarities over the whole gallery.
        query_labels, gallery_labels: (Q,) / (G,) person labels.
        query_groups, gallery_groups: (Q,) / (G,) group (family) ids.

    Returns:
        dict[str, Tensor]: As :func:`query_rank_stats`, in query order.

    Raises:
        ValueError: A group's gallery holds fewer than two identities (its
            queries could not miss, which would flatter the number), or a
            query's group or label has no gallery item.

    Example:
        >>> stats = grouped_rank_stats([[0.9, 0.1, 0.99]], [0], [0, 1, 2],
        ...                            [7], [7, 7, 8])
        >>> stats['first_rank'].tolist()  # item 2 is another family's
        [1.0]
    """
    sim, query_labels, gallery_labels = _check_inputs(sim, query_labels, gallery_labels)
    query_groups = _as_tensor(query_groups, 'query_groups').reshape(-1).long()
    gallery_groups = _as_tensor(gallery_groups, 'gallery_groups').reshape(-1).long()
    if query_groups.numel() != sim.shape[0] or gallery_groups.numel() != sim.shape[1]:
        raise ValueError(
            f'got {query_groups.numel()} query and {gallery_groups.numel()} '
            f'gallery groups for a {tuple(sim.shape)} similarity matrix'
        )
    query_groups = query_groups.to(sim.device)
    gallery_groups = gallery_groups.to(sim.device)
    out: Dict[str, torch.Tensor] = {}
    order = []
    for group in torch.unique(query_groups).tolist():
        rows = (query_groups == group).nonzero().flatten()
        cols = (gallery_groups == group).nonzero().flatten()
        people = torch.unique(gallery_labels[cols]).numel()
        if people < 2:
            raise ValueError(
                f'group {group} has {people} identities in the gallery; the '
                'within-group ranking needs at least 2 (its queries could not miss)'
            )
        stats = query_rank_stats(
            sim[rows][:, cols], query_labels[rows], gallery_labels[cols]
        )
        for key, value in stats.items():
            out.setdefault(key, []).append(value)
        order.append(rows.cpu())
    inverse = torch.argsort(torch.cat(order))
    return {key: torch.cat(values)[inverse] for key, values in out.items()}
