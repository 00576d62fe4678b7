"""Benchmark: training cost of the part decoder and L_CMR, and data loading.

Two questions, answered from the configs as users run them:

1. **What does the method add to a training step?** The model of a config is
   built (random init) in three variants at the same backbone and batch:

   - ``global-only``: the model of the config that defines it
     (``configs/ablations/synth_global.py``,
     ``configs/_base_/models/global_vit-b16_clip.py``): no part queries, no
     part losses, the coarse score only;
   - ``parts``: the part decoder, but the losses on part outputs (L_CMR and
     any other) switched off: the decoder's own cost;
   - ``full``: the config as is (decoder + L_CMR).

   A step is MMEngine's ``model.train_step`` (data preprocessor, forward,
   losses, backward, the config's optimizer wrapper step with its gradient
   clipping) on one batch. For ``synth`` it is a real batch: the first one of
   the config's train dataloader over a generated SynthPedes, so captions
   have their real lengths (the preprocessor trims the padding every caption
   of a batch shares, and the text side's cost follows the longest caption).
   For ``clip-b16``, and for ``synth`` with ``--synthetic-batch``, it is a
   synthetic batch in the loader's collated format (uint8 images, token ids
   with caption lengths drawn between half and all of the text encoder's
   maximum, so the longest is about the maximum; random identity labels).
   The variants run in the same process, interleaved step by step
   (so that load drift on a shared machine hits them alike) after warm-up
   steps; the table gives the median step time and the overhead over
   global-only. Target: decoder + L_CMR add at most 15 %.

2. **Is data loading the bottleneck?** The same generated SynthPedes set
   (in a temporary folder) feeds the config's train dataloader (its pipeline,
   batch size and ``num_workers``) is built with MMEngine's
   ``Runner.build_dataloader`` and iterated; its samples/s are compared with
   the full model's samples/s (batch / median step time). The two are
   measured separately; during training both share the same cores, so on a
   CPU-only machine the loader's workers also slow the step down.

Models (``--models``):

- ``synth``: ``configs/tbps_synth.py`` (the quick start: a slim 3-stage
  ResNet at 128x48, 2-layer BERT, K = 4), batch 64;
- ``clip-b16``: ``configs/tbps_cuhk.py``'s reference CLIP model (CLIP ViT-B/16 at
  384x128 + the CLIP text transformer shape, K = 6), random init, on the CPU
  at a small batch (``--clip-batch``, default 8); full and global-only only,
  unless ``--variants`` says otherwise (three such models at once need
  several GB).

Usage:
    python benchmarks/train_step_cost.py [--models synth clip-b16] \\
        [--steps 10] [--warmup 2] [--loader-ids 300] [--synthetic-batch] \\
        [--out results.json]

Example output (shape only; recorded numbers live in docs/benchmarks.md)::

    | model | variant | batch | batch source | longest caption | params | ...
    |:--|:--|--:|:--|--:|--:| ...
    | synth | full | 64 | SynthPedes train loader | ... | ... | ...

    (then the median step s, the overhead vs global-only and samples/s)
"""

import argparse
import os.path as osp
import sys
import tempfile
import time
from typing import Dict, List, Optional

import torch
from _common import (
    format_machine,
    machine_info,
    markdown_table,
    median,
    quiet_mmengine,
    write_json,
)
from _step_cost import (
    MODELS_TO_RUN,
    VARIANTS,
    build_model,
    build_optim_wrapper,
    load_config,
    synthetic_batch,
    variant_cfg,
)
from mmengine.config import DictAction


def batch_for(cfg, batch: int, seed: int = 0) -> dict:
    """A synthetic batch shaped for the model of ``cfg``."""
    model = cfg.model
    # A ViT names its input size; a CNN takes the dataset config's crop size.
    img_hw = model.image_encoder.get('img_size') or cfg.img_scale
    text = model.text_encoder.get('config', {})
    text_len = text.get('max_position_embeddings', 77)
    vocab = text.get('vocab_size', 49408)
    eos = (
        text.get('eos_token_id')
        if model.text_encoder.type == 'CLIPTextEncoder'
        else None
    )
    num_classes = model.losses.id.num_classes if model.losses.get('id') else 1000
    return synthetic_batch(batch, img_hw, text_len, vocab, num_classes, eos, seed)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_train_steps(
    runners: Dict[str, tuple],
    data: dict,
    steps: int,
    warmup: int,
    device: str = 'cpu',
) -> Dict[str, List[float]]:
    """Interleaved ``train_step`` timings of several (model, optim) pairs.

    Args:
        runners (dict): name -> (model, optim_wrapper).
        data (dict): A collated batch (the same for all).
        steps (int): Timed steps per model.
        warmup (int): Untimed steps per model first.
        device (str): Synchronised around each step when CUDA.

    Returns:
        dict[str, list[float]]: name -> seconds per step.
    """
    times = {name: [] for name in runners}
    for i in range(warmup + steps):
        for name, (model, optim) in runners.items():
            _sync(device)
            start = time.perf_counter()
            log_vars = model.train_step(data, optim)
            _sync(device)
            elapsed = time.perf_counter() - start
            loss = float(log_vars['loss'].detach())
            if not torch.isfinite(torch.tensor(loss)):
                raise FloatingPointError(f'{name}: non-finite loss {loss}')
            if i >= warmup:
                times[name].append(elapsed)
        # progress on stderr: CPU steps of large models take long
        done = ', '.join(f'{n} {t[-1]:.2f}s' for n, t in times.items() if t)
        print(
            f'  step {i + 1}/{warmup + steps}'
            + (f': {done}' if done else ' (warm-up)'),
            file=sys.stderr,
            flush=True,
        )
    return times


