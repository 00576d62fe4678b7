"""Draw a grid of SynthPedes samples with their part masks and captions.

Usage:
    python tools/analysis_tools/draw_synthpedes_grid.py DATA_DIR \\
        --out docs/images/synthpedes_samples.png [--split test] \\
        [--num-ids 6] [--images-per-id 2] [--ids 3 17 ...]

Each row is one identity: a few of its images, each beside its part mask
(head red, upper green, lower blue, feet yellow, carried magenta), then the
captions of those images. Identities are spread evenly over the split unless
``--ids`` names them.

Example:
    python tools/analysis_tools/draw_synthpedes_grid.py data/synthpedes_small \\
        --out docs/images/synthpedes_samples.png
"""

import argparse
import json
import os
import os.path as osp
import sys
import textwrap
from typing import Dict, List, Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from tbps_mm.datasets.synthpedes import PART_NAMES, read_synthpedes_meta

#: Display colour of each mask part (background transparent).
PART_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 40, 40],
        [40, 200, 60],
        [50, 90, 230],
        [240, 210, 30],
        [220, 60, 220],
    ],
    dtype=np.float32,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='draw_synthpedes_grid.py',
        description='Draw SynthPedes samples with masks and captions.',
    )
    parser.add_argument('data_dir', help='a generated SynthPedes folder')
    parser.add_argument('--out', required=True, help='output PNG path')
    parser.add_argument('--split', default='test', choices=['train', 'val', 'test'])
    parser.add_argument('--num-ids', type=int, default=6)
    parser.add_argument('--images-per-id', type=int, default=2)
    parser.add_argument(
        '--ids',
        type=int,
        nargs='+',
        default=None,
        help='identities to show (default: evenly spaced)',
    )
    return parser.parse_args(argv)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend the part colours over a dimmed copy of the image."""
    colours = PART_COLOURS[mask]
    alpha = (mask > 0)[..., None] * 0.75
    base = image.astype(np.float32) * 0.45
    return (base * (1 - alpha) + colours * alpha).astype(np.uint8)


def select(
    entries: List[Dict], split: str, num_ids: int, ids: Optional[List[int]]
) -> Dict[int, List[Dict]]:
    """Group the split's annotations by identity and pick the ones to show."""
    by_id: Dict[int, List[Dict]] = {}
    for entry in entries:
        if entry['split'] == split:
            by_id.setdefault(entry['id'], []).append(entry)
    if not by_id:
        raise ValueError(f'no annotation has split {split!r}')
    if ids:
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f'identities {missing} are not in split {split!r}')
        return {i: by_id[i] for i in ids}
    order = sorted(by_id)
    picks = np.linspace(0, len(order) - 1, min(num_ids, len(order)))
    return {order[int(round(p))]: by_id[order[int(round(p))]] for p in picks}


def draw_grid(
    data_dir: str,
    out: str,
    split: str = 'test',
    num_ids: int = 6,
    images_per_id: int = 2,
    ids: Optional[List[int]] = None,
) -> str:
    """Draw the sample grid of a SynthPedes folder into ``out`` (PNG).

    Args:
        data_dir (str): A complete SynthPedes folder.
        out (str): Output PNG path (folders are created).
        split (str): Split to draw from.
        num_ids (int): Identities (rows) when ``ids`` is None.
        images_per_id (int): Images per identity.
        ids (list[int], optional): Identities to show.

    Returns:
        str: ``out``.
    """
    meta = read_synthpedes_meta(data_dir)
    if meta is None:
        raise ValueError(
            f'{data_dir} holds no complete SynthPedes (synthpedes_meta.json is missing)'
        )
    with open(osp.join(data_dir, meta['files']['annotations']), encoding='utf-8') as f:
        entries = json.load(f)
    with open(osp.join(data_dir, meta['files']['attributes']), encoding='utf-8') as f:
        image_info = json.load(f)['images']
    groups = select(entries, split, num_ids, ids)

    # Image columns sized to the crops' aspect so that no space is wasted.
    height, width = meta['image_size']
    row_h, head_h = 1.9, 0.5
    img_w = (row_h - 0.3) * width / height + 0.06
    text_w = 7.6
    cols = 2 * images_per_id + 1
    ratios = [img_w] * (2 * images_per_id) + [text_w]
    fig_h = row_h * len(groups) + head_h
    fig = Figure(figsize=(sum(ratios) + 0.3, fig_h))
    axes = fig.subplots(
        len(groups),
        cols,
        gridspec_kw=dict(width_ratios=ratios, wspace=0.06, hspace=0.22),
        squeeze=False,
    )
    for row, (pid, group) in enumerate(groups.items()):
        texts = []
        for j in range(images_per_id):
            ax_img, ax_mask = axes[row, 2 * j], axes[row, 2 * j + 1]
            for ax in (ax_img, ax_mask):
                ax.axis('off')
            if j >= len(group):
                continue
            entry = group[j]
            stem = osp.splitext(entry['file_path'])[0]
            image = np.asarray(
                Image.open(
                    osp.join(data_dir, meta['files']['images'], entry['file_path'])
                ).convert('RGB')
            )
            mask = np.asarray(
                Image.open(osp.join(data_dir, meta['files']['masks'], stem + '.png'))
            )
            ax_img.imshow(image, interpolation='nearest')
            ax_mask.imshow(overlay(image, mask), interpolation='nearest')
            view = image_info.get(entry['file_path'], {}).get('view', '')
            ax_img.set_title(f'id {pid} {view}', fontsize=7, loc='left')
            for c, caption in enumerate(entry['captions']):
                label = f'[{j + 1}{"ab"[c] if c < 2 else c}] '
                texts.append(
                    textwrap.fill(label + caption, width=112, subsequent_indent='     ')
                )
        ax_text = axes[row, -1]
        ax_text.axis('off')
        ax_text.text(
            0.02,
            0.95,
            '\n'.join(texts),
            fontsize=7,
            va='top',
            ha='left',
            family='DejaVu Sans',
            linespacing=1.25,
            transform=ax_text.transAxes,
        )
    handles = [
        Patch(color=PART_COLOURS[i] / 255.0, label=name)
        for i, name in enumerate(PART_NAMES)
        if i > 0
    ]
    fig.legend(
        handles=handles,
        loc='upper center',
        ncol=len(handles),
        fontsize=7,
        frameon=False,
        title_fontsize=7,
        title=f'SynthPedes {meta["size"]} (seed {meta["seed"]}), '
        f'{split} split: images, part masks and captions',
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - head_h / fig_h, bottom=0.01)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=130)  # a bare Figure: no pyplot state to close
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        out = draw_grid(
            args.data_dir,
            args.out,
            args.split,
            args.num_ids,
            args.images_per_id,
            args.ids,
        )
    except (ValueError, OSError) as e:
        print(f'draw_synthpedes_grid.py: error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
