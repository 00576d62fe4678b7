"""Benchmark: reading the rows a two-stage search re-scores, from a cold cache.

A ``two-stage`` ``GalleryIndex`` re-scores each query's candidates (10 x
top-k, 100 for top-10) from float16 vectors in a file that, at ten million
images (25.6 GB of 1,280-d vectors), does not stay in the page cache of a
24 GB machine. This script writes such a file with ``VectorFile``, drops it
from the page cache (``POSIX_FADV_DONTNEED``) before every gather, and times
``VectorFile.gather`` of ``--candidates`` random rows two ways: as committed
(every row's range announced with ``POSIX_FADV_WILLNEED`` first, so the reads
run in parallel) and with that prefetch switched off (one page fault after
another, each with the kernel's readahead).

Usage:
    python benchmarks/vector_file_io.py --rows 10000000 --dim 1280 \\
        --work-dir DIR --out benchmarks/results/vector_file_io.json
"""

import argparse
import os
import time
from typing import List, Optional

import numpy as np
from _common import machine_info, markdown_table, percentile, write_json


def drop_from_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rows', type=int, default=10_000_000)
    parser.add_argument('--dim', type=int, default=1280)
    parser.add_argument('--candidates', type=int, default=100)
    parser.add_argument('--gathers', type=int, default=30)
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)

    from tbps_mm.index import VectorFile

    vectors = VectorFile.create(args.dim, folder=args.work_dir)
    chunk = np.random.default_rng(0).standard_normal((100_000, args.dim))
    chunk = chunk.astype(np.float16)
    start = time.perf_counter()
    for first in range(0, args.rows, len(chunk)):
        count = min(len(chunk), args.rows - first)
        vectors.write(np.arange(first, first + count), chunk[:count])
    vectors.fsync()
    write_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    results = {}
    prefetch = vectors._prefetch
    for mode in ('prefetch', 'one fault after another', 'prefetch'):
        vectors._prefetch = prefetch if mode == 'prefetch' else (lambda ids: None)
        times = []
        for _ in range(args.gathers):
            drop_from_cache(vectors.path)
            ids = rng.integers(0, args.rows, args.candidates)
            start = time.perf_counter()
            vectors.gather(ids)
            times.append(time.perf_counter() - start)
        results.setdefault(mode, []).extend(times)
    rows = [
        [mode, f'{1000 * percentile(t, 50):.1f}', f'{1000 * percentile(t, 95):.1f}']
        for mode, t in results.items()
    ]
    print(
        f'{args.rows:,} rows of {args.dim} float16 '
        f'({vectors.disk_bytes / 1e9:.1f} GB) '
        f'written in {write_s:.0f} s; {args.candidates} random rows per gather, '
        'cold cache'
    )
    print(markdown_table(['reads', 'p50 ms', 'p95 ms'], rows, align='lrr'))
    write_json(
        args.out,
        dict(
            benchmark='vector_file_io',
            machine=machine_info(),
            args=vars(args),
            write_s=write_s,
            results={
                mode: dict(
                    p50_ms=1000 * percentile(t, 50), p95_ms=1000 * percentile(t, 95)
                )
                for mode, t in results.items()
            },
        ),
    )


if __name__ == '__main__':
    main()
