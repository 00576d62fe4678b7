"""Benchmark: the search page's per-request cost at 10k and 1M images.

The page (``tbps_mm_serve/search_app.py``) answers ``/api/search`` with one
page of results and ``/api/image/<id>`` with one image. Neither may do work
that grows with the gallery: a request looks up only the ids and paths of
the results it returns (``GalleryIndex.id_of`` / ``key_of``). This script
times both routes through FastAPI's ``TestClient`` against
``GalleryIndex`` galleries of each ``--sizes`` (random unit vectors of
``--dim`` dimensions, ``ivf-sq8`` with a fixed ``--nprobe`` so that the
index search itself costs about the same at every size), and, in the same
run, the O(N) work the page did per request before (copying every key into
a list and building a key -> position dict of N entries), for comparison.

The caption encoder is left out: its cost does not depend on the gallery
(``benchmarks/search_latency.py`` measures it). The stand-in inferencer
returns the index's results for a fixed query vector through the same
``search`` entry point the page calls.

Columns: ``index search ms`` (``GalleryIndex.search``, the top ``--limit``
keys), ``/api/search ms`` and ``/api/image ms`` (whole requests, p50),
``page overhead ms`` (``/api/search`` minus the index search) and
``old O(N) work ms`` (keys list + N-entry dict, what each request used to
add).

Usage:
    python benchmarks/search_page_cost.py [--sizes 10000 1000000] \\
        [--requests 200] [--out benchmarks/results/search_page_cost.json]
"""

import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np
from _common import machine_info, markdown_table, percentile, write_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


class IndexOnlyInferencer:
    """What the page needs of a ``TBPSInferencer``, with a fixed query
    vector in place of the caption encoder."""

    def __init__(self, gallery, query: np.ndarray) -> None:
        self.gallery = gallery
        self.query = query

    def search(self, query: str, topk: int = 10):
        scores, keys = self.gallery.search(self.query, topk)
        return [(k, float(s)) for k, s in zip(keys[0], scores[0])]


def build(size: int, dim: int, nprobe: int, folder: str):
    """A ``GalleryIndex`` of ``size`` random unit vectors keyed by image paths
    (one real image file, so that ``/api/image`` serves something)."""
    from tbps_mm.index import GalleryIndex, default_nlist

    rng = np.random.default_rng(0)
    nlist = default_nlist(size)
    index = GalleryIndex(dim, 'ivf-sq8', nlist=nlist, nprobe=nprobe)
    sample = rng.standard_normal((min(size, 40 * nlist), dim), dtype=np.float32)
    index.train(sample / np.linalg.norm(sample, axis=1, keepdims=True))
    image = os.path.join(folder, 'img_0000000.png')
    with open(image, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + bytes(64))
    for start in range(0, size, 100_000):
        count = min(100_000, size - start)
        x = rng.standard_normal((count, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        keys = [
            os.path.join(folder, f'img_{i:07d}.png')
            for i in range(start, start + count)
        ]
        index.add(keys, x)
    return index


def measure(size: int, args: argparse.Namespace) -> Dict:
    from fastapi.testclient import TestClient

    from tbps_mm_serve import create_app

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        index = build(size, args.dim, args.nprobe, folder)
        build_s = time.perf_counter() - start
        rng = np.random.default_rng(1)
        query = rng.standard_normal((1, args.dim), dtype=np.float32)
        client = TestClient(create_app(IndexOnlyInferencer(index, query)))

        def timed(fn) -> List[float]:
            for _ in range(args.warmup):
                fn()
            out = []
            for _ in range(args.requests):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return out

        search = timed(lambda: index.search(query, args.limit))
        page = timed(
            lambda: client.get(
                '/api/search', params=dict(q='a person', limit=args.limit)
            )
        )
        image = timed(lambda: client.get('/api/image/0'))
        response = client.get(
            '/api/search', params=dict(q='a person', limit=args.limit)
        )
        assert (
            response.status_code == 200
            and len(response.json()['results']) == args.limit
        )

        def old_work():
            paths = index.keys
            return {path: i for i, path in enumerate(paths)}

        old = timed_few(old_work, max(3, args.requests // 50))
    ms = lambda values: 1000 * percentile(values, 50)  # noqa: E731
    return dict(
        gallery=size,
        build_s=build_s,
        index_search_ms=ms(search),
        api_search_ms=ms(page),
        api_search_p95_ms=1000 * percentile(page, 95),
        api_image_ms=ms(image),
        page_overhead_ms=ms(page) - ms(search),
        old_per_request_work_ms=ms(old),
        requests=args.requests,
    )


def timed_few(fn, runs: int) -> List[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 1_000_000])
    parser.add_argument('--dim', type=int, default=128)
    parser.add_argument('--nprobe', type=int, default=8)
    parser.add_argument('--limit', type=int, default=12, help='results per page')
    parser.add_argument('--requests', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--out', default=None)
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(1)
    records = []
    for size in args.sizes:
        records.append(measure(size, args))
        print(records[-1], flush=True)
    rows = [
        [
            f'{r["gallery"]:,}',
            f'{r["index_search_ms"]:.2f}',
            f'{r["api_search_ms"]:.2f}',
            f'{r["api_image_ms"]:.2f}',
            f'{r["page_overhead_ms"]:.2f}',
            f'{r["old_per_request_work_ms"]:.1f}',
        ]
        for r in records
    ]
    print(
        markdown_table(
            [
                'gallery',
                'index search ms',
                '/api/search ms',
                '/api/image ms',
                'page overhead ms',
                'old O(N) work ms',
            ],
            rows,
            align='lrrrrr',
        )
    )
    write_json(
        args.out,
        dict(
            benchmark='search_page_cost',
            machine=machine_info(),
            args=vars(args),
            results=records,
        ),
    )


if __name__ == '__main__':
    main()
