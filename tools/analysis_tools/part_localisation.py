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

Example:
    python tools/analysis_tools/part_localisation.py configs/tbps_synth.py \\
        work_dirs/tbps_synth/epoch_9.pth
"""

import argparse
import sys
from typing import Dict, Optional, Sequence

from _harness import (
    BODY_PARTS,
    MASK_PARTS,
    checkpoint_parser,
    encode_checkpoint,
    localisation_table,
    patch_part_shares,
    write_result,
)

from tbps_mm.evaluation import markdown_table


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
    return checkpoint_parser(__doc__.split('\n')[0]).parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    _, _, encoded = encode_checkpoint(args)
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
    write_result(
        args,
        dict(
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
