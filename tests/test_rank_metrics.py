"""Tests of tbps_mm.evaluation.functional: the field's retrieval numbers."""

import itertools
import math

import numpy as np
import pytest
import torch

from tbps_mm.evaluation import functional
from tbps_mm.evaluation.functional import (
    auto_chunk_size,
    query_rank_stats,
    rank_lists,
    rank_metrics,
    summarize_rank_stats,
)
from tbps_mm.evaluation.rerank import KReciprocalReranker, k_reciprocal_rerank


def reference_metrics(sim, query_labels, gallery_labels, topk=(1, 5, 10)):
    """Brute force: argsort every row, walk the ranked correctness vector.

    The argsort protocol of TBPS code; equal scores are ordered correct first
    here, which only matters when a correct item ties an incorrect one.
    """
    per_query = reference_per_query(sim, query_labels, gallery_labels, topk)
    return summarize_reference(per_query, topk)


def reference_per_query(sim, query_labels, gallery_labels, topk, incorrect_first=False):
    """(hits per K, AP, INP) of every query under one order of the ties."""
    sim = np.asarray(sim)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    out = []
    for q in range(sim.shape[0]):
        correct = gallery_labels == query_labels[q]
        # lexsort: last key is primary (score descending), then the tie key.
        order = np.lexsort((correct if incorrect_first else ~correct, -sim[q]))
        out.append(walk(correct[order], topk))
    return out


def walk(ranked, topk):
    """(hits per K, AP, INP) of one ranked correctness vector."""
    positions = np.flatnonzero(ranked) + 1  # 1-based ranks of correct items
    ap = 0.0
    for j, rank in enumerate(positions.tolist(), start=1):
        ap += j / rank
    hits = [float(positions[0] <= k) for k in topk]
    return hits, ap / len(positions), len(positions) / int(positions[-1])


def summarize_reference(per_query, topk):
    num = len(per_query)
    out = {
        f'R{k}': 100.0 * sum(h[i] for h, _, _ in per_query) / num
        for i, k in enumerate(topk)
    }
    out['mAP'] = 100.0 * math.fsum(ap for _, ap, _ in per_query) / num
    out['mINP'] = 100.0 * math.fsum(inp for _, _, inp in per_query) / num
    return out


def expected_over_all_orders(sim, query_labels, gallery_labels, topk):
    """Exact expectation over every order of tied items (small galleries).

    Every permutation of the gallery, then a stable sort by descending score,
    gives each order of the tied items equally often.
    """
    sim = np.asarray(sim, dtype=np.float64)
    num_gallery = sim.shape[1]
    totals = []
    for q in range(sim.shape[0]):
        correct = np.asarray(gallery_labels) == query_labels[q]
        runs = []
        for perm in itertools.permutations(range(num_gallery)):
            order = sorted(perm, key=lambda g: -sim[q, g])  # stable
            runs.append(walk(correct[order], topk))
        hits = [sum(h[i] for h, _, _ in runs) / len(runs) for i in range(len(topk))]
        totals.append(
            (
                hits,
                sum(ap for _, ap, _ in runs) / len(runs),
                sum(inp for _, _, inp in runs) / len(runs),
            )
        )
    return summarize_reference(totals, topk)


def test_hand_worked_query():
    # Ranked correctness [0, 1, 1, 0, 0, 1]: correct items at ranks 2, 3, 6.
    sim = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
    gallery = [0, 1, 1, 0, 0, 1]
    m = rank_metrics(sim, [1], gallery, topk=(1, 2, 5))
    # AP = (1/2 + 2/3 + 3/6) / 3 = 0.5556, INP = 3 / 6.
    assert m['mAP'] == pytest.approx(100 * (1 / 2 + 2 / 3 + 3 / 6) / 3)
    assert round(m['mAP'] / 100, 4) == 0.5556
    assert m['mINP'] == 50.0
    assert (m['R1'], m['R2'], m['R5']) == (0.0, 100.0, 100.0)
    assert list(m) == ['R1', 'R2', 'R5', 'mAP', 'mINP']
    assert all(type(v) is float for v in m.values())


