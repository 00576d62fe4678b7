"""Part localisation on SynthPedes: do the part queries attend to body parts?

SynthPedes saves a ground-truth part mask per image (background, head,
upper, lower, feet, carried item; docs/synthpedes.md). This benchmark encodes
the test gallery with a trained model, takes each part query's image
attention (``encode_image``'s ``attn`` (B, K, N) over the patch grid
``attn_hw``), downsamples the masks to that grid by area (the share of each
patch's pixels that belong to each part) and reports, per query:

- the share of its attention mass that falls on each body part, averaged over
  the test images;
- its **best-matching body part**: the one with the largest lift, i.e. mass
  share over area share (where the attention is densest relative to the
  part's size; background excluded);
- the mass share inside that part against the **uniform-attention
  baseline**, the part's area share of the image (what a query that attends
  everywhere equally would put there), and the lift.

The module also owns what the commonality benchmark reuses: loading a
trained model from a config and an MMEngine checkpoint, encoding the
SynthPedes test split and the patch-level mask shares.

Written by hand: MMPretrain / MMEngine have no attention-vs-mask analysis.

Example:
    python benchmarks/part_localisation.py configs/tbps_synth.py \\
        work_dirs/tbps_synth/epoch_9.pth
"""

import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from _common import markdown_table, write_json
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from PIL import Image

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import load_config
from tbps_mm.models.checkpoint import load_training_checkpoint
from tbps_mm.registry import MODELS

BODY_PARTS = ('head', 'upper', 'lower', 'feet', 'carried')
MASK_PARTS = ('background',) + BODY_PARTS


def load_model(config: str, checkpoint: str, cfg_options: Optional[dict] = None):
    """Build the config's model and load a checkpoint into it.

    Args:
        config (str): The training config.
        checkpoint (str): An MMEngine training checkpoint (``epoch_N.pth``)
            or a weights-only file.
        cfg_options (dict, optional): ``--cfg-options`` overrides.

    Returns:
        tuple: ``(cfg, model)`` with the model in eval mode on the CPU.
    """
    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'tbps_mm'))
    model = MODELS.build(cfg.model)
    state = load_training_checkpoint(checkpoint, map_location='cpu')
    state = state.get('state_dict', state)
    model.load_state_dict(state, strict=True)
    model.eval()
    return cfg, model


@torch.no_grad()
def encode_split(cfg, model, split: str = 'test') -> Dict:
    """Encode a SynthPedes evaluation split (gallery images and captions).

    Args:
        cfg (Config): The config whose ``test_dataloader`` builds the data.
        model (TBPSRetriever): The trained model.
        split (str): The split to load. Defaults to ``'test'``.

    Returns:
        dict: ``data_root``; ``images``: ``part_embeds`` (G, K, D),
        ``attn`` (G, K, N), ``attn_hw``, ``img_path``, ``person_id``,
        ``image_id`` (G,); ``texts``: ``part_embeds`` (Q, K, D),
        ``person_id``, ``image_id`` (Q,).
    """
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg['dataset'] = dict(loader_cfg['dataset'], split=split)
    loader_cfg['persistent_workers'] = False
    loader = Runner.build_dataloader(loader_cfg)
    images: Dict[str, List] = dict(
        part_embeds=[], attn=[], img_path=[], person_id=[], image_id=[]
    )
    texts: Dict[str, List] = dict(part_embeds=[], person_id=[], image_id=[])
    attn_hw = None
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        inputs, samples = data['inputs'], data['data_samples']
        if inputs.get('images') is not None:
            enc = model.encode_image(inputs['images'])
            attn_hw = enc['attn_hw']
            images['part_embeds'].append(enc['part_embeds'])
            images['attn'].append(enc['attn'])
            for i in inputs['image_index'].tolist():
                images['img_path'].append(samples[i].img_path)
                images['person_id'].append(int(samples[i].person_id))
                images['image_id'].append(int(samples[i].image_id))
        if inputs.get('text_ids') is not None:
            enc = model.encode_text(inputs['text_ids'], inputs['text_mask'])
            texts['part_embeds'].append(enc['part_embeds'])
            for i in inputs['text_index'].tolist():
                texts['person_id'].append(int(samples[i].person_id))
                texts['image_id'].append(int(samples[i].image_id))
    for side in (images, texts):
        for key, value in side.items():
            if value and isinstance(value[0], torch.Tensor):
                side[key] = torch.cat(value)
            elif key in ('person_id', 'image_id'):
                side[key] = np.asarray(value)
    images['attn_hw'] = attn_hw
    return dict(data_root=loader.dataset.data_root, images=images, texts=texts)


def mask_path(data_root: str, img_path: str) -> str:
    """The part mask of a SynthPedes image (``imgs/...jpg`` -> ``masks/...png``)."""
    rel = osp.relpath(img_path, osp.join(data_root, 'imgs'))
    if rel.startswith('..'):
        raise ValueError(f'{img_path} is not under {data_root}/imgs')
    return osp.join(data_root, 'masks', osp.splitext(rel)[0] + '.png')


