"""Benchmark: the reference CLIP model on a GPU: training step, memory, evaluation.

One prepared script for a GPU, its device time bounded by ``--time-limit``.
It measures the model of ``configs/tbps_cuhk.py``
(CLIP ViT-B/16 at 384x128 + the CLIP text transformer shape, K = 6 shared
part queries, SDM + ID + L_CMR), randomly initialised:

1. **Training step** (``model.train_step``: data preprocessor, forward,
   losses, backward, the config's ``AmpOptimWrapper`` step: autocast +
   dynamic loss scaling) at batch 64 on synthetic batches, for the full model
   and the global-only baseline (``configs/_base_/models/
   global_vit-b16_clip.py``: no part queries, no part losses): median
   step time after warm-up and the peak GPU memory of training
   (``torch.cuda.max_memory_allocated``: weights, gradients, Adam states and
   activations). The variants run one after the other, each built fresh after
   the previous one is freed, so each peak is its own.
2. **Evaluation of a CUHK-PEDES-sized test set** (3,074 gallery images and
   6,156 captions, random inputs, 1,000 identities): MMEngine's test-loop
   work done by hand: ``model.test_step`` on every batch (gallery images,
   then captions), ``TBPSRetrievalMetric.process`` on its outputs, and
   ``TBPSRetrievalMetric.evaluate`` (fused, coarse-only and parts-only
   rankings through ``rank_metrics``); wall time of each stage. Evaluation
   runs in full precision as the config's ``TestLoop`` does (``--eval-amp``
   to autocast).

Bounds: at most ``--steps`` timed steps per variant, fewer when the variant's
share of ``--time-limit`` runs out; evaluation is timed once after a one-batch
warm-up. On a machine without CUDA (``--device cpu``) the same code runs, so
it can be checked with small sizes, e.g.::

    python benchmarks/gpu_reference_model.py --device cpu --batch 2 --steps 2 \\
        --warmup 1 --gallery 32 --queries 64 --eval-batch 16 --tiny-model

Usage (GPU):
    python benchmarks/gpu_reference_model.py --out gpu_reference_model.json

Example output (shape only; recorded numbers live in docs/benchmarks.md)::

    | variant | batch | median step s | samples/s | peak GPU memory | ...
    |:--|--:|--:|--:|--:|
    | full | 64 | ... | ... | ... GiB |
"""

import argparse
import gc
import time
from typing import Dict, List, Optional

import torch
from _common import (
    fmt_bytes,
    format_machine,
    machine_info,
    markdown_table,
    median,
    quiet_mmengine,
    write_json,
)
from _step_cost import (
    build_model,
    build_optim_wrapper,
    load_config,
    synthetic_batch,
    variant_cfg,
)

#: A 2-layer ViT and text transformer with the reference model's structure, for
#: checking this script quickly on a CPU (``--tiny-model``).
TINY_VIT = dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128)
TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
)


def paper_config(args: argparse.Namespace):
    """``configs/tbps_cuhk.py`` with random init (and the tiny shapes).

    The full model and its global-only config get the same image size (and
    tiny shapes).
    """
    cfg = load_config('clip-b16')
    for model in (cfg.model, cfg.global_model):
        model.image_encoder.img_size = tuple(args.img_size)
        if args.tiny_model:
            model.image_encoder.arch = dict(TINY_VIT)
            model.text_encoder.config.update(TINY_TEXT)
            model.head.image_in_channels = TINY_VIT['embed_dims']
            model.head.text_in_channels = TINY_TEXT['hidden_size']
    return cfg


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _release(device: str) -> None:
    gc.collect()
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure_training(
    cfg, variant: str, args: argparse.Namespace, deadline: float
) -> Dict:
    """Step times and peak memory of one variant (built fresh)."""
    device = args.device
    _release(device)
    torch.manual_seed(0)
    model = build_model(variant_cfg(cfg, variant), device)
    optim = build_optim_wrapper(model, cfg.optim_wrapper, device)
    text = cfg.model.text_encoder.config
    data = synthetic_batch(
        args.batch,
        cfg.model.image_encoder.img_size,
        text['max_position_embeddings'],
        text['vocab_size'],
        cfg.model.losses.id.num_classes,
        text['eos_token_id'],
    )
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        start = time.perf_counter()
        log_vars = model.train_step(data, optim)
        _sync(device)
        elapsed = time.perf_counter() - start
        if not torch.isfinite(log_vars['loss'].detach()).item():
            raise FloatingPointError(f'{variant}: non-finite loss at step {i}')
        if i >= args.warmup:
            times.append(elapsed)
            if time.perf_counter() > deadline and len(times) >= 2:
                break
    peak = reserved = None
    if device.startswith('cuda'):
        peak = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved()
    params = sum(p.numel() for p in model.parameters())
    wrapper = type(optim).__name__
    del model, optim, data
    _release(device)
    return dict(
        variant=variant,
        batch=args.batch,
        params=params,
        times_s=times,
        median_s=median(times),
        samples_per_s=args.batch / median(times),
        peak_allocated_bytes=peak,
        peak_reserved_bytes=reserved,
        optim_wrapper=wrapper,
    )


