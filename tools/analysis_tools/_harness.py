"""What the analysis tools share: a trained model, its encoded split, masks.

The analyses in this folder look inside a trained model or a dataset rather
than measure speed. They share:

- :func:`load_model`: the config's model with its checkpoint (a training
  checkpoint or a published one, read without running code from it unless
  ``--trust-checkpoint``), from ``tbps_mm.apis.init_model``;
- :func:`checkpoint_parser` / :func:`encode_checkpoint`: the command line of
  the analyses of a trained part model, and its split encoded;
- :func:`build_split_loader` / :func:`encode_split`: an evaluation split,
  built from the config's ``test_dataloader`` by MMEngine's
  ``Runner.build_dataloader``, encoded once by ``tbps_mm.apis.FusedEncoder``
  (whose results keep the part attention that ``predict`` leaves out);
- :func:`patch_part_shares` / :func:`localisation_table`: SynthPedes' part
  masks on the attention grid, and which body part each query attends to;
- :func:`load_attributes`: SynthPedes' ground-truth attribute table;
- :func:`iteration_schedule`: the quick-start schedule (linear warm-up, then
  cosine) over a number of iterations, for the probes that train for a fixed
  number of steps;
- :func:`write_result`: a result as JSON, with the arguments and the
  environment it ran with.

Example:
    >>> cfg, model = load_model('configs/tbps_synth.py',
    ...                         'work_dirs/tbps_synth/epoch_9.pth')
    >>> encoded = encode_split(model, build_split_loader(cfg, 'test'))
"""

import argparse
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import mmengine
import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from PIL import Image

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import FusedEncoder, init_model
from tbps_mm.datasets.synthpedes.attributes import PART_NAMES
from tbps_mm.engine import add_checkpoint_args, load_config

#: Mask values of SynthPedes part masks (0 is background) and the body parts.
MASK_PARTS: Tuple[str, ...] = tuple(PART_NAMES)
BODY_PARTS: Tuple[str, ...] = MASK_PARTS[1:]


def load_model(
    config: str,
    checkpoint: str,
    cfg_options: Optional[dict] = None,
    trust_checkpoint: bool = False,
) -> Tuple[Config, torch.nn.Module]:
    """Build the config's model and load a checkpoint into it (strictly,
    the training-only ``losses.`` keys aside).

    Args:
        config (str): The config the checkpoint was trained with.
        checkpoint (str): A training checkpoint (``epoch_N.pth``) or a
            published file (``.safetensors`` / state dict).
        cfg_options (dict, optional): ``--cfg-options`` overrides.
        trust_checkpoint (bool): Unpickle the checkpoint in full
            (``--trust-checkpoint``), for a file the user trusts.

    Returns:
        tuple: ``(cfg, model)``, the model in eval mode on the CPU.

    Raises:
        CheckpointMismatchError: The checkpoint does not fit the config (every
            misfit key named).
        UnsafeCheckpointError: Reading the checkpoint could run code and
            ``trust_checkpoint`` is False.
    """
    cfg = load_config(config, cfg_options)
    return cfg, init_model(cfg, checkpoint, trust_checkpoint=trust_checkpoint)


