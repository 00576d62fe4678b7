"""Part localisation on SynthPedes: do the part queries attend to body parts?

SynthPedes saves a ground-truth part mask per image (background, head,
upper, lower, feet, carried item; docs/synthpedes.md). This analysis encodes
an evaluation split with a trained model, takes each part query's image
attention (``encode_image``'s ``attn`` (B, K, N) over the token grid
``attn_hw``), downsamples the masks to that grid by area (the share of each
cell's pixels that belong to each part) and reports, per query:

- the share of its attention mass that falls on each part, averaged over
  the images;
- its **best-matching body part**: the one with the largest lift, i.e. mass
  share over area share (background excluded);
- the mass share inside that part against the **uniform-attention
  baseline**, the part's area share of the image, and the lift.

Written by hand: MMPretrain / MMEngine have no attention-vs-mask analysis.
The model, the data loader and the mask arithmetic come from ``_harness``.

When the queries carry a spatial prior (``image_spatial_prior``), a second
table measures the prior alone: the attention each query would give if
every token's content were equal (``PartQueryDecoderHead.prior_attention``).
The gap between the two tables is what the decoder's content attention does
beyond where the prior already looks.

With ``--figure``, it also draws a few images of the split with their part
masks and each query's attention (MMEngine's heat-map overlay, through
``tbps_mm.visualization.attention_heatmap``).

Example:
    python tools/analysis_tools/part_localisation.py configs/tbps_synth.py \\
        work_dirs/tbps_synth/epoch_9.pth --split val \\
        --figure part_attention.png
"""

import argparse
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from _harness import (
    BODY_PARTS,
    MASK_PARTS,
    checkpoint_parser,
    encode_checkpoint,
    localisation_table,
    mask_path,
    patch_part_shares,
    write_result,
)
from PIL import Image, ImageDraw

from tbps_mm.evaluation import markdown_table
from tbps_mm.visualization import attention_heatmap, get_font, load_rgb

#: Colours of the mask parts in the figure (background black).
PART_COLOURS = np.array(
    [
        [0, 0, 0],
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [204, 121, 167],
    ],
    dtype=np.uint8,
)


def draw_localisation_figure(
    img_paths: Sequence[str],
    mask_paths: Sequence[str],
    attn: np.ndarray,
    grid: Sequence[int],
    best: Sequence[str],
    scale: int = 2,
) -> Image.Image:
    """One row per image: the image, its part mask, each query's attention.

    Args:
        img_paths (Sequence[str]): The images.
        mask_paths (Sequence[str]): Their SynthPedes part masks.
        attn (np.ndarray): (n, K, h * w) attention of the K queries.
        grid (Sequence[int]): The (h, w) token grid.
        best (Sequence[str]): Each query's best-matching part (column titles).
        scale (int): Upsampling of the images in the figure. Defaults to 2.

    Returns:
        PIL.Image.Image: The figure.
    """
    h, w = grid
    font = get_font(12)
    titles = ['image', 'part mask'] + [f'q{k}: {b}' for k, b in enumerate(best)]
    tiles = []
    for path, mpath, maps in zip(img_paths, mask_paths, attn):
        image = load_rgb(path)
        size = (image.width * scale, image.height * scale)
        image = image.resize(size, Image.BICUBIC)
        mask = Image.fromarray(PART_COLOURS[np.asarray(Image.open(mpath))])
        row = [image, mask.resize(size, Image.NEAREST)]
        row += [attention_heatmap(image, m.reshape(h, w)) for m in maps]
        tiles.append(row)
    tw, th = tiles[0][0].size
    pad, head = 4, 18
    fig = Image.new(
        'RGB',
        (len(titles) * (tw + pad) + pad, head + len(tiles) * (th + pad) + pad),
        'white',
    )
    draw = ImageDraw.Draw(fig)
    for c, title in enumerate(titles):
        draw.text((pad + c * (tw + pad), 2), title, fill='black', font=font)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            fig.paste(tile, (pad + c * (tw + pad), head + r * (th + pad)))
    return fig


def format_localisation(result: Dict) -> str:
    """Markdown table of ``localisation_table``'s result.

    Args:
        result (dict): ``mass``, ``area``, ``best`` and ``lift``.

    Returns:
        str: One row per query and a ``uniform`` baseline row.
    """
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


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = checkpoint_parser(__doc__.split('\n')[0])
    parser.add_argument(
        '--figure', help='also draw the attention maps of a few images here (PNG)'
    )
    parser.add_argument(
        '--figure-images',
        type=int,
        default=6,
        help='images in the figure, spread evenly over the split',
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    _, model, encoded = encode_checkpoint(args)
    images = encoded['images']
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
    prior = None
    if getattr(model.head, 'image_spatial_prior', None) is not None:
        with torch.no_grad():
            alone = model.head.prior_attention(images['attn_hw']).float().numpy()
        prior_result = localisation_table(
            np.broadcast_to(alone, (len(shares), *alone.shape)), shares
        )
        prior = dict(
            mass=prior_result['mass'].tolist(),
            best=[BODY_PARTS[b] for b in prior_result['best']],
            lift=prior_result['lift'].tolist(),
            table=format_localisation(prior_result),
        )
        print('\nThe spatial priors alone (every token with equal content):\n')
        print(prior['table'])
    if args.figure:
        n = len(images['img_path'])
        pick = np.linspace(0, n - 1, min(args.figure_images, n)).astype(int)
        paths = [images['img_path'][i] for i in pick]
        fig = draw_localisation_figure(
            paths,
            [mask_path(encoded['data_root'], p) for p in paths],
            images['attn'].numpy()[pick],
            images['attn_hw'],
            [BODY_PARTS[b] for b in result['best']],
        )
        fig.save(args.figure)
        print(f'wrote {args.figure}')
    write_result(
        args,
        dict(
            parts=list(MASK_PARTS),
            mass=result['mass'].tolist(),
            area=result['area'].tolist(),
            best=[BODY_PARTS[b] for b in result['best']],
            lift=result['lift'].tolist(),
            table=table,
            prior=prior,
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