def generate_data(cfg, num_ids: int, tmp_dir: str) -> Dict:
    """Generate the SynthPedes set of ``cfg``'s train dataset into ``tmp_dir``.

    Returns:
        dict: ``root`` (the data root), ``num_ids`` and ``generate_s``.
    """
    from tbps_mm.datasets.synthpedes import generate_synthpedes

    ds = cfg.train_dataloader.dataset
    root = osp.join(tmp_dir, 'synthpedes')
    start = time.perf_counter()
    generate_synthpedes(
        root,
        size=ds.get('size', 'small'),
        seed=ds.get('seed', 0),
        num_ids=num_ids,
        progress=False,
    )
    return dict(root=root, num_ids=num_ids, generate_s=time.perf_counter() - start)


def build_train_loader(
    cfg, data: Dict, batch: Optional[int] = None, workers: Optional[int] = None
):
    """The config's train dataloader over the generated set ``data``."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    init_default_scope('tbps_mm')
    loader_cfg = cfg.train_dataloader.deepcopy()
    ds = loader_cfg.dataset
    ds.data_root = data['root']
    ds.num_ids = data['num_ids']
    for t in ds.pipeline:
        if t.get('type') == 'TokenizeCaption':
            t.tokenizer = osp.join(data['root'], 'tokenizer')
    if batch is not None:
        loader_cfg.batch_size = batch
    if workers is not None:
        loader_cfg.num_workers = workers
        loader_cfg.persistent_workers = workers > 0
    return Runner.build_dataloader(loader_cfg, seed=0)


def real_batch(cfg, data: Dict, batch: int) -> dict:
    """The first batch of the config's train dataloader over ``data``."""
    return next(iter(build_train_loader(cfg, data, batch=batch, workers=0)))


def measure_loader(cfg, data: Dict, epochs: int, workers: Optional[int]) -> Dict:
    """Samples/s of the config's train dataloader over the generated set.

    The first batch (worker start-up, tokenizer loading) is not timed; then
    ``epochs`` epochs are (persistent workers, as the config has them).

    Returns:
        dict: ``samples``, ``seconds``, ``samples_per_s``, ``num_workers``,
        ``batch_size``, ``dataset_size`` and ``generate_s``.
    """
    loader = build_train_loader(cfg, data, workers=workers)
    it = iter(loader)
    next(it)  # start-up: workers, tokenizer
    samples, start = 0, time.perf_counter()
    for epoch in range(epochs):
        for batch in it:
            samples += len(batch['data_samples'])
        if epoch + 1 < epochs:
            it = iter(loader)
    seconds = time.perf_counter() - start
    return dict(
        samples=samples,
        seconds=seconds,
        samples_per_s=samples / seconds,
        num_workers=loader.num_workers,
        batch_size=loader.batch_size,
        dataset_size=len(loader.dataset),
        generate_s=data['generate_s'],
    )