def checkpoint_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every analysis of a trained checkpoint takes.

    Args:
        description (str): The script's one-line description.

    Returns:
        argparse.ArgumentParser: ``config``, ``checkpoint``, ``--split``,
        ``--out``, ``--trust-checkpoint`` and ``--cfg-options``; scripts add
        their own.
    """
    parser = argparse.ArgumentParser(description=description)
    add_checkpoint_args(parser, 'the config the checkpoint was trained with')
    parser.add_argument('--split', default='test', choices=['val', 'test'])
    parser.add_argument('--out', help='write the table and numbers as JSON here')
    return parser


def encode_checkpoint(
    args: argparse.Namespace,
) -> Tuple[Config, torch.nn.Module, Dict]:
    """Load the checkpoint :func:`checkpoint_parser` names; encode its split.

    Args:
        args (argparse.Namespace): ``config``, ``checkpoint``, ``split``,
            ``cfg_options``, ``trust_checkpoint``.

    Returns:
        tuple: ``(cfg, model, encoded)``, ``encoded`` as :func:`encode_split`
        returns it.

    Raises:
        ValueError: The model has no part queries (K = 0), or its image
            encoder gives no token grid: there is no part attention to map.
    """
    cfg, model = load_model(
        args.config,
        args.checkpoint,
        args.cfg_options,
        trust_checkpoint=getattr(args, 'trust_checkpoint', False),
    )
    if model.num_parts == 0:
        raise ValueError(
            f'{args.config}: the model has no part queries (K = 0); this '
            'analysis needs a part model'
        )
    encoded = encode_split(model, build_split_loader(cfg, args.split))
    if encoded['images']['attn_hw'] is None:
        raise ValueError(
            f'{args.config}: the image encoder gives no token grid, so the '
            'part attention cannot be mapped onto the image'
        )
    return cfg, model, encoded


def build_split_loader(cfg: Config, split: str = 'test'):
    """The config's ``test_dataloader`` on ``split``, built by MMEngine.

    Args:
        cfg (Config): A config with a ``test_dataloader``.
        split (str): The split to load. Defaults to ``'test'``.

    Returns:
        DataLoader: Gallery images first, then caption queries.
    """
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg['dataset'] = dict(loader_cfg['dataset'], split=split)
    loader_cfg['persistent_workers'] = False
    return Runner.build_dataloader(loader_cfg)


def encode_split(model, loader) -> Dict:
    """Encode every gallery image and caption of an evaluation loader.

    Args:
        model (TBPSRetriever): The model (eval mode).
        loader (DataLoader): From :func:`build_split_loader`.

    Returns:
        dict: ``data_root``; ``images``: ``part_embeds`` (G, K, D), ``attn``
        (G, K, N), ``attn_hw`` (the token grid or None), ``img_path``,
        ``person_id``, ``image_id`` (G,); ``texts``: ``part_embeds``
        (Q, K, D), ``person_id``, ``image_id`` (Q,).
    """
    # The loader pre-processes: the encoder needs no pipeline of its own.
    encoded = FusedEncoder(model, pipeline=[]).encode_loader(loader)

    def side(out: Dict, keys: Sequence[str]) -> Tuple[Dict, List]:
        samples = out['data_samples']
        result = {key: out[key] for key in keys}
        for name in ('person_id', 'image_id'):
            result[name] = np.asarray(
                [int(getattr(s, name)) for s in samples], dtype=np.int64
            )
        return result, samples

    images, samples = side(encoded['images'], ('part_embeds', 'attn', 'attn_hw'))
    images['img_path'] = [s.img_path for s in samples]
    texts, _ = side(encoded['texts'], ('part_embeds',))
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
    """Area share of every mask part in every cell of the token grid.

    Args:
        data_root (str): The SynthPedes folder.
        img_paths (Sequence[str]): Image paths (as the dataset gives them).
        grid (Sequence[int]): The (h, w) token grid of the attention maps.

    Returns:
        np.ndarray: (G, P, h * w) with P = 6 mask values (background first);
        it sums to 1 over P for every cell.

    Raises:
        FileNotFoundError: An image has no mask (not a SynthPedes folder).
        ValueError: A mask does not tile into the grid or holds a value that
            is no part.
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
                f'{mpath}: mask of {H}x{W} does not tile into the {h}x{w} grid'
            )
        if mask.max() >= len(MASK_PARTS):
            raise ValueError(f'{mpath}: mask value {mask.max()} is not a part index')
        one_hot = np.eye(len(MASK_PARTS), dtype=np.float32)[mask]  # (H, W, P)
        cells = one_hot.reshape(h, H // h, w, W // w, -1).mean(axis=(1, 3))
        shares.append(cells.reshape(h * w, -1).T)
    return np.stack(shares)


def localisation_table(attn: np.ndarray, shares: np.ndarray) -> Dict:
    """Per query: mass per mask part, best-matching body part, lift.

    The best-matching part is the body part with the largest lift, mass share
    over area share: where the query's attention is densest relative to the
    part's size (background excluded). A query attending everywhere equally
    puts each part's area share on it (the uniform baseline, lift 1).

    Args:
        attn (np.ndarray): (G, K, N) attention over the N grid cells (rows
            sum to 1).
        shares (np.ndarray): (G, P, N) from :func:`patch_part_shares`.

    Returns:
        dict: ``mass`` (K, P) mean mass share per part, ``area`` (P,) mean
        area share per part, ``best`` (K,) index into :data:`BODY_PARTS`,
        ``lift`` (K, P) mass / area.
    """
    mass = np.einsum('gkn,gpn->gkp', attn, shares).mean(axis=0)  # (K, P)
    area = shares.mean(axis=(0, 2))
    lift = mass / np.maximum(area, 1e-12)
    best = lift[:, 1:].argmax(axis=1)
    return dict(mass=mass, area=area, best=best, lift=lift)


def load_attributes(data_root: str) -> Dict:
    """``attributes.json`` of a SynthPedes folder (the generator's truth).

    Args:
        data_root (str): The SynthPedes folder.

    Returns:
        dict: With ``identities``, ``attribute_parts``, ``values`` and
        ``images``.

    Raises:
        FileNotFoundError: The folder has no attribute table.
        KeyError: The table lacks one of those entries.
    """
    path = osp.join(data_root, 'attributes.json')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} does not exist: this analysis needs a SynthPedes folder '
            '(its attribute table is the ground truth)'
        )
    with open(path) as f:
        table = json.load(f)
    for key in ('identities', 'attribute_parts', 'values', 'images'):
        if key not in table:
            raise KeyError(f'{path} has no "{key}" entry')
    return table