def test_two_queries_mean_and_recall():
    # Query 0: correct at ranks 1 and 3 -> AP (1 + 2/3)/2, INP 2/3.
    # Query 1: correct at rank 4 only -> AP 1/4, INP 1/4.
    gallery = [0, 1, 0, 2]
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.9, 0.8, 0.7, 0.1]])
    m = rank_metrics(sim, [0, 2], gallery, topk=(1, 3, 4))
    assert m['R1'] == 50.0 and m['R3'] == 50.0 and m['R4'] == 100.0
    assert m['mAP'] == pytest.approx(100 * ((1 + 2 / 3) / 2 + 1 / 4) / 2)
    assert m['mINP'] == pytest.approx(100 * (2 / 3 + 1 / 4) / 2)


def test_ties_hand_worked():
    # One correct item tied with two incorrect ones: rank 1, 2 or 3, each
    # with probability 1/3 -> R@1 1/3, AP = INP = (1 + 1/2 + 1/3) / 3.
    m = rank_metrics([[0.5, 0.5, 0.5]], [1], [0, 1, 0], topk=(1, 2, 3))
    assert m['R1'] == pytest.approx(100 / 3)
    assert m['R2'] == pytest.approx(200 / 3)
    assert m['R3'] == 100.0
    assert m['mAP'] == pytest.approx(100 * 11 / 18)
    assert m['mINP'] == pytest.approx(100 * 11 / 18)
    # One incorrect item strictly higher, then two correct tied with one
    # incorrect at ranks 2-4. The incorrect one is at rank 2, 3 or 4:
    # correct at (3, 4): AP (1/3 + 2/4)/2, INP 2/4; (2, 4): AP (1/2 + 2/4)/2,
    # INP 2/4; (2, 3): AP (1/2 + 2/3)/2, INP 2/3. Whatever the column order.
    for gallery, sim in (
        ([0, 1, 1, 0], [0.9, 0.5, 0.5, 0.5]),
        ([0, 0, 1, 1], [0.5, 0.9, 0.5, 0.5]),
    ):
        stats = query_rank_stats([sim], [1], gallery)
        assert stats['ap'].item() == pytest.approx(0.5)
        assert stats['inp'].item() == pytest.approx((1 / 2 + 1 / 2 + 2 / 3) / 3)
        # First correct at 2 (p 2/3) or 3; last at 4 (p 2/3) or 3.
        assert stats['first_rank'].item() == pytest.approx(2 + 1 / 3)
        assert stats['last_rank'].item() == pytest.approx(4 - 1 / 3)
        assert stats['tied'].tolist() == [True]
        m = rank_metrics([sim], [1], gallery, topk=(1, 2, 3))
        assert (m['R1'], m['R3']) == (0.0, 100.0)
        assert m['R2'] == pytest.approx(200 / 3)


def test_ties_among_correct_items_change_nothing():
    m = rank_metrics([[0.9, 0.9, 0.1, 0.2]], [1], [1, 1, 0, 0], topk=(1,))
    assert m == {'R1': 100.0, 'mAP': 100.0, 'mINP': 100.0}
    stats = query_rank_stats([[0.3, 0.9, 0.9, 0.1]], [1], [0, 1, 1, 1])
    assert stats['tied'].tolist() == [False]
    assert stats['ap'].item() == (1 / 1 + 2 / 2 + 3 / 4) / 3
    assert stats['inp'].item() == 3 / 4


def test_constant_scores_give_chance():
    # A collapsed model: every score equal. 10 ids x 3 images, 2 captions
    # per id; each query has 3 correct items among 30.
    gallery = torch.arange(10).repeat(3)
    queries = torch.arange(10).repeat(2)
    sim = torch.full((20, 30), 0.25)
    m = rank_metrics(sim, queries, gallery, topk=(1, 5, 10))
    assert m['R1'] == pytest.approx(100 * 3 / 30)
    # R@K = 1 - C(27, K) / C(30, K).
    for k in (5, 10):
        assert m[f'R{k}'] == pytest.approx(
            100 * (1 - math.comb(27, k) / math.comb(30, k))
        )
    # Against a random ranking, drawn many times (an independent estimate).
    rng = np.random.default_rng(0)
    correct = np.zeros(30, bool)
    correct[:3] = True
    draws = [walk(rng.permutation(correct), (1,)) for _ in range(20000)]
    assert m['mAP'] == pytest.approx(100 * np.mean([d[1] for d in draws]), abs=0.5)
    assert m['mINP'] == pytest.approx(100 * np.mean([d[2] for d in draws]), abs=0.5)
    # At chance, nowhere near the 100 an order favouring correct items gives.
    assert m['R1'] <= 100 * 3 / 30 + 1e-9 and m['mAP'] < 25 and m['mINP'] < 25


