"""Benchmark: evaluation speed and memory of ``rank_metrics`` vs a full argsort.

Compares :func:`tbps_mm.evaluation.functional.rank_metrics` with the way TBPS
codebases rank today (IRRA's ``rank()``: argsort every row of the similarity
matrix in descending order, gather the gallery labels in that order, compare
with the query label, cumulative sums), written below as
:func:`reference_rank_metrics`, on random similarities with random labels at
three sizes:

- ``cuhk``: CUHK-PEDES test, 6,156 captions x 3,074 images, 1,000 ids;
- ``icfg``: ICFG-PEDES test, 19,848 captions x 19,848 images, 1,000 ids;
- ``1m``: scaling, 500 queries x a 1,000,000-image gallery, 100,000 ids.

Each (size, implementation) runs in a fresh spawned process that builds the
similarity matrix, calls the implementation once to warm up and ``--runs``
times timed; the table reports the median wall time and the peak resident
memory the implementation needed on top of its input (``ru_maxrss`` /
``VmHWM`` of that process, see ``_common.PeakRSS``). Both implementations get
the same matrix (same seed) and must give the same numbers: the largest
absolute difference over R1/R5/R10/mAP/mINP (percent) is printed and must be
below 1e-6, else the script fails. When the reference's estimated memory
(its input and temporaries, :data:`REFERENCE_BYTES_PER_SCORE`) exceeds 60 %
of the memory available at start (``--reference-memory-fraction``, or
``--max-reference-gib``), it is reported as skipped with its estimate instead
of being run: on a shared machine, a process that takes all the memory gets
someone's process killed.

The reference is favourable to itself: IRRA's INP loops over queries in
Python and its AP divides a dense (Q, G) float matrix; here both are
vectorised over the matches (same numbers in float64, less time and memory),
so the measured speed-up and memory ratio are lower bounds. It keeps IRRA's
full (Q, G) argsort index matrix alive, as IRRA does (it returns it).

Scores: ties between a correct and an incorrect gallery item would make an
argsort's arbitrary order among equal scores disagree with the protocol's
tie rule (see ``tbps_mm.evaluation.functional``), so the random scores are
built without such ties: incorrect items get even multiples of 2**-23 drawn
uniformly in [0, 1), correct items odd multiples with an extra random boost
in [0, 0.125) (so that retrieval is neither perfect nor hopeless). All are
exact float32 values.

Usage:
    python benchmarks/eval_speed.py [--sizes cuhk icfg 1m] [--runs 3] \\
        [--out results.json]

Example output (shape only; recorded numbers live in docs/benchmarks.md)::

    | size | queries x gallery | implementation | median s | peak extra memory |
    |:--|--:|--:|--:|--:|
    | icfg | 19848 x 19848 | rank_metrics | ... | ... |
"""

import argparse
from typing import Dict, List, Optional

import torch
from _common import (
    GIB,
    PeakRSS,
    fmt_bytes,
    format_machine,
    machine_info,
    markdown_table,
    median,
    mem_available_bytes,
    run_in_child,
    time_runs,
    write_json,
)

#: name -> (queries, gallery, identities): the test splits' shapes.
SIZES = {
    'cuhk': (6156, 3074, 1000),
    'icfg': (19848, 19848, 1000),
    '1m': (500, 1_000_000, 100_000),
}
METRIC_KEYS = ('R1', 'R5', 'R10', 'mAP', 'mINP')
TOLERANCE = 1e-6

#: Bytes per similarity score the reference holds at its peak, from its
#: tensors: the argsort index matrix (8), the gathered gallery labels (8),
#: the match matrix (1) and its cumulative sum (8). With the input matrix (4)
#: this is the skip estimate.
REFERENCE_BYTES_PER_SCORE = 25
#: Scale of the integer-valued scores (2**-23: exact in float32).
SCORE_SCALE = 2.0**-23


