"""Benchmark: training cost of the part decoder and L_CMR, and data loading.

Two questions, answered from the configs as users run them:

1. **What does the method add to a training step?** The model of a config is
   built (random init) in three variants at the same backbone and batch:

   - ``global-only``: no part queries (``head.num_parts=0``), no part losses,
     ``fusion_weight=0`` (what ``configs/_base_/models/global_vit-b16_clip.py``
     does to the reference CLIP model);
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
   global-only. Target (issue 7): decoder + L_CMR add at most 15 %.

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
  unless ``--variants`` says otherwise (three such models need ~8 GB).

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
from typing import Dict, List, Optional, Sequence

import torch
from _common import (
    format_machine,
    machine_info,
    markdown_table,
    median,
    quiet_mmengine,
    write_json,
)
from mmengine.config import DictAction

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: The CLIP text transformer of ViT-B/16 (transformers CLIPTextConfig kwargs).
CLIP_TEXT_B = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act='quick_gelu',
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)

#: name -> config file, default batch, default variants.
MODELS_TO_RUN = {
    'synth': dict(
        config='configs/tbps_synth.py',
        batch=64,
        variants=('global-only', 'parts', 'full'),
    ),
    'clip-b16': dict(
        config='configs/tbps_cuhk.py', batch=8, variants=('global-only', 'full')
    ),
}
VARIANTS = ('global-only', 'parts', 'full')


def load_config(name: str, cfg_options: Optional[dict] = None):
    """The config of ``name`` (see :data:`MODELS_TO_RUN`), random init.

    For ``clip-b16`` the pretrained-weight paths are dropped (random init) and
    the text encoder is built from :data:`CLIP_TEXT_B` instead of a folder.

    Args:
        name (str): A key of :data:`MODELS_TO_RUN`.
        cfg_options (dict, optional): ``--cfg-options`` overrides, merged
            before the variants are derived (e.g. ``model.head.num_layers=1``).

    Returns:
        mmengine.Config: With ``model`` and ``optim_wrapper``.
    """
    from mmengine.config import Config

    import tbps_mm  # noqa: F401  (registers the components)

    cfg = Config.fromfile(osp.join(REPO_ROOT, MODELS_TO_RUN[name]['config']))
    if name == 'clip-b16':
        cfg.model.image_encoder.init_cfg = None
        cfg.model.head.init_cfg = None
        cfg.model.text_encoder = dict(type='CLIPTextEncoder', config=CLIP_TEXT_B)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def variant_cfg(model_cfg, variant: str):
    """The model config of one variant (see module docstring).

    Args:
        model_cfg (ConfigDict): The full model's config.
        variant (str): ``'global-only'``, ``'parts'`` or ``'full'``.

    Returns:
        ConfigDict: A modified deep copy.
    """
    from tbps_mm.registry import MODELS

    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from {VARIANTS}')
    cfg = model_cfg.deepcopy()
    if variant == 'full':
        return cfg
    for name, loss in list(cfg.losses.items()):
        if loss is None:
            continue
        default = getattr(MODELS.get(loss['type']), 'input_key', 'embed')
        if loss.get('input_key', default) != 'embed':
            cfg.losses[name] = None  # a loss on part outputs
    if variant == 'global-only':
        cfg.head.num_parts = 0
        cfg.fusion_weight = 0.0
    return cfg


def build_model(model_cfg, device: str) -> torch.nn.Module:
    """Build a model from its config, initialise it and move it to ``device``."""
    from mmengine.registry import init_default_scope

    from tbps_mm.registry import MODELS

    init_default_scope('tbps_mm')
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.to(device).train()


def build_optim_wrapper(model: torch.nn.Module, optim_cfg, device: str):
    """The config's optimizer wrapper; ``AmpOptimWrapper`` becomes a plain
    ``OptimWrapper`` off the GPU (MMEngine's AMP wrapper needs CUDA).

    A variant without some modules of the config's model (global-only has no
    part decoder) drops the lr multipliers of those modules, with a note:
    the config's constructor rejects a key that matches no parameter.
    """
    from mmengine.optim import build_optim_wrapper as mm_build

    from tbps_mm.engine import parameter_names

    cfg = optim_cfg.deepcopy()
    keys = cfg.get('paramwise_cfg', {}).get('custom_keys', {})
    names = parameter_names(model)
    absent = [k for k in keys if not any(k in n for n in names)]
    for key in absent:
        keys.pop(key)
    if absent:
        print(
            f'{type(model).__name__} variant: no {", ".join(absent)}; '
            'their lr multipliers are dropped'
        )
    if cfg.get('type') == 'AmpOptimWrapper' and not device.startswith('cuda'):
        cfg.type = 'OptimWrapper'
        cfg.pop('loss_scale', None)
        cfg.pop('dtype', None)
    return mm_build(model, cfg)


def synthetic_batch(
    batch: int,
    img_hw: Sequence[int],
    text_len: int,
    vocab: int,
    num_classes: int,
    eos_token_id: Optional[int] = None,
    seed: int = 0,
) -> dict:
    """A collated training batch like the data loader's (``pseudo_collate``).

    Args:
        batch (int): Image-caption pairs.
        img_hw (Sequence[int]): (H, W).
        text_len (int): Padded caption length L.
        vocab (int): Token ids are drawn in [1, vocab).
        num_classes (int): Labels are drawn in [0, num_classes).
        eos_token_id (int, optional): Put at the end of every caption (CLIP
            pools at its end-of-text token).
        seed (int): Seed.

    Returns:
        dict: ``inputs`` (``img`` / ``text_ids`` / ``text_mask`` lists) and
        ``data_samples`` (DataSample with ``gt_label``), as in
        docs/data_flow.md section 2.

    Example:
        >>> data = synthetic_batch(2, (96, 32), 10, 50, 5)
        >>> data['inputs']['img'][0].dtype
        torch.uint8
    """
    from mmpretrain.structures import DataSample

    gen = torch.Generator().manual_seed(seed)
    h, w = img_hw
    imgs = torch.randint(0, 256, (batch, 3, h, w), generator=gen, dtype=torch.uint8)
    ids = torch.randint(1, vocab, (batch, text_len), generator=gen)
    lengths = torch.randint(text_len // 2, text_len + 1, (batch,), generator=gen)
    mask = (torch.arange(text_len)[None, :] < lengths[:, None]).long()
    if eos_token_id is not None:
        ids[torch.arange(batch), lengths - 1] = eos_token_id
    ids = ids * mask
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    samples = []
    for i in range(batch):
        sample = DataSample().set_gt_label(int(labels[i]))
        sample.set_metainfo(dict(sample_idx=i, image_id=i, modality='pair'))
        samples.append(sample)
    return dict(
        inputs=dict(img=list(imgs), text_ids=list(ids), text_mask=list(mask)),
        data_samples=samples,
    )


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
        model = build_model(variant_cfg(cfg.model, variant), args.device)
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
