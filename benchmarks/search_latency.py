"""Benchmark: ``TBPSInferencer`` text-query latency against large galleries.

A user's search is ``TBPSInferencer.search(query, topk)``: the caption goes
through the config's test pipeline (cleaning, tokenization) and the text
encoder, then is scored against every indexed image with the fused
similarity ``s_coarse + lambda * mean_k s_k`` and the top k are returned. This
script times that call (p50 / p95 over ``--queries`` SynthPedes captions,
after ``--warmup`` untimed ones) against pre-encoded galleries of 10k, 100k
and 1M images on the CPU, and reports the index memory per image. A gallery
size whose searches are slow gets fewer timed queries (at least
``--min-queries``) so that it stays within ``--time-budget`` seconds; the
``queries`` column says how many were timed.

The galleries are random L2-normalised embeddings of the model's shapes
(coarse (N, D) and parts (N, K, D), float32 as the inferencer stores them)
with one path string per image: encoding a million real images is not what
is measured here, and searching costs the same whatever the embeddings hold.
The matrix is handed over with ``TBPSInferencer.set_gallery``; everything
timed is the public ``search()``. Each gallery size runs in a fresh spawned
process.

Models (``--model``):

- ``synth`` (default): ``configs/tbps_synth.py`` (D = 256, K = 4, 2-layer
  BERT-style text encoder), random init, with the SynthPedes tokenizer;
- ``clip-b16``: the reference CLIP model of ``configs/tbps_cuhk.py`` (D = 512,
  K = 6, the 12-layer CLIP text transformer shape), random init; the
  SynthPedes word-level tokenizer stands in for CLIP's BPE (no CLIP files
  are available offline), which changes tokenization cost only marginally.

Columns: ``p50/p95 ms`` of the whole ``search`` call; ``encode p50 ms`` of
``FusedEncoder.encode_texts`` alone (pipeline + text encoder, independent of
the gallery);
``embeddings B/img`` the float32 bytes of one image's coarse + part
embeddings; ``RSS B/img`` the resident memory the attached index actually
took per image (embeddings + path strings); ``search peak extra`` the memory
a query needed above the index (its similarity row and top-k).

Usage:
    python benchmarks/search_latency.py [--sizes 10000 100000 1000000] \\
        [--queries 50] [--model synth] [--out results.json]

Example output (shape only; recorded numbers live in docs/benchmarks.md)::

    | gallery | p50 ms | p95 ms | encode p50 ms | embeddings B/img | ... |
    |--:|--:|--:|--:|--:|--:|
    | 1000000 | ... | ... | ... | 5120 | ... |
"""

import argparse
import json
import os.path as osp
import tempfile
import time
from typing import Dict, List, Optional

