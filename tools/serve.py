"""Serve a search page over folders of images or indexed video tracks.

``python tools/serve.py CONFIG CHECKPOINT --images DIR [DIR ...]
[--host 127.0.0.1] [--port 8000]``
``python tools/serve.py CONFIG CHECKPOINT --tracks FILE``

Indexes the folders (reusing their up-to-date index file, as
tools/search.py does, with the same model, encoder and index options) and
serves, with uvicorn, a page where you type a description, see the ranked
crops with their scores, load more, and click a crop for its part-level
explanation. Listens on localhost unless ``--host`` says otherwise; there is
no authentication, so put it behind a reverse proxy that has some before
exposing it (docs/deploy.md, "Security model"). The page itself is the
``tbps_mm_serve`` package (the ``[serve]`` extra), outside the core library.
``--onnx DIR`` encodes with onnxruntime through graphs exported by
tools/deployment/pytorch2onnx.py (with ``--attention`` for explanations).

``--tracks FILE`` serves a video track gallery made by
``tools/index_video.py`` instead: a page with camera, time-window and
minimum-score filters, "similar" on every track, and CSV / JSON export of
the results (docs/video.md).

Examples:
    python tools/serve.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images my_photos
    python tools/serve.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images cam1 cam2 --onnx deploy/tbps_synth --index-type ivf-sq8 \\
        --port 8080
    python tools/serve.py configs/video/tbps_synth_video.py \
        tbps_synth.safetensors --tracks footage.tracks
"""

import argparse
import os.path as osp
import sys

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import (
    FusedEncoder,
    TBPSInferencer,
    TrackGallery,
    format_index_summary,
    track_encoders,
)
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
from tbps_mm_serve import create_app, create_track_app, uvicorn_config


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Serve a text-based person search page over image folders'
    )
    add_inference_args(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', nargs='+', metavar='DIR', help='image folders')
    source.add_argument(
        '--tracks',
        metavar='FILE',
        help='serve the track search page over this video track gallery '
        '(made by tools/index_video.py with the same model)',
    )
    parser.add_argument(
        '--host', default='127.0.0.1', help='address to listen on (localhost)'
    )
    parser.add_argument('--port', type=int, default=8000, help='port')
    add_index_args(parser, INDEX_TYPES)
    parser.add_argument(
        '--api-docs',
        action='store_true',
        help='also serve the OpenAPI schema (/openapi.json) and /docs (off by '
        'default: every path but the page and its API answers 404)',
    )
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace):
    """Index the folders (or open the track gallery) and build the
    application.

    Args:
        args (argparse.Namespace): :func:`parse_args`'s result.

    Returns:
        FastAPI: The application.
    """
    cfg = load_config(args.config, args.cfg_options)
    if args.tracks is not None:
        if not osp.isfile(args.tracks):
            raise FileNotFoundError(
                f'track gallery "{args.tracks}" does not exist (make it with '
                'tools/index_video.py)'
            )
        encoder = FusedEncoder.from_config(
            cfg, args.checkpoint, **inference_options(args)
        )
        _, encode_text, fingerprint = track_encoders(encoder)
        gallery = TrackGallery.open(args.tracks, fingerprint)
        print(f'{len(gallery)} tracks of {len(gallery.videos)} videos ({args.tracks})')
        return create_track_app(gallery, encode_text, api_docs=args.api_docs)
    inferencer = TBPSInferencer(cfg, args.checkpoint, **inference_options(args))
    summary = inferencer.index(args.images, **index_options(args))
    print('\n'.join(format_index_summary(summary)))
    return create_app(inferencer, api_docs=args.api_docs)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 < args.port < 65536:
        print(f'error: --port must be 1-65535, got {args.port}', file=sys.stderr)
        return 2
    error = index_args_error(args)
    if error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    try:
        app = build_app(args)
    except (LaunchError, OSError, ValueError, CheckpointMismatchError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    import uvicorn

    print(f'serving on http://{args.host}:{args.port}/ (Ctrl+C stops)')
    uvicorn.Server(uvicorn_config(app, host=args.host, port=args.port)).run()
    return 0


if __name__ == '__main__':
    sys.exit(main())