def _test_batches(cfg, args: argparse.Namespace) -> List[dict]:
    """Collated test batches: the gallery images, then the captions.

    One random image batch and one random caption batch are made once and
    shared by all batches (their content does not change the cost); labels
    and sample indices are per item, as a test dataloader gives them.
    """
    from mmpretrain.structures import DataSample

    h, w = cfg.model.image_encoder.img_size
    text = cfg.model.text_encoder.config
    length = text['max_position_embeddings']
    gen = torch.Generator().manual_seed(0)
    eb = args.eval_batch
    imgs = list(torch.randint(0, 256, (eb, 3, h, w), generator=gen, dtype=torch.uint8))
    ids = torch.randint(1, text['vocab_size'], (eb, length), generator=gen)
    lengths = torch.randint(length // 4, length // 2, (eb,), generator=gen)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[torch.arange(eb), lengths - 1] = text['eos_token_id']
    ids, mask = list(ids * mask), list(mask)
    num_ids = min(args.num_ids, args.gallery)
    gallery_labels = torch.arange(args.gallery) % num_ids
    query_labels = gallery_labels[torch.arange(args.queries) % args.gallery]
    batches, idx = [], 0
    for modality, labels in (('image', gallery_labels), ('text', query_labels)):
        for start in range(0, len(labels), eb):
            n = min(eb, len(labels) - start)
            samples = []
            for j in range(n):
                s = DataSample().set_gt_label(int(labels[start + j]))
                s.set_metainfo(dict(sample_idx=idx, modality=modality))
                samples.append(s)
                idx += 1
            inputs = dict(
                img=imgs[:n] if modality == 'image' else [None] * n,
                text_ids=ids[:n] if modality == 'text' else [None] * n,
                text_mask=mask[:n] if modality == 'text' else [None] * n,
            )
            batches.append(dict(inputs=inputs, data_samples=samples))
    return batches


def measure_evaluation(cfg, args: argparse.Namespace) -> Dict:
    """Encode + evaluate a CUHK-PEDES-sized test set (see module docstring)."""
    from tbps_mm.evaluation import TBPSRetrievalMetric

    device = args.device
    _release(device)
    torch.manual_seed(0)
    model = build_model(variant_cfg(cfg, 'full'), device).eval()
    batches = _test_batches(cfg, args)
    metric = TBPSRetrievalMetric()
    amp = torch.autocast(device_type=device.split(':')[0], enabled=args.eval_amp)
    with torch.no_grad(), amp:
        model.test_step(batches[0])  # warm-up (kernels, allocator)
        model.test_step(batches[-1])
    _sync(device)
    encode = {'image': 0.0, 'text': 0.0}
    start_all = time.perf_counter()
    with torch.no_grad(), amp:
        for batch in batches:
            modality = batch['data_samples'][0].modality
            start = time.perf_counter()
            outputs = model.test_step(batch)
            metric.process(batch, outputs)
            _sync(device)
            encode[modality] += time.perf_counter() - start
    start = time.perf_counter()
    metrics = metric.evaluate(args.gallery + args.queries)
    rank_s = time.perf_counter() - start
    total = time.perf_counter() - start_all
    del model
    _release(device)
    return dict(
        gallery=args.gallery,
        queries=args.queries,
        eval_batch=args.eval_batch,
        encode_images_s=encode['image'],
        encode_text_s=encode['text'],
        metric_s=rank_s,
        total_s=total,
        metrics={k: v for k, v in metrics.items() if k.startswith('t2i')},
    )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu'
    )
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument(
        '--img-size', type=int, nargs=2, default=(384, 128), metavar=('H', 'W')
    )
    parser.add_argument('--steps', type=int, default=20, help='timed steps (max)')
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument(
        '--variants',
        nargs='+',
        default=['full', 'global-only'],
        choices=['full', 'parts', 'global-only'],
    )
    parser.add_argument('--gallery', type=int, default=3074)
    parser.add_argument('--queries', type=int, default=6156)
    parser.add_argument('--num-ids', type=int, default=1000)
    parser.add_argument('--eval-batch', type=int, default=256)
    parser.add_argument(
        '--eval-amp',
        action='store_true',
        help='autocast during evaluation (the TestLoop does not)',
    )
    parser.add_argument(
        '--time-limit',
        type=float,
        default=240.0,
        help='seconds for the timed training steps of all variants',
    )
    parser.add_argument(
        '--tiny-model',
        action='store_true',
        help='2-layer encoders, for checking the script on a CPU',
    )
    parser.add_argument('--skip-eval', action='store_true')
    parser.add_argument('--out', default=None, help='write the results as JSON')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    quiet_mmengine()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda but CUDA is not available; use --device cpu')
    info = machine_info()
    cfg = paper_config(args)
    start = time.perf_counter()
    train = []
    for i, variant in enumerate(args.variants):
        share = args.time_limit / len(args.variants)
        deadline = start + share * (i + 1)
        train.append(measure_training(cfg, variant, args, deadline))
    evaluation = None if args.skip_eval else measure_evaluation(cfg, args)
    total_s = time.perf_counter() - start

    base = next((t for t in train if t['variant'] == 'global-only'), None)
    rows = []
    for t in train:
        overhead = (
            'baseline'
            if t is base
            else (
                f'{100 * (t["median_s"] / base["median_s"] - 1):+.1f}%' if base else ''
            )
        )
        rows.append(
            [
                t['variant'],
                t['batch'],
                f'{t["params"] / 1e6:.1f}M',
                len(t['times_s']),
                f'{t["median_s"]:.3f}',
                overhead,
                f'{t["samples_per_s"]:.0f}',
                fmt_bytes(t['peak_allocated_bytes']),
                fmt_bytes(t['peak_reserved_bytes']),
            ]
        )
    amp = train[0]['optim_wrapper'] if train else ''
    model_name = 'tiny stand-in' if args.tiny_model else 'CLIP ViT-B/16 + CLIP text'
    print(
        f'Reference CLIP recipe ({model_name}, '
        f'{args.img_size[0]}x{args.img_size[1]}, '
        f'random init) training step on {args.device}, {amp}, median after '
        f'{args.warmup} warm-up steps.\n'
    )
    print(
        markdown_table(
            [
                'variant',
                'batch',
                'params',
                'steps',
                'median step s',
                'overhead vs global-only',
                'samples/s',
                'peak allocated',
                'peak reserved',
            ],
            rows,
            align='lrrrrrrrr',
        )
    )
    if evaluation:
        e = evaluation
        print(
            f'\nEvaluation of a CUHK-PEDES-sized test set ({e["gallery"]} images, '
            f'{e["queries"]} captions, batch {e["eval_batch"]}, '
            f'{"AMP" if args.eval_amp else "fp32"}): test_step + '
            f'TBPSRetrievalMetric (fused, coarse, parts rankings).\n'
        )
        print(
            markdown_table(
                ['stage', 'seconds'],
                [
                    ['encode gallery images', f'{e["encode_images_s"]:.2f}'],
                    ['encode captions', f'{e["encode_text_s"]:.2f}'],
                    ['metric (similarities + rank_metrics x3)', f'{e["metric_s"]:.2f}'],
                    ['total', f'{e["total_s"]:.2f}'],
                ],
            )
        )
    print(f'\nScript wall time (after start-up): {total_s:.0f} s')
    print('\n' + format_machine(info))
    write_json(
        args.out,
        dict(
            benchmark='gpu_reference_model',
            machine=info,
            train=train,
            evaluation=evaluation,
            settings=vars(args),
            wall_s=total_s,
        ),
    )


if __name__ == '__main__':
    main()