import torch
from _common import (
    PeakRSS,
    current_rss_bytes,
    fmt_bytes,
    format_machine,
    machine_info,
    markdown_table,
    median,
    mem_available_bytes,
    percentile,
    quiet_mmengine,
    run_in_child,
    write_json,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODEL_CONFIGS = {'synth': 'configs/tbps_synth.py', 'clip-b16': 'configs/tbps_cuhk.py'}


def inferencer_config(model: str, tokenizer_dir: str):
    """The config the inferencer is built from: random-init model, and the
    test pipeline's tokenizer pointed at ``tokenizer_dir``.

    Returns:
        mmengine.Config
    """
    from mmengine.config import Config

    import tbps_mm  # noqa: F401  (registers the components)

    if model == 'clip-b16':
        from _step_cost import load_config

        cfg = load_config('clip-b16')
    else:
        cfg = Config.fromfile(osp.join(REPO_ROOT, MODEL_CONFIGS[model]))
    for loader in ('test_dataloader', 'val_dataloader'):
        for t in cfg[loader].dataset.pipeline:
            if t.get('type') == 'TokenizeCaption':
                t.tokenizer = tokenizer_dir
    return cfg


def random_gallery(num: int, dims: int, parts: int, seed: int = 0) -> tuple:
    """Random L2-normalised (N, D) and (N, K, D) float32 embeddings.

    Filled in chunks into preallocated tensors, so set-up needs little memory
    beyond the gallery itself.
    """
    gen = torch.Generator().manual_seed(seed)
    embed = torch.empty(num, dims)
    part_embeds = torch.empty(num, parts, dims)
    step = 65536
    for start in range(0, num, step):
        stop = min(start + step, num)
        chunk = torch.randn(stop - start, dims, generator=gen)
        embed[start:stop] = torch.nn.functional.normalize(chunk, dim=-1)
        if parts:
            chunk = torch.randn(stop - start, parts, dims, generator=gen)
            part_embeds[start:stop] = torch.nn.functional.normalize(chunk, dim=-1)
    return embed, part_embeds


def measure(
    model: str,
    gallery_size: int,
    config_dir: str,
    queries: List[str],
    warmup: int,
    topk: int,
    threads: int,
    time_budget_s: float = 0.0,
    min_queries: int = 5,
) -> Dict:
    """Latency and memory of ``search`` against one gallery size (child)."""
    torch.set_num_threads(threads)
    quiet_mmengine()
    from tbps_mm.apis import TBPSInferencer

    cfg = inferencer_config(model, osp.join(config_dir, 'tokenizer'))
    inferencer = TBPSInferencer(
        cfg, osp.join(config_dir, f'{model}.pth'), show_progress=False
    )
    dims = cfg.model.head.embed_dims
    parts = cfg.model.head.num_parts
    before = current_rss_bytes()
    embed, part_embeds = random_gallery(gallery_size, dims, parts)
    paths = [f'gallery/{i // 1000:04d}/{i:07d}.jpg' for i in range(gallery_size)]
    inferencer.set_gallery(paths, embed, part_embeds)
    index_rss = current_rss_bytes() - before
    # Bytes of embeddings per image: one coarse row and one (K, D) part block.
    embed_bytes = sum(t.element_size() * t[0].numel() for t in (embed, part_embeds))
    del embed, part_embeds  # the inferencer holds them (same storage on CPU)

    warm = []
    for q in queries[:warmup]:
        start = time.perf_counter()
        inferencer.search(q, topk=topk)
        warm.append(time.perf_counter() - start)
        if time_budget_s and sum(warm) > 0.1 * time_budget_s:
            break  # slow searches: one warm-up query is enough
    # bound the time of one gallery size: fewer (>= min_queries) timed queries
    # when one takes long
    if warm and time_budget_s:
        affordable = int(time_budget_s / max(median(warm), 1e-9))
        queries = queries[warmup : warmup + max(min_queries, affordable)]
    else:
        queries = queries[warmup:]
    totals, encodes = [], []
    with PeakRSS() as peak:
        for q in queries:
            start = time.perf_counter()
            results = inferencer.search(q, topk=topk)
            totals.append(time.perf_counter() - start)
            if len(results) != min(topk, gallery_size):
                raise RuntimeError(f'search returned {len(results)} results')
    for q in queries:
        start = time.perf_counter()
        inferencer.encoder.encode_texts([q])
        encodes.append(time.perf_counter() - start)
    return dict(
        gallery=gallery_size,
        queries=len(totals),
        dims=dims,
        parts=parts,
        p50_ms=1000 * percentile(totals, 50),
        p95_ms=1000 * percentile(totals, 95),
        encode_p50_ms=1000 * median(encodes),
        embed_bytes_per_image=embed_bytes,
        rss_bytes_per_image=index_rss / gallery_size,
        search_peak_extra_bytes=peak.extra_bytes,
        times_ms=[1000 * t for t in totals],
    )


def prepare(model: str, folder: str, num_queries: int, seed: int = 0) -> List[str]:
    """Generate a tiny SynthPedes (tokenizer + captions) and a weights-only
    checkpoint of the random-init model into ``folder``; return the queries."""
    from tbps_mm.apis import init_model
    from tbps_mm.datasets.synthpedes import generate_synthpedes

    root = osp.join(folder, 'synthpedes')
    generate_synthpedes(root, size='tiny', seed=seed, progress=False)
    tokenizer = osp.join(root, 'tokenizer')
    cfg = inferencer_config(model, tokenizer)
    torch.manual_seed(seed)
    net = init_model(cfg)
    torch.save(net.state_dict(), osp.join(folder, f'{model}.pth'))
    # the inferencer reads <config_dir>/tokenizer
    import shutil

    shutil.copytree(tokenizer, osp.join(folder, 'tokenizer'))
    with open(osp.join(root, 'reid_raw.json')) as f:
        captions = [c for item in json.load(f) for c in item['captions']]
    if len(captions) < num_queries:
        raise ValueError(f'only {len(captions)} captions for {num_queries} queries')
    return captions[:num_queries]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000]
    )
    parser.add_argument('--queries', type=int, default=50, help='timed queries')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--topk', type=int, default=10)
    parser.add_argument(
        '--time-budget',
        type=float,
        default=120.0,
        help='seconds of timed queries per gallery size: slower searches get '
        'fewer queries (at least --min-queries); 0: no limit',
    )
    parser.add_argument('--min-queries', type=int, default=5)
    parser.add_argument('--model', default='synth', choices=list(MODEL_CONFIGS))
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument(
        '--max-index-fraction',
        type=float,
        default=0.6,
        help='skip a gallery whose index would exceed this fraction of the '
        'memory available at start',
    )
    parser.add_argument('--out', default=None, help='write the results as JSON')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    quiet_mmengine()
    info = machine_info()
    info['torch_threads'] = args.threads
    budget = args.max_index_fraction * mem_available_bytes()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        queries = prepare(args.model, tmp, args.queries + args.warmup)
        cfg = inferencer_config(args.model, osp.join(tmp, 'tokenizer'))
        dims, parts = cfg.model.head.embed_dims, cfg.model.head.num_parts
        for size in args.sizes:
            estimate = size * 4 * dims * (1 + parts)
            if estimate > budget:
                records.append(
                    dict(
                        gallery=size,
                        status='skipped',
                        message=f'index est. {fmt_bytes(estimate)} > '
                        f'{fmt_bytes(budget)}',
                    )
                )
                continue
            out = run_in_child(
                measure,
                model=args.model,
                gallery_size=size,
                config_dir=tmp,
                queries=queries,
                warmup=args.warmup,
                topk=args.topk,
                threads=args.threads,
                time_budget_s=args.time_budget,
                min_queries=args.min_queries,
            )
            if out['status'] == 'ok':
                records.append(dict(out['result'], status='ok'))
            else:
                records.append(
                    dict(gallery=size, status=out['status'], message=out['message'])
                )
    rows = []
    for r in records:
        if r['status'] != 'ok':
            rows.append(
                [r['gallery'], '', r['status'], r['message'][:60], '', '', '', '']
            )
            continue
        rows.append(
            [
                r['gallery'],
                r['queries'],
                f'{r["p50_ms"]:.1f}',
                f'{r["p95_ms"]:.1f}',
                f'{r["encode_p50_ms"]:.1f}',
                r['embed_bytes_per_image'],
                f'{r["rss_bytes_per_image"]:.0f}',
                fmt_bytes(r['search_peak_extra_bytes']),
            ]
        )
    print(
        f'TBPSInferencer.search latency, model {args.model} (D={dims}, K={parts}), '
        f'top-{args.topk}, up to {args.queries} SynthPedes captions (within '
        f'{args.time_budget:.0f} s per gallery) after {args.warmup} warm-up, CPU, '
        f'each gallery in a fresh process.\n'
    )
    print(
        markdown_table(
            [
                'gallery',
                'queries',
                'p50 ms',
                'p95 ms',
                'encode p50 ms',
                'embeddings B/img',
                'RSS B/img',
                'search peak extra',
            ],
            rows,
        )
    )
    print('\n' + format_machine(info))
    write_json(
        args.out,
        dict(
            benchmark='search_latency', machine=info, model=args.model, results=records
        ),
    )
    failed = [r for r in records if r['status'] in ('error', 'timeout', 'oom')]
    if failed:
        raise SystemExit(
            'failed: ' + '; '.join(f'{r["gallery"]}: {r["message"]}' for r in failed)
        )


if __name__ == '__main__':
    main()
