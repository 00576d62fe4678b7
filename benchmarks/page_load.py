"""Benchmark: search-page latency under concurrent clients on a real server.

Serves ``tbps_mm_serve.create_app`` on uvicorn (the settings of
``tools/serve.py``, through ``tbps_mm_serve.local_server``) on a free
127.0.0.1 port, over the images of a generated tiny SynthPedes (96 crops),
indexed by the quick-start model (``configs/tbps_synth.py``, random init:
what is timed is the page's request path, caption encoding and index lookup,
not ranking quality). ``--clients`` threads each send ``--queries`` searches
(``GET /api/search?q=<caption>&limit=12``) over their own connections, all
at once; every answer must be 200 with JSON results. Reports the p50 / p95 /
max latency of one request, requests per second and the error count, after
``--warmup`` untimed requests.

The model runs under the app's lock (one query at a time), so latency grows
with concurrency; the figure says what a user waits for with that many
people searching at once on this machine.

Usage:
    python benchmarks/page_load.py [--clients 50] [--queries 4] \\
        [--out benchmarks/results/page_load.json]
"""

import argparse
import http.client
import json
import os.path as osp
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional

import torch
from _common import machine_info, markdown_table, percentile, write_json

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def build_app(folder: str, threads: int):
    """A random-init quick-start model over a tiny SynthPedes; its captions."""
    from mmengine.config import Config

    import tbps_mm  # noqa: F401  (registers the components)
    from tbps_mm.apis import TBPSInferencer, init_model
    from tbps_mm.datasets.synthpedes import generate_synthpedes
    from tbps_mm_serve import create_app

    torch.set_num_threads(threads)
    root = generate_synthpedes(
        osp.join(folder, 'synthpedes'), size='tiny', seed=0, progress=False
    )
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'tbps_synth.py'))
    for loader in ('test_dataloader', 'val_dataloader'):
        for step in cfg[loader].dataset.pipeline:
            if step.get('type') == 'TokenizeCaption':
                step.tokenizer = osp.join(root, 'tokenizer')
    torch.manual_seed(0)
    checkpoint = osp.join(folder, 'model.pth')
    torch.save(init_model(cfg).state_dict(), checkpoint)
    inferencer = TBPSInferencer(cfg, checkpoint, show_progress=False)
    inferencer.index(osp.join(root, 'imgs'), index_file=osp.join(folder, 'g.idx'))
    with open(osp.join(root, 'reid_raw.json')) as f:
        captions = [c for item in json.load(f) for c in item['captions']]
    return create_app(inferencer), captions, len(inferencer.paths)


def one_request(url: str, caption: str) -> float:
    """Seconds for one search over a fresh connection; raises on a bad answer."""
    parsed = urllib.parse.urlparse(url)
    target = '/api/search?' + urllib.parse.urlencode(dict(q=caption, limit=12))
    start = time.perf_counter()
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
    try:
        connection.request('GET', target)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    elapsed = time.perf_counter() - start
    if response.status != 200 or not json.loads(body).get('results'):
        raise RuntimeError(f'status {response.status}: {body[:200]!r}')
    return elapsed


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--clients', type=int, default=50)
    parser.add_argument('--queries', type=int, default=4, help='per client')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.clients < 1 or args.queries < 1:
        print('error: --clients and --queries must be >= 1', file=sys.stderr)
        return 2
    from tbps_mm_serve import LocalServer

    with tempfile.TemporaryDirectory() as folder:
        app, captions, num_images = build_app(folder, args.threads)
        with LocalServer(app) as url:
            for i in range(args.warmup):
                one_request(url, captions[i % len(captions)])

            def client(k: int) -> List[object]:
                out = []
                for j in range(args.queries):
                    caption = captions[(k * args.queries + j) % len(captions)]
                    try:
                        out.append(one_request(url, caption))
                    except Exception as err:  # noqa: BLE001 - counted, reported
                        out.append(err)
                return out

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                outcomes = [o for r in pool.map(client, range(args.clients)) for o in r]
            wall = time.perf_counter() - start
    times = [o for o in outcomes if isinstance(o, float)]
    errors = [repr(o) for o in outcomes if not isinstance(o, float)]
    row = dict(
        clients=args.clients,
        queries_per_client=args.queries,
        requests=len(outcomes),
        errors=len(errors),
        p50_ms=1000 * percentile(times, 50) if times else None,
        p95_ms=1000 * percentile(times, 95) if times else None,
        max_ms=1000 * max(times) if times else None,
        requests_per_s=len(times) / wall,
        gallery_images=num_images,
    )
    print(
        markdown_table(
            ['clients', 'requests', 'errors', 'p50 ms', 'p95 ms', 'max ms', 'req/s'],
            [
                [
                    row['clients'],
                    row['requests'],
                    row['errors'],
                    f'{row["p50_ms"]:.0f}' if times else '-',
                    f'{row["p95_ms"]:.0f}' if times else '-',
                    f'{row["max_ms"]:.0f}' if times else '-',
                    f'{row["requests_per_s"]:.1f}',
                ]
            ],
        )
    )
    for error in errors[:5]:
        print('error:', error)
    write_json(args.out, dict(machine=machine_info(), result=row, errors=errors[:20]))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main())