def test_small_problems_equal_every_order_enumerated():
    gen = torch.Generator().manual_seed(5)
    for trial in range(6):
        sim = torch.randint(0, 3, (3, 6), generator=gen).double()
        gallery = torch.tensor([0, 1, 2, 0, 1, trial % 3])
        queries = torch.randint(0, 3, (3,), generator=gen)
        expected = expected_over_all_orders(
            sim.numpy(), queries.numpy(), gallery.numpy(), (1, 2, 4)
        )
        got = rank_metrics(sim, queries, gallery, topk=(1, 2, 4))
        assert got == pytest.approx(expected, abs=1e-10)


def test_rounded_scores_cannot_read_higher():
    # Scores without signal rounded to two levels: an order that puts correct
    # items first among ties would read far above chance.
    gen = torch.Generator().manual_seed(6)
    gallery = torch.arange(20).repeat(2)
    queries = torch.arange(20).repeat(2)
    sim = torch.rand(40, 40, generator=gen)
    rounded = sim.round()
    optimistic = reference_metrics(rounded.numpy(), queries.numpy(), gallery.numpy())
    pessimistic = summarize_reference(
        reference_per_query(
            rounded.numpy(),
            queries.numpy(),
            gallery.numpy(),
            (1, 5, 10),
            incorrect_first=True,
        ),
        (1, 5, 10),
    )
    m = rank_metrics(rounded, queries, gallery)
    for key in m:
        assert pessimistic[key] - 1e-9 <= m[key] <= optimistic[key] + 1e-9
    # Mean over random tie orders (jitter below the rounding step).
    draws = [
        reference_metrics(
            (rounded + 1e-3 * torch.rand(40, 40, generator=gen)).numpy(),
            queries.numpy(),
            gallery.numpy(),
        )
        for _ in range(300)
    ]
    for key in m:
        assert m[key] == pytest.approx(np.mean([d[key] for d in draws]), abs=1.0)
    # Near chance (2 correct of 40), while the optimistic order reads R@1 ~ 80.
    assert m['R1'] < 15 and optimistic['R1'] > 50
    assert rank_metrics(sim, queries, gallery)['R1'] < 15


def test_tie_warning_counts_queries(monkeypatch):
    logged = []
    monkeypatch.setattr(
        functional, 'print_log', lambda msg, **kwargs: logged.append(msg)
    )
    sim = [[0.5, 0.5, 0.1], [0.9, 0.5, 0.5], [0.2, 0.7, 0.7]]
    # Query 0 ties its correct item (0) with an incorrect one (1); query 1's
    # correct item is alone at the top; query 2's correct items tie each other.
    rank_metrics(sim, [0, 0, 1], [0, 1, 1])
    assert logged and logged[0].startswith('1 of 3 queries')
    logged.clear()
    rank_metrics([[0.3, 0.2]], [0], [0, 1])
    assert logged == []


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.int64])
def test_random_equals_bruteforce_exactly(dtype):
    gen = torch.Generator().manual_seed(0)
    num_ids, num_gallery, num_queries = 13, 97, 120
    gallery = torch.randint(0, num_ids, (num_gallery,), generator=gen)
    gallery[:num_ids] = torch.arange(num_ids)  # every id has an image
    queries = torch.randint(0, num_ids, (num_queries,), generator=gen)
    if dtype == torch.int64:
        # Distinct integers per row: no ties, so one ranking.
        sim = torch.stack(
            [torch.randperm(num_gallery, generator=gen) for _ in range(num_queries)]
        )
    else:
        sim = torch.randn(num_queries, num_gallery, generator=gen, dtype=dtype)
    expected = reference_metrics(sim.numpy(), queries.numpy(), gallery.numpy())
    assert rank_metrics(sim, queries, gallery) == expected
    assert rank_metrics(sim.numpy(), queries.numpy(), gallery.tolist()) == expected