def make_problem(
    num_queries: int, num_gallery: int, num_ids: int, seed: int = 0
) -> tuple:
    """A random similarity matrix and labels, without correct/incorrect ties.

    Built row chunk by row chunk into one preallocated float32 matrix, so the
    set-up needs little beyond the matrix itself.

    Args:
        num_queries (int): Q.
        num_gallery (int): G.
        num_ids (int): Identities; each gallery item gets one (balanced),
            each query the label of a random gallery item (so every query
            has a correct item).
        seed (int): Seed of everything random.

    Returns:
        tuple: ``sim`` (Q, G) float32, ``query_labels`` (Q,) int64,
        ``gallery_labels`` (G,) int64.

    Example:
        >>> sim, ql, gl = make_problem(4, 10, 3)
        >>> sim.shape, ql.shape, gl.shape
        (torch.Size([4, 10]), torch.Size([4]), torch.Size([10]))
    """
    gen = torch.Generator().manual_seed(seed)
    gallery_labels = torch.arange(num_gallery) % num_ids
    gallery_labels = gallery_labels[torch.randperm(num_gallery, generator=gen)]
    query_labels = gallery_labels[
        torch.randint(0, num_gallery, (num_queries,), generator=gen)
    ]
    sim = torch.empty(num_queries, num_gallery, dtype=torch.float32)
    rows = max(1, (16 * 1024**2) // num_gallery)
    for start in range(0, num_queries, rows):
        stop = min(start + rows, num_queries)
        noise = torch.randint(
            0, 2**22, (stop - start, num_gallery), generator=gen, dtype=torch.int32
        )
        chunk = sim[start:stop]
        torch.mul(noise, 2, out=noise)  # even: incorrect items
        match = query_labels[start:stop, None] == gallery_labels[None, :]
        boost = torch.randint(
            0, 2**19, (int(match.sum()),), generator=gen, dtype=torch.int32
        )
        noise[match] += 2 * boost + 1  # odd: correct items, never tied with even
        chunk.copy_(noise)
        chunk.mul_(SCORE_SCALE)
    return sim, query_labels, gallery_labels


def reference_rank_metrics(
    sim: torch.Tensor,
    query_labels: torch.Tensor,
    gallery_labels: torch.Tensor,
    topk=(1, 5, 10),
) -> Dict[str, float]:
    """IRRA-style ranking: argsort the full matrix, gather matches, cumsum.

    Args:
        sim (Tensor): (Q, G) similarities.
        query_labels (Tensor): (Q,) labels.
        gallery_labels (Tensor): (G,) labels.
        topk (Sequence[int]): The K of each R@K.

    Returns:
        dict[str, float]: ``R{K}``, ``mAP``, ``mINP`` in percent.

    Example:
        >>> sim = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
        >>> m = reference_rank_metrics(sim, torch.tensor([1]),
        ...                            torch.tensor([0, 1, 1, 0, 0, 1]), (1, 5))
        >>> round(m['mAP'], 2), m['mINP']
        (55.56, 50.0)
    """
    indices = torch.argsort(sim, dim=1, descending=True)  # (Q, G) int64
    matches = gallery_labels[indices].eq(query_labels.view(-1, 1))  # (Q, G) bool
    tmp_cmc = matches.cumsum(1)  # (Q, G) int64: correct items up to each rank
    num_rel = tmp_cmc[:, -1]
    results = {}
    for k in topk:
        hits = tmp_cmc[:, min(k, tmp_cmc.shape[1]) - 1] > 0
        results[f'R{k}'] = hits.double().mean().item() * 100
    # INP: num_rel / rank of the last correct item (the first argmax of the
    # cumulative count is where it reaches num_rel).
    last = tmp_cmc.argmax(dim=1)
    inp = num_rel.double() / (last + 1).double()
    # AP: mean over the correct items of (correct so far / rank).
    rows, cols = matches.nonzero(as_tuple=True)
    precision = tmp_cmc[rows, cols].double() / (cols + 1).double()
    ap = torch.zeros(sim.shape[0], dtype=torch.float64).index_add_(0, rows, precision)
    ap = ap / num_rel.double()
    results['mAP'] = ap.mean().item() * 100
    results['mINP'] = inp.mean().item() * 100
    return results


def measure(
    impl: str, size: str, runs: int, warmup: int, seed: int, threads: int
) -> Dict:
    """Run one implementation on one size (meant for a fresh child process).

    Returns:
        dict: ``times`` (s), ``extra_bytes`` (peak memory above the input),
        ``input_bytes``, ``peak_reset`` and ``metrics``.
    """
    from tbps_mm.evaluation.functional import rank_metrics

    torch.set_num_threads(threads)
    num_queries, num_gallery, num_ids = SIZES[size]
    sim, query_labels, gallery_labels = make_problem(
        num_queries, num_gallery, num_ids, seed
    )
    if impl == 'reference':
        fn = lambda: reference_rank_metrics(sim, query_labels, gallery_labels)
    else:
        fn = lambda: rank_metrics(sim, query_labels, gallery_labels)
    with PeakRSS() as peak:
        times, metrics = time_runs(fn, runs=runs, warmup=warmup)
    return dict(
        times=times,
        extra_bytes=peak.extra_bytes,
        input_bytes=sim.numel() * sim.element_size(),
        peak_reset=peak.reset,
        metrics=metrics,
    )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', nargs='+', default=list(SIZES), choices=list(SIZES))
    parser.add_argument('--runs', type=int, default=3, help='timed runs (median)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--threads', type=int, default=torch.get_num_threads(), help='torch threads'
    )
    parser.add_argument(
        '--scale',
        type=float,
        default=1.0,
        help='multiply the query count of every size (e.g. 0.1 for a quick check)',
    )
    parser.add_argument(
        '--max-reference-gib',
        type=float,
        default=None,
        help='skip the reference when its estimated memory (input included) is '
        'above this; default: --reference-memory-fraction of the memory '
        'available at start',
    )
    parser.add_argument('--reference-memory-fraction', type=float, default=0.6)
    parser.add_argument('--out', default=None, help='write the results as JSON')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.scale != 1.0:
        for name, (q, g, ids) in list(SIZES.items()):
            SIZES[name] = (max(1, round(q * args.scale)), g, ids)
    info = machine_info()
    info['torch_threads'] = args.threads
    budget = (
        args.max_reference_gib * GIB
        if args.max_reference_gib is not None
        else args.reference_memory_fraction * mem_available_bytes()
    )
    records, rows = [], []
    for size in args.sizes:
        num_queries, num_gallery, num_ids = SIZES[size]
        scores = num_queries * num_gallery
        per_impl = {}
        for impl in ('reference', 'rank_metrics'):
            estimate = None
            if impl == 'reference':
                estimate = (REFERENCE_BYTES_PER_SCORE + 4) * scores
            if impl == 'reference' and estimate > budget:
                out = dict(
                    status='skipped',
                    result=None,
                    message=f'estimated {fmt_bytes(estimate)} > budget '
                    f'{fmt_bytes(budget)}',
                )
            else:
                # children use the size table of this process (scale applied)
                out = run_in_child(
                    _measure_sized,
                    impl=impl,
                    size=size,
                    shape=SIZES[size],
                    runs=args.runs,
                    warmup=args.warmup,
                    seed=args.seed,
                    threads=args.threads,
                )
            out['estimate_bytes'] = estimate
            per_impl[impl] = out
        records.append(_summarise(size, SIZES[size], per_impl))
        rows.extend(_table_rows(records[-1]))

    print(
        f'Evaluation speed and memory: rank_metrics vs a full-argsort reference '
        f'(IRRA-style), median of {args.runs} runs after {args.warmup} warm-up, '
        f'each in a fresh process; peak memory above the input similarity matrix.\n'
    )
    print(
        markdown_table(
            [
                'size',
                'queries x gallery',
                'implementation',
                'median s',
                'peak extra memory',
                'speed-up',
                'memory ratio',
                'max abs diff',
            ],
            rows,
            align='lrlrrrrr',
        )
    )
    print('\n' + format_machine(info))
    write_json(args.out, dict(benchmark='eval_speed', machine=info, results=records))
    failures = [
        r['size']
        for r in records
        if r['max_abs_diff'] is not None and not r['max_abs_diff'] < TOLERANCE
    ]
    errors = [
        f'{r["size"]}/{impl}: {r[impl]["message"]}'
        for r in records
        for impl in ('reference', 'rank_metrics')
        if r[impl]['status'] in ('error', 'timeout')
    ]
    if failures:
        raise SystemExit(f'numbers differ by >= {TOLERANCE} at: {failures}')
    if errors:
        raise SystemExit('failed runs:\n' + '\n'.join(errors))


def _measure_sized(impl: str, size: str, shape: tuple, **kwargs) -> Dict:
    """:func:`measure` with the (possibly scaled) shape of ``size``."""
    SIZES[size] = tuple(shape)
    return measure(impl, size, **kwargs)


def _summarise(size: str, shape: tuple, per_impl: Dict) -> Dict:
    record = dict(size=size, queries=shape[0], gallery=shape[1], ids=shape[2])
    for impl, out in per_impl.items():
        res = out['result'] or {}
        record[impl] = dict(
            status=out['status'],
            message=out['message'],
            median_s=median(res['times']) if res else None,
            times_s=res.get('times'),
            extra_bytes=res.get('extra_bytes'),
            estimate_bytes=out.get('estimate_bytes'),
            metrics=res.get('metrics'),
        )
    ref, fast = record['reference'], record['rank_metrics']
    record['max_abs_diff'] = None
    record['speedup'] = record['memory_ratio'] = None
    if ref['metrics'] and fast['metrics']:
        record['max_abs_diff'] = max(
            abs(ref['metrics'][k] - fast['metrics'][k]) for k in METRIC_KEYS
        )
        record['speedup'] = ref['median_s'] / fast['median_s']
        record['memory_ratio'] = fast['extra_bytes'] / max(ref['extra_bytes'], 1)
    return record


def _table_rows(record: Dict) -> List[List[str]]:
    shape = f'{record["queries"]} x {record["gallery"]}'
    rows = []
    for impl in ('reference', 'rank_metrics'):
        r = record[impl]
        if r['status'] == 'ok':
            time_cell, mem_cell = f'{r["median_s"]:.2f}', fmt_bytes(r['extra_bytes'])
        elif r['status'] == 'skipped':
            time_cell = 'skipped'
            mem_cell = f'est. {fmt_bytes(r["estimate_bytes"])} (does not fit)'
        else:
            time_cell, mem_cell = r['status'], r['message'].splitlines()[0][:40]
        extra = ['', '', '']
        if impl == 'rank_metrics':
            if record['speedup'] is not None:
                extra = [
                    f'{record["speedup"]:.1f}x',
                    f'1/{1 / record["memory_ratio"]:.1f}',
                    f'{record["max_abs_diff"]:.1e}',
                ]
            else:
                extra = ['n/a', 'n/a', 'n/a']
        rows.append([record['size'], shape, impl, time_cell, mem_cell] + extra)
    metrics = record['rank_metrics']['metrics'] or record['reference']['metrics']
    if metrics:
        numbers = ', '.join(f'{k} {metrics[k]:.2f}' for k in METRIC_KEYS)
        rows.append([record['size'], '', f'metrics: {numbers}', '', '', '', '', ''])
    return rows


if __name__ == '__main__':
    main()