def patch_part_shares(
    data_root: str, img_paths: Sequence[str], grid: Sequence[int]
) -> np.ndarray:
    """Area share of every mask part in every patch of every image.

    Args:
        data_root (str): The SynthPedes folder.
        img_paths (Sequence[str]): Image paths (as the dataset gives them).
        grid (Sequence[int]): The (h, w) patch grid of the attention maps.

    Returns:
        np.ndarray: (G, P, h * w) with P = 6 mask values (background first);
        it sums to 1 over P for every patch.
    """
    h, w = grid
    shares = []
    for path in img_paths:
        mpath = mask_path(data_root, path)
        if not osp.isfile(mpath):
            raise FileNotFoundError(
                f'part mask {mpath} (for image {path}) does not exist: '
                'is the data root a SynthPedes folder?'
            )
        mask = np.asarray(Image.open(mpath))
        H, W = mask.shape
        if H % h or W % w:
            raise ValueError(
                f'{mpath}: mask of {H}x{W} does not tile into the {h}x{w} patch grid'
            )
        if mask.max() >= len(MASK_PARTS):
            raise ValueError(f'{mpath}: mask value {mask.max()} is not a part index')
        one_hot = np.eye(len(MASK_PARTS), dtype=np.float32)[mask]  # (H, W, P)
        patches = one_hot.reshape(h, H // h, w, W // w, -1).mean(axis=(1, 3))
        shares.append(patches.reshape(h * w, -1).T)
    return np.stack(shares)


def attention_mass(attn: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Each query's attention mass on each mask part, per image.

    Args:
        attn (np.ndarray): (G, K, N) attention over the N patches (rows sum
            to 1).
        shares (np.ndarray): (G, P, N) part area share of every patch.

    Returns:
        np.ndarray: (G, K, P).
    """
    return np.einsum('gkn,gpn->gkp', attn, shares)


def localisation_table(attn: np.ndarray, shares: np.ndarray) -> Dict:
    """Per query: mass per body part, best-matching part, baseline and lift.

    Args:
        attn (np.ndarray): (G, K, N) image attention maps.
        shares (np.ndarray): (G, P, N) patch part shares.

    Returns:
        dict: ``mass`` (K, P) mean mass share per part, ``area`` (P,) mean
        area share per part (the uniform-attention baseline), ``best``
        (K,) index into ``BODY_PARTS`` of the best-matching part, ``lift``
        (K, P) mass / area.
    """
    mass = attention_mass(attn, shares).mean(axis=0)  # (K, P)
    area = shares.mean(axis=(0, 2))  # (P,): uniform attention's mass
    lift = mass / np.maximum(area, 1e-12)
    best = lift[:, 1:].argmax(axis=1)  # body parts only
    return dict(mass=mass, area=area, best=best, lift=lift)


def format_localisation(result: Dict) -> str:
    """Markdown table of :func:`localisation_table`'s result."""
    rows = []
    for k, b in enumerate(result['best']):
        p = b + 1
        rows.append(
            [f'q{k}', BODY_PARTS[b]]
            + [f'{100 * m:.1f}' for m in result['mass'][k]]
            + [
                f'{100 * result["mass"][k, p]:.1f}',
                f'{100 * result["area"][p]:.1f}',
                f'{result["lift"][k, p]:.2f}',
            ]
        )
    rows.append(
        ['uniform', '-']
        + [f'{100 * a:.1f}' for a in result['area']]
        + ['-', '-', '1.00']
    )
    headers = (
        ['query', 'best part']
        + [f'% on {p}' for p in MASK_PARTS]
        + ['% in best part', 'uniform baseline %', 'lift']
    )
    return markdown_table(headers, rows)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='training checkpoint (epoch_N.pth)')
    parser.add_argument('--split', default='test', choices=['val', 'test'])
    parser.add_argument('--out', help='write the table and numbers as JSON here')
    parser.add_argument(
        '--cfg-options', nargs='+', default=[], help='key=value config overrides'
    )
    return parser.parse_args(argv)


def parse_cfg_options(items: Sequence[str]) -> Optional[dict]:
    """``key=value`` strings -> dict, values parsed like MMEngine's DictAction."""
    from mmengine.config import DictAction

    if not items:
        return None
    options = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep:
            raise ValueError(f'--cfg-options entry {item!r} is not key=value')
        options[key] = DictAction._parse_iterable(value)
    return options


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg, model = load_model(
        args.config, args.checkpoint, parse_cfg_options(args.cfg_options)
    )
    if model.num_parts == 0:
        print('the model has no part queries (K = 0): nothing to localise')
        return 1
    encoded = encode_split(cfg, model, args.split)
    images = encoded['images']
    if images['attn_hw'] is None:
        print('the image encoder gives no patch grid: attention cannot be mapped')
        return 1
    shares = patch_part_shares(
        encoded['data_root'], images['img_path'], images['attn_hw']
    )
    result = localisation_table(images['attn'].numpy(), shares)
    table = format_localisation(result)
    print(
        f'\nPart localisation, SynthPedes {args.split} split '
        f'({len(images["img_path"])} images, patch grid '
        f'{images["attn_hw"][0]}x{images["attn_hw"][1]}); checkpoint '
        f'{args.checkpoint}\n'
    )
    print(table)
    write_json(
        args.out,
        dict(
            config=args.config,
            checkpoint=args.checkpoint,
            split=args.split,
            parts=list(MASK_PARTS),
            mass=result['mass'].tolist(),
            area=result['area'].tolist(),
            best=[BODY_PARTS[b] for b in result['best']],
            lift=result['lift'].tolist(),
            table=table,
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
