"""Generate a SynthPedes dataset folder (CUHK-PEDES layout) from a seed.

Usage:
    python tools/dataset_converters/make_synthpedes.py OUT_DIR \\
        [--size {tiny,small,large}] [--seed N] [--num-ids N] \\
        [--images-per-id N] [--workers N] [--image-size H W] [--families M] \\
        [--no-progress]

The same arguments always give byte-identical files, whatever ``--workers``.
OUT_DIR must be new or empty (or already hold the very same dataset, which is
then left as it is); a folder holding anything else is refused untouched.
See docs/synthpedes.md for the format.

``--families M`` writes the families variant (docs/synthpedes.md,
"Families"): M people per family, each differing from the family's base
identity in exactly one body part.

Example:
    python tools/dataset_converters/make_synthpedes.py data/synthpedes_small \\
        --size small --seed 0
    python tools/dataset_converters/make_synthpedes.py data/synthpedes_families4 \\
        --size small --seed 0 --families 4
"""

import argparse
import sys
from typing import List, Optional

from tbps_mm.datasets.synthpedes import SIZES, generate_synthpedes, read_synthpedes_meta


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='make_synthpedes.py',
        description='Generate a SynthPedes text-based person search dataset '
        '(CUHK-PEDES layout) deterministically from a seed.',
    )
    parser.add_argument('out_dir', help='output folder (new or empty)')
    parser.add_argument(
        '--size',
        default='small',
        choices=sorted(SIZES),
        help='preset size: '
        + '; '.join(
            f'{name}: {cfg["num_ids"]} ids x {cfg["images_per_id"]} images'
            for name, cfg in SIZES.items()
        )
        + ' (default: small)',
    )
    parser.add_argument('--seed', type=int, default=0, help='non-negative integer seed')
    parser.add_argument(
        '--num-ids',
        type=int,
        default=None,
        help="override the preset's number of identities",
    )
    parser.add_argument(
        '--images-per-id',
        type=int,
        default=None,
        help="override the preset's images per identity",
    )
    parser.add_argument(
        '--workers',
        type=int,
        default=None,
        help='worker processes (default: CPU count, at most 8)',
    )
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        default=(128, 48),
        metavar=('H', 'W'),
        help='crop height and width (default: 128 48)',
    )
    parser.add_argument(
        '--families',
        type=int,
        default=None,
        metavar='M',
        help='the families variant: M people (2-5) per family, each differing '
        'from the family base in exactly one body part (split sizes must be '
        'multiples of M)',
    )
    parser.add_argument(
        '--no-progress', action='store_true', help='hide the progress bar'
    )
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the tool; returns the exit code (argparse exits 2 on bad flags)."""
    args = parse_args(argv)
    try:
        out_dir = generate_synthpedes(
            args.out_dir,
            size=args.size,
            seed=args.seed,
            num_ids=args.num_ids,
            images_per_id=args.images_per_id,
            workers=args.workers,
            image_size=tuple(args.image_size),
            progress=not args.no_progress,
            families=args.families,
        )
    except ValueError as e:
        print(f'make_synthpedes.py: error: {e}', file=sys.stderr)
        return 1
    meta = read_synthpedes_meta(out_dir)
    kind = f', families of {meta["families"]}' if meta.get('families') else ''
    lines = [f'SynthPedes {meta["size"]} (seed {meta["seed"]}{kind}) in {out_dir}']
    for split in ('train', 'val', 'test'):
        counts = meta['splits'][split]
        lines.append(
            f'  {split:<5} {counts["ids"]:>6} ids '
            f'{counts["images"]:>7} images '
            f'{counts["captions"]:>7} captions'
            + (f' {counts["families"]:>5} families' if 'families' in counts else '')
        )
    print('\n'.join(lines))
    return 0


if __name__ == '__main__':
    sys.exit(main())
