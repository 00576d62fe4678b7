"""Search folders of images with a text description.

``python tools/search.py CONFIG CHECKPOINT --images DIR [DIR ...] --query "..."``

The folders are encoded once into a gallery index file (a FAISS index; see
``tbps_mm.apis.GalleryIndex``). Later runs encode only images that are new or
changed and drop those that are gone; another checkpoint or config rebuilds
it. ``--add DIR`` adds a folder to the folders an existing index holds.
Entries that cannot be read (dangling links, folders that cannot be listed,
images that fail to decode) are skipped, counted and named, and tried again
on the next run; a killed build resumes from its encoding cache.
``--onnx DIR`` encodes with onnxruntime through exported graphs.
Each search then costs one caption encoding and one index lookup. Prints the
top-k paths and scores; ``--out`` draws them under the query; ``--explain``
also draws, for the best match, each part query's attention over the image
and over the query's words.

Examples:
    python tools/search.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images my_photos --query "a woman in a red coat" --topk 5
    python tools/search.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images cam1 cam2 --index gallery.idx --query "a man with a black backpack" \\
        --out result.png --explain
    python tools/search.py configs/tbps_synth.py tbps_synth.safetensors \\
        --index gallery.idx --add cam3 --query "a girl in a yellow dress"
    python tools/search.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images city_day --index-type ivf-sq8 --nprobe 64 --query "..."
"""

import argparse
import os.path as osp
import sys

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import TBPSInferencer, format_index_summary
from tbps_mm.engine import (
    LaunchError,
    add_index_args,
    add_inference_args,
    index_args_error,
    index_options,
    inference_options,
    load_config,
)
from tbps_mm.index import INDEX_TYPES
from tbps_mm.models.checkpoint import CheckpointMismatchError
from tbps_mm.visualization import draw_ranked_list


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Search a folder of images with a text description'
    )
    add_inference_args(parser)
    parser.add_argument(
        '--images',
        nargs='+',
        default=[],
        metavar='DIR',
        help='the image folders to search (the gallery is exactly these); '
        'may be left out with --index of an existing index',
    )
    parser.add_argument(
        '--add',
        nargs='+',
        default=[],
        metavar='DIR',
        help='add these folders to those the index already holds',
    )
    parser.add_argument('--query', required=True, help='description of the person')
    parser.add_argument('--topk', type=int, default=10, help='results to show')
    parser.add_argument('--out', help='draw the results into this image file')
    add_index_args(parser, INDEX_TYPES)
    parser.add_argument(
        '--explain',
        action='store_true',
        help='also draw the part-level explanation of the best match '
        '(to <out>_explain.png; search_explain.png without --out)',
    )
    return parser.parse_args(argv)


def explain_path(out: str) -> str:
    """Where the explanation figure goes."""
    if not out:
        return 'search_explain.png'
    stem, ext = osp.splitext(out)
    return f'{stem}_explain{ext or ".png"}'


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.topk < 1:
        print(f'error: --topk must be >= 1, got {args.topk}', file=sys.stderr)
        return 2
    if not args.query.strip():
        print('error: the query is empty: describe the person to find', file=sys.stderr)
        return 2
    if not (args.images or args.add or args.index):
        print(
            'error: give the image folders (--images DIR ...) or an existing '
            'index (--index FILE)',
            file=sys.stderr,
        )
        return 2
    for path in (args.out, explain_path(args.out) if args.explain else None):
        folder = osp.dirname(osp.abspath(path)) if path else None
        if folder and not osp.isdir(folder):
            print(
                f'error: the folder of output "{path}" does not exist', file=sys.stderr
            )
            return 2
    error = index_args_error(args)
    if error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    try:
        inferencer = TBPSInferencer(
            load_config(args.config, args.cfg_options),
            args.checkpoint,
            **inference_options(args),
        )
        summary = inferencer.index(args.images, add=args.add, **index_options(args))
    except (LaunchError, OSError, ValueError, CheckpointMismatchError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print('\n'.join(format_index_summary(summary)))

    results = inferencer.search(args.query, topk=args.topk)
    print(f'query: {args.query}')
    for rank, (path, score) in enumerate(results, start=1):
        print(f'{rank:3d}  {score:8.4f}  {path}')

    if args.out:
        figure = draw_ranked_list(
            args.query,
            [path for path, _ in results],
            scores=[score for _, score in results],
        )
        figure.save(args.out)
        print(f'results drawn to {args.out}')
    if args.explain:
        try:
            explanation = inferencer.explain(args.query, results[0][0])
        except ValueError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
        print(f'best match explained, part by part (score {explanation["score"]:.4f}):')
        for k, weights in enumerate(explanation['word_weights']):
            top = weights.argsort()[::-1][:5]
            words = ', '.join(
                f'{explanation["words"][i]} {weights[i]:.2f}' for i in top
            )
            print(f'  part {k + 1}: {words}')
        path = explain_path(args.out)
        inferencer.draw_explanation(explanation).save(path)
        print(f'part-level explanation of the best match drawn to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
