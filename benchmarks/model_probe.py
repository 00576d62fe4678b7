"""A fast, fixed-step probe of a SynthPedes model config: how quickly it learns.

Choosing the quick-start model means comparing many candidates at a budget
far below a full run. The Runner pays for data loading and augmentation on
every step; this probe decodes the SynthPedes train and test splits once
(with the config's *test* pipeline, so no augmentation), then trains the
config's model for ``--steps`` steps of ``--batch-size`` random image-caption
pairs in a plain loop and reports text-to-image R@1 / R@5 / mAP on the test
split (fused, coarse-only and parts-only scores, ``TBPSRetriever.similarity``
and ``rank_metrics``), plus the mean losses of the last 50 steps.

The loop: AdamW (``--lr``, weight decay 0.05), a linear warm-up over
``min(100, steps / 5)`` steps, then cosine decay to 0, gradient clipping at
norm 5; batches drawn without replacement within a step from a fixed seed.
It is the same recipe as ``configs/_base_/schedules/synth_cpu.py`` apart from
the augmentation and the epoch structure, so a probe ranks candidates the way
full runs do; it is not a substitute for the full run
(``tools/train.py configs/tbps_synth.py --test``), whose numbers are the ones
reported.

Written by hand: MMEngine's Runner has no "N steps on cached tensors" mode,
and the data-loading cost it adds is what this probe avoids.

Example:
    python benchmarks/model_probe.py configs/tbps_synth.py --steps 300
    python benchmarks/model_probe.py configs/ablations/synth_vit.py \\
        --steps 300 --lr 2e-3 --threads 1
"""

import argparse
import math
import sys
import time
from typing import Dict, List

import numpy as np
import torch
from _common import machine_info, markdown_table, write_json
from mmengine.config import DictAction
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import load_config
from tbps_mm.evaluation.functional import rank_metrics
from tbps_mm.registry import DATASETS, MODELS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a SynthPedes model config')
    parser.add_argument('--steps', type=int, default=300, help='training steps')
    parser.add_argument('--lr', type=float, default=2e-3, help='AdamW learning rate')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0, help='init and batch seed')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--log-every', type=int, default=50)
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='config overrides'
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 2:
        parser.error('--steps must be >= 1 and --batch-size >= 2')
    return args


def load_split(cfg, split: str) -> List[dict]:
    """Every packed item of a split, through the config's test pipeline."""
    dataset = DATASETS.build(
        dict(cfg.train_dataloader.dataset, split=split, pipeline=cfg.test_pipeline)
    )
    return [dataset[i] for i in range(len(dataset))]


def lr_factor(step: int, steps: int) -> float:
    warm = max(1, min(100, steps // 5))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train(model, items: List[dict], args) -> List[Dict[str, float]]:
    """The probe's training loop; returns per-step losses."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, args.steps)
    )
    rng = np.random.default_rng(args.seed)
    history, start = [], time.perf_counter()
    for step in range(args.steps):
        index = rng.choice(len(items), args.batch_size, replace=False)
        data = model.data_preprocessor(pseudo_collate([items[i] for i in index]), True)
        losses = model.loss(**data)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        history.append({k: v.item() for k, v in losses.items()})
        if (step + 1) % args.log_every == 0:
            recent = history[-args.log_every :]
            means = ' '.join(
                f'{k}={np.mean([h[k] for h in recent]):.3f}' for k in history[-1]
            )
            elapsed = time.perf_counter() - start
            print(f'step {step + 1}/{args.steps} {elapsed:.0f}s {means}', flush=True)
    return history


@torch.no_grad()
def evaluate(model, items: List[dict], chunk: int = 128) -> Dict[str, Dict]:
    """t2i metrics of the test split: fused, coarse-only and parts-only."""
    model.eval()
    images = [x for x in items if x['inputs']['img'] is not None]
    captions = [x for x in items if x['inputs']['text_ids'] is not None]

    def encode(samples, image: bool) -> Dict[str, torch.Tensor]:
        outs = []
        for i in range(0, len(samples), chunk):
            batch = model.data_preprocessor(pseudo_collate(samples[i : i + chunk]))
            inp = batch['inputs']
            outs.append(
                model.encode_image(inp['images'])
                if image
                else model.encode_text(inp['text_ids'], inp['text_mask'])
            )
        return {k: torch.cat([o[k] for o in outs]) for k in ('embed', 'part_embeds')}

    gallery, query = encode(images, True), encode(captions, False)
    g_labels = [x['data_samples'].person_id for x in images]
    q_labels = [x['data_samples'].person_id for x in captions]
    rows = {'t2i': model.similarity(query, gallery)}
    rows['t2i-coarse'] = model.similarity(query, gallery, fusion_weight=0.0)
    if query['part_embeds'].shape[1]:
        parts = model.similarity(query, gallery, 1.0) - rows['t2i-coarse']
        rows['t2i-parts'] = parts
    return {k: rank_metrics(v, q_labels, g_labels) for k, v in rows.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'tbps_mm'))
    start = time.perf_counter()
    train_items, test_items = load_split(cfg, 'train'), load_split(cfg, 'test')
    load_s = time.perf_counter() - start
    model = MODELS.build(cfg.model)
    # As MMEngine's Runner does: backbones apply their init_cfg here (until
    # this call the probe trained MMPretrain ResNets from PyTorch's default
    # initialisation, unlike every full run).
    model.init_weights()
    start = time.perf_counter()
    history = train(model, train_items, args)
    train_s = time.perf_counter() - start
    metrics = evaluate(model, test_items)
    final = {k: float(np.mean([h[k] for h in history[-50:]])) for k in history[-1]}
    table = [
        [task, *(f'{m[k]:.2f}' for k in ('R1', 'R5', 'R10', 'mAP'))]
        for task, m in metrics.items()
    ]
    print(
        f'\n{args.config}: {args.steps} steps x batch {args.batch_size}, '
        f'lr {args.lr:g}, seed {args.seed}; data {load_s:.0f} s, '
        f'training {train_s:.0f} s ({train_s / args.steps:.2f} s/step)\n'
    )
    print(markdown_table(['task', 'R@1', 'R@5', 'R@10', 'mAP'], table))
    print(
        '\nmean losses, last 50 steps: '
        + ', '.join(f'{k} {v:.3f}' for k, v in final.items())
    )
    if args.out:
        write_json(
            args.out,
            dict(
                machine=machine_info(),
                config=args.config,
                steps=args.steps,
                lr=args.lr,
                batch_size=args.batch_size,
                seed=args.seed,
                train_seconds=train_s,
                metrics=metrics,
                final_losses=final,
            ),
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
