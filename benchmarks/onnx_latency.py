"""Benchmark: onnxruntime against eager PyTorch for both encoders, on CPU.

For each model (``--models``), the model is built with random weights (the
cost does not depend on their values), exported with
``tbps_mm.deployment.export_onnx`` into a temporary folder, and both
encoders are timed on the same inputs:

- image: ``encode_image`` + ``fused_embed`` of a batch of normalised images
  at the config's size (batches ``--image-batches``);
- text: ``encode_text`` + ``fused_embed`` of captions of ``--text-length``
  real tokens (batches ``--text-batches``).

Both run through ``tbps_mm.apis.FusedEncoder`` as search does: its PyTorch
backend eagerly under ``torch.no_grad()`` in eval mode, its onnxruntime
backend the exported graphs on the CPU provider (input / output conversion
included). Both get the same number of threads (``--threads``). Calls
alternate between the two backends, ``--warmup`` untimed rounds first, then
``--runs`` timed rounds; the table gives the median milliseconds of each and
the speed-up (PyTorch median / onnxruntime median), with the largest
difference between their fused vectors.

Models: ``synth`` (``configs/tbps_synth.py``: slim ResNet at 128x48, 2-layer
BERT-style text encoder) and ``clip-b16`` (``configs/tbps_cuhk.py``: CLIP
ViT-B/16 at 384x128 and the 12-layer CLIP text transformer, built as in
``train_step_cost.py`` without weight files).

Usage:
    python benchmarks/onnx_latency.py [--models synth clip-b16] [--runs 15] \\
        [--threads 1] [--out results.json]

Example output (shape only; recorded numbers live in docs/benchmarks.md)::

    | model | encoder | batch | PyTorch ms | onnxruntime ms | speed-up | max diff |
    |:--|--:|--:|--:|--:|--:|--:|
    | synth | image | 1 | ... | ... | ... | ... |
"""

import argparse
import tempfile
import time
from typing import Dict, List

import torch
from _common import (
    format_machine,
    machine_info,
    markdown_table,
    median,
    quiet_mmengine,
    write_json,
)


def build(name: str):
    """The random-init model of ``name`` and its image size ``(H, W)``."""
    from _step_cost import load_config

    from tbps_mm.apis import init_model
    from tbps_mm.deployment import image_size_from_config

    cfg = load_config(name)
    return init_model(cfg), image_size_from_config(cfg)


def alternate(fns: Dict[str, callable], runs: int, warmup: int) -> Dict[str, List]:
    """Seconds of each function, called in turn ``warmup + runs`` times."""
    times = {key: [] for key in fns}
    for round_ in range(warmup + runs):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[key].append(time.perf_counter() - start)
    return times


def pair(torch_fn, ort_fn, inputs: tuple) -> tuple:
    """The two timed calls: fused vectors from PyTorch and from onnxruntime."""

    def run_torch():
        return torch_fn(*inputs)['fused_embed']

    def run_ort():
        return ort_fn(*inputs)['fused_embed']

    return run_torch, run_ort


def measure(name: str, args: argparse.Namespace) -> List[Dict]:
    """Time both encoders of one model on both backends."""
    from tbps_mm.apis import FusedEncoder
    from tbps_mm.deployment import export_onnx

    torch.manual_seed(0)
    model, size = build(name)
    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        meta = export_onnx(model, out_dir, size)
        torch_enc = FusedEncoder(model, pipeline=[])
        ort_enc = FusedEncoder(
            model,
            pipeline=[],
            backend='onnxruntime',
            onnx_dir=out_dir,
            num_threads=args.threads,
        )
        length = min(args.text_length, meta['text']['max_length'] or args.text_length)
        cases = [('image', b) for b in args.image_batches]
        cases += [('text', b) for b in args.text_batches]
        for side, batch in cases:
            if side == 'image':
                inputs = (torch.randn(batch, 3, *size),)
                torch_fn = torch_enc.encode_image_tensors
                ort_fn = ort_enc.encode_image_tensors
            else:
                ids = torch.randint(1, meta['text']['vocab_size'], (batch, length))
                inputs = (ids, torch.ones_like(ids))
                torch_fn = torch_enc.encode_token_ids
                ort_fn = ort_enc.encode_token_ids
            run_torch, run_ort = pair(torch_fn, ort_fn, inputs)
            diff = float((run_torch() - run_ort()).abs().max())
            times = alternate(
                dict(pytorch=run_torch, onnxruntime=run_ort), args.runs, args.warmup
            )
            torch_ms = median(times['pytorch']) * 1e3
            ort_ms = median(times['onnxruntime']) * 1e3
            rows.append(
                dict(
                    model=name,
                    encoder=side,
                    batch=batch,
                    tokens=length if side == 'text' else None,
                    pytorch_ms=torch_ms,
                    onnxruntime_ms=ort_ms,
                    speedup=torch_ms / ort_ms,
                    max_diff=diff,
                    runs=args.runs,
                )
            )
            print(
                f'{name} {side} batch {batch}: pytorch {torch_ms:.2f} ms, '
                f'onnxruntime {ort_ms:.2f} ms',
                flush=True,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--models', nargs='+', default=['synth', 'clip-b16'], help='models to run'
    )
    parser.add_argument('--runs', type=int, default=15, help='timed rounds')
    parser.add_argument('--warmup', type=int, default=3, help='untimed rounds')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (both)')
    parser.add_argument('--image-batches', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--text-batches', type=int, nargs='+', default=[1, 8])
    parser.add_argument(
        '--text-length', type=int, default=32, help='real tokens per caption'
    )
    parser.add_argument('--out', help='write the results as JSON')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_mmengine()
    rows = []
    for name in args.models:
        rows += measure(name, args)
    info = machine_info()
    print()
    print(format_machine(info))
    print(
        markdown_table(
            [
                'model',
                'encoder',
                'batch',
                'PyTorch ms',
                'onnxruntime ms',
                'speed-up',
                'max diff',
            ],
            [
                [
                    r['model'],
                    r['encoder'] + (f' ({r["tokens"]} tokens)' if r['tokens'] else ''),
                    r['batch'],
                    f'{r["pytorch_ms"]:.2f}',
                    f'{r["onnxruntime_ms"]:.2f}',
                    f'{r["speedup"]:.2f}x',
                    f'{r["max_diff"]:.1e}',
                ]
                for r in rows
            ],
            align='llrrrrr',
        )
    )
    write_json(args.out, dict(machine=info, args=vars(args), rows=rows))


if __name__ == '__main__':
    main()