def run_model(name: str, args: argparse.Namespace, data: Optional[Dict] = None) -> Dict:
    """All variants of one model, interleaved; returns per-variant stats.

    ``data`` (a :func:`generate_data` set) gives ``synth`` a real batch.
    """
    cfg = load_config(name, args.cfg_options)
    batch = args.clip_batch if name == 'clip-b16' else args.batch
    batch = batch or MODELS_TO_RUN[name]['batch']
    variants = args.variants or MODELS_TO_RUN[name]['variants']
    torch.manual_seed(0)
    runners = {}
    for variant in variants:
        model = build_model(variant_cfg(cfg, variant), args.device)
        runners[variant] = (
            model,
            build_optim_wrapper(model, cfg.optim_wrapper, args.device),
        )
    real = name == 'synth' and data is not None
    inputs = real_batch(cfg, data, batch) if real else batch_for(cfg, batch)
    text_len = int(max(int(m.sum()) for m in inputs['inputs']['text_mask']))
    times = time_train_steps(runners, inputs, args.steps, args.warmup, args.device)
    base = median(times['global-only']) if 'global-only' in times else None
    out = dict(
        model=name,
        config=MODELS_TO_RUN[name]['config'],
        batch=batch,
        batch_source='SynthPedes train loader' if real else 'synthetic',
        longest_caption_tokens=text_len,
        variants={},
    )
    for variant, t in times.items():
        med = median(t)
        params = sum(p.numel() for p in runners[variant][0].parameters())
        out['variants'][variant] = dict(
            median_s=med,
            times_s=t,
            samples_per_s=batch / med,
            overhead=(med / base - 1) if base else None,
            params=params,
        )
    return out


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--models', nargs='+', default=['synth'], choices=list(MODELS_TO_RUN)
    )
    parser.add_argument('--variants', nargs='+', choices=VARIANTS, default=None)
    parser.add_argument('--batch', type=int, default=None, help='synth batch (64)')
    parser.add_argument(
        '--clip-batch', type=int, default=None, help='clip-b16 batch (8)'
    )
    parser.add_argument('--steps', type=int, default=10, help='timed steps per variant')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument(
        '--loader-ids',
        type=int,
        default=300,
        help='identities of the generated SynthPedes (0: skip the loader and '
        'time synth on a synthetic batch)',
    )
    parser.add_argument(
        '--synthetic-batch',
        action='store_true',
        help='time synth on a synthetic batch (captions up to the maximum '
        'length) instead of a real one',
    )
    parser.add_argument(
        '--loader-epochs', type=int, default=2, help='0: skip the loader timing'
    )
    parser.add_argument(
        '--loader-workers', type=int, default=None, help="default: the config's"
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help="overrides of the timed models' configs, e.g. model.head.num_layers=1",
    )
    parser.add_argument('--out', default=None, help='write the results as JSON')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    quiet_mmengine()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    synth_cfg = load_config('synth')
    with tempfile.TemporaryDirectory() as tmp:
        data = (
            generate_data(synth_cfg, args.loader_ids, tmp)
            if args.loader_ids > 0
            else None
        )
        real = None if args.synthetic_batch else data
        results = [run_model(name, args, real) for name in args.models]
        loader = (
            measure_loader(synth_cfg, data, args.loader_epochs, args.loader_workers)
            if data is not None and args.loader_epochs > 0
            else None
        )

    rows = []
    for res in results:
        for variant, v in res['variants'].items():
            overhead = '' if v['overhead'] is None else f'{100 * v["overhead"]:+.1f}%'
            if variant == 'global-only':
                overhead = 'baseline'
            rows.append(
                [
                    res['model'],
                    variant,
                    res['batch'],
                    res['batch_source'],
                    res['longest_caption_tokens'],
                    f'{v["params"] / 1e6:.1f}M',
                    f'{v["median_s"]:.3f}',
                    overhead,
                    f'{v["samples_per_s"]:.0f}',
                ]
            )
    print(
        f'Training step (train_step: preprocess + forward + backward + optimizer), '
        f'{args.device}, median of {args.steps} steps after {args.warmup} warm-up, '
        f'variants interleaved step by step.\n'
    )
    print(
        markdown_table(
            [
                'model',
                'variant',
                'batch',
                'batch source',
                'longest caption',
                'params',
                'median step s',
                'overhead vs global-only',
                'samples/s',
            ],
            rows,
            align='llrlrrrrr',
        )
    )
    if loader is not None:
        synth = next((r for r in results if r['model'] == 'synth'), None)
        model_rate = (
            synth['variants'].get('full', {}).get('samples_per_s') if synth else None
        )
        print(
            f'\nData loading: configs/tbps_synth.py train dataloader on a generated '
            f'SynthPedes ({args.loader_ids} ids, {loader["dataset_size"]} pairs), '
            f'{loader["num_workers"]} workers, batch {loader["batch_size"]}, '
            f'{args.loader_epochs} epochs after the first batch.\n'
        )
        loader_rows = [['data loader', f'{loader["samples_per_s"]:.0f}', '']]
        if model_rate:
            ratio = loader['samples_per_s'] / model_rate
            loader_rows.append(
                ['full model train step (synth)', f'{model_rate:.0f}', '']
            )
            loader_rows[0][2] = f'{ratio:.1f}x the model' + (
                ' (bottleneck)' if ratio < 1 else ''
            )
        print(
            markdown_table(
                ['stage', 'samples/s', 'loader vs model'], loader_rows, align='lrr'
            )
        )
    print('\n' + format_machine(info))
    write_json(
        args.out,
        dict(
            benchmark='train_step_cost',
            machine=info,
            models=results,
            loader=loader,
            settings=dict(
                steps=args.steps,
                warmup=args.warmup,
                device=args.device,
                cfg_options=args.cfg_options,
            ),
        ),
    )


if __name__ == '__main__':
    main()