def test_chunked_equals_unchunked_exactly():
    gen = torch.Generator().manual_seed(1)
    gallery = torch.randint(0, 20, (150,), generator=gen)
    gallery[:20] = torch.arange(20)
    queries = torch.randint(0, 20, (203,), generator=gen)
    sim = torch.randn(203, 150, generator=gen)
    full = rank_metrics(sim, queries, gallery, chunk_size=203)
    for chunk in (1, 7, 64, 1000, None):
        assert rank_metrics(sim, queries, gallery, chunk_size=chunk) == full
    # Per-query statistics are identical too, and independent of query order.
    perm = torch.randperm(203, generator=gen)
    shuffled = rank_metrics(sim[perm], queries[perm], gallery, chunk_size=5)
    assert shuffled == full
    a = query_rank_stats(sim, queries, gallery, chunk_size=3)
    b = query_rank_stats(sim, queries, gallery, chunk_size=None)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_summarize_concatenated_stats_equals_whole():
    gen = torch.Generator().manual_seed(2)
    gallery = torch.arange(10).repeat(3)
    queries = torch.randint(0, 10, (31,), generator=gen)
    sim = torch.randn(31, 30, generator=gen)
    parts = [
        query_rank_stats(sim[:12], queries[:12], gallery),
        query_rank_stats(sim[12:], queries[12:], gallery),
    ]
    merged = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    assert summarize_rank_stats(merged) == rank_metrics(sim, queries, gallery)


def test_auto_chunk_size_bounds_memory():
    size = auto_chunk_size(19848, 40, element_size=4, memory_budget=64 * 1024**2)
    assert 1 <= size and size * 19848 * 13 <= 64 * 1024**2
    assert auto_chunk_size(10**9, 10**6) == 1


def test_bad_input_errors():
    with pytest.raises(ValueError, match='no correct gallery item'):
        rank_metrics([[0.1, 0.2]], [7], [0, 1])
    with pytest.raises(ValueError, match='query_labels has 2 entries'):
        rank_metrics([[0.1, 0.2]], [0, 1], [0, 1])
    with pytest.raises(ValueError, match='gallery_labels has 3 entries'):
        rank_metrics([[0.1, 0.2]], [0], [0, 1, 1])
    with pytest.raises(ValueError, match='2-D'):
        rank_metrics([0.1, 0.2], [0], [0, 1])
    with pytest.raises(ValueError, match='NaN'):
        rank_metrics([[float('nan'), 0.2]], [0], [0, 1])
    with pytest.raises(ValueError, match='topk values must be >= 1'):
        rank_metrics([[0.1, 0.2]], [0], [0, 1], topk=(0,))
    with pytest.raises(ValueError, match='chunk_size must be >= 1'):
        rank_metrics([[0.1, 0.2]], [0], [0, 1], chunk_size=0)


def test_rank_lists_topk_chunked():
    gen = torch.Generator().manual_seed(4)
    sim = torch.randn(23, 17, generator=gen)
    scores, indices = rank_lists(sim, k=5, chunk_size=4)
    expected = sim.topk(5, dim=1)
    assert torch.equal(indices, expected.indices)
    assert torch.equal(scores, expected.values)
    scores, indices = rank_lists(sim.numpy(), k=100)
    assert indices.shape == (23, 17)
    assert torch.equal(scores, sim.sort(dim=1, descending=True).values)
    with pytest.raises(ValueError, match='k must be >= 1'):
        rank_lists(sim, k=0)