def iteration_schedule(steps: int) -> List[dict]:
    """The quick-start schedule's shape over ``steps`` iterations.

    ``configs/_base_/schedules/synth_cpu.py`` warms up linearly for one
    epoch, then decays by cosine; a fixed-step probe has no epochs, so the
    warm-up spans ``min(100, steps // 5)`` iterations (at least one).

    Args:
        steps (int): Training iterations (>= 2).

    Returns:
        list[dict]: ``param_scheduler`` configs with ``by_epoch=False``.

    Example:
        >>> [s['end'] for s in iteration_schedule(1000)]
        [100, 1000]
    """
    if steps < 2:
        raise ValueError(f'a schedule needs at least 2 iterations, got {steps}')
    warm = max(1, min(100, steps // 5))
    return [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warm),
        dict(
            type='CosineAnnealingLR',
            T_max=steps - warm,
            eta_min=1e-6,
            by_epoch=False,
            begin=warm,
            end=steps,
        ),
    ]


def write_result(args: argparse.Namespace, payload: Dict) -> None:
    """Write a result as JSON to ``args.out`` (nothing when it is None).

    The file holds the script's arguments (``arguments``), the result and
    the environment it ran in (MMEngine's ``collect_env``), so that every
    recorded number says how it was made.

    Args:
        args (argparse.Namespace): The parsed command line, with ``out``.
        payload (dict): Plain numbers, strings, lists and dicts.
    """
    if not args.out:
        return
    from mmengine.utils.dl_utils import collect_env

    # Torch's build flags and OpenCV's build report are pages of compiler
    # settings that say nothing about the run.
    skipped = ('PyTorch compiling details', 'OpenCV')
    environment = {k: str(v) for k, v in collect_env().items() if k not in skipped}
    result = dict(arguments=vars(args), **payload, environment=environment)
    mmengine.mkdir_or_exist(osp.dirname(osp.abspath(args.out)))
    mmengine.dump(result, args.out, indent=2)
    print(f'\nwrote {args.out}')
