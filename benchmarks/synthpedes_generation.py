"""Benchmark: SynthPedes generation speed (images per second).

Generates a SynthPedes set of ``--num-ids`` identities (in the ``small``
split proportions) into temporary folders, ``--runs`` times for each worker
count, and prints the median images/s as a Markdown table. Everything is
counted: rendering, captions, JPEG/PNG encoding, file writes, annotation
files, tokenizer and the final rename; process start-up too for more than one
worker. The last column divides the images by the CPU seconds of the main
process and its workers: a per-core rate that other processes sharing the
machine do not distort (wall-clock rates do).

Usage:
    python benchmarks/synthpedes_generation.py [--num-ids 250] \\
        [--images-per-id 4] [--workers 1 2] [--runs 3] [--image-size 128 48]

Example output (2-core machine, see docs/synthpedes.md for recorded numbers)::

    | workers | images | median s | images/s | images/CPU-s |
    |--------:|-------:|---------:|---------:|-------------:|
    |       1 |   1000 |     4.10 |      244 |          250 |
"""

import argparse
import os.path as osp
import resource
import statistics
import tempfile
import time
from typing import List, Optional, Tuple

from tbps_mm.datasets.synthpedes import generate_synthpedes


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-ids', type=int, default=250)
    parser.add_argument('--images-per-id', type=int, default=4)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument(
        '--image-size', type=int, nargs=2, default=(128, 48), metavar=('H', 'W')
    )
    return parser.parse_args(argv)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def time_generation(
    num_ids: int, images_per_id: int, workers: int, image_size
) -> Tuple[float, float]:
    """(wall, CPU) seconds to generate one dataset into a fresh folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu = time.perf_counter(), _cpu_seconds()
        generate_synthpedes(
            osp.join(tmp, 'synthpedes'),
            size='small',
            seed=0,
            num_ids=num_ids,
            images_per_id=images_per_id,
            workers=workers,
            image_size=tuple(image_size),
            progress=False,
        )
        return time.perf_counter() - start, _cpu_seconds() - cpu


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    images = args.num_ids * args.images_per_id
    # warm-up: imports, first-touch allocations, file-system caches
    time_generation(3, 1, 1, args.image_size)
    rows = [
        '| workers | images | median s | images/s | images/CPU-s |',
        '|--------:|-------:|---------:|---------:|-------------:|',
    ]
    for workers in args.workers:
        runs = [
            time_generation(args.num_ids, args.images_per_id, workers, args.image_size)
            for _ in range(args.runs)
        ]
        median = statistics.median(wall for wall, _ in runs)
        cpu = statistics.median(cpu for _, cpu in runs)
        rows.append(
            f'| {workers:>7} | {images:>6} | {median:>8.2f} | '
            f'{images / median:>8.0f} | {images / cpu:>12.0f} |'
        )
    print(
        f'SynthPedes generation, {args.image_size[0]}x{args.image_size[1]} '
        f'crops, median of {args.runs} runs'
    )
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