def reference_rerank(sim_qg, sim_gg, k1, k2, lam):
    """k-reciprocal re-ranking written with Python sets, row by row."""
    sim_qg, sim_gg = np.asarray(sim_qg, np.float64), np.asarray(sim_gg, np.float64)
    num_g = sim_gg.shape[0]
    k1, half, k2 = (
        min(k1, num_g - 1),
        min(int(round(k1 / 2)), num_g - 1),
        min(k2, num_g),
    )

    def dist(s):
        hi, lo = s.max(1, keepdims=True), s.min(1, keepdims=True)
        return (hi - s) / np.maximum(hi - lo, np.finfo(np.float64).tiny)

    def order(row):
        return list(np.argsort(-row, kind='stable'))

    nn = [order(sim_gg[i])[: k1 + 1] for i in range(num_g)]
    nn_half = [order(sim_gg[i])[: half + 1] for i in range(num_g)]
    recip = [{j for j in nn[i] if i in nn[j]} for i in range(num_g)]
    recip_half = [{j for j in nn_half[i] if i in nn_half[j]} for i in range(num_g)]

    def expand(members):
        out = set(members)
        for j in members:
            if len(recip_half[j] & set(members)) > 2 / 3 * len(recip_half[j]):
                out |= recip_half[j]
        return sorted(out)

    d_gg, d_qg = dist(sim_gg), dist(sim_qg)
    enc = np.zeros((num_g, num_g))
    for i in range(num_g):
        support = expand(recip[i])
        w = np.exp(-d_gg[i, support])
        enc[i, support] = w / w.sum()
    enc_qe = np.stack([enc[nn[i][:k2]].mean(0) for i in range(num_g)])
    out = np.zeros_like(sim_qg)
    for q in range(sim_qg.shape[0]):
        top = order(sim_qg[q])[:k1]
        support = expand(top)
        v = np.zeros(num_g)
        w = np.exp(-d_qg[q, support])
        v[support] = w / w.sum()
        v = (v + enc[top[: k2 - 1]].sum(0)) / k2
        overlap = np.minimum(v[None], enc_qe).sum(1)
        jaccard = 1 - overlap / (2 - overlap)
        out[q] = -((1 - lam) * jaccard + lam * d_qg[q])
    return out


def clustered_problem(seed=0, num_ids=12, per_id=4, queries_per_id=3):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_ids, 16, generator=gen)
    g_ids = torch.arange(num_ids).repeat_interleave(per_id)
    q_ids = torch.arange(num_ids).repeat(queries_per_id)

    def norm(x):
        return torch.nn.functional.normalize(x, dim=1)

    g = norm(centers[g_ids] + 0.9 * torch.randn(len(g_ids), 16, generator=gen))
    q = norm(centers[q_ids] + 1.2 * torch.randn(len(q_ids), 16, generator=gen))
    return (q @ g.T).double(), (g @ g.T).double(), q_ids, g_ids


@pytest.mark.parametrize('k1,k2', [(6, 3), (10, 1), (20, 6)])
def test_rerank_equals_reference(k1, k2):
    sim_qg, sim_gg, _, _ = clustered_problem()
    expected = reference_rerank(sim_qg.numpy(), sim_gg.numpy(), k1, k2, 0.3)
    for chunk in (5, 256):
        got = k_reciprocal_rerank(sim_qg, sim_gg, k1=k1, k2=k2, chunk_size=chunk)
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)


def test_rerank_helps_clustered_gallery_and_lambda_one_keeps_order():
    sim_qg, sim_gg, q_ids, g_ids = clustered_problem(seed=1)
    before = rank_metrics(sim_qg, q_ids, g_ids)
    after = rank_metrics(k_reciprocal_rerank(sim_qg, sim_gg, k1=8, k2=3), q_ids, g_ids)
    assert after['mAP'] > before['mAP']
    # lambda = 1: only the (row-normalised) original distance remains.
    same = k_reciprocal_rerank(sim_qg, sim_gg, k1=8, k2=3, lambda_value=1.0)
    assert torch.equal(same.argsort(dim=1), sim_qg.argsort(dim=1))
    # The gallery similarities may come from a row function instead.
    reranker = KReciprocalReranker(
        lambda a, b: sim_gg[a:b], num_gallery=sim_gg.shape[0], k1=8, k2=3
    )
    assert torch.equal(
        reranker(sim_qg), k_reciprocal_rerank(sim_qg, sim_gg, k1=8, k2=3)
    )
    with pytest.raises(ValueError, match='square'):
        k_reciprocal_rerank(sim_qg, sim_qg)
    with pytest.raises(ValueError, match='lambda_value'):
        k_reciprocal_rerank(sim_qg, sim_gg, lambda_value=2.0)
