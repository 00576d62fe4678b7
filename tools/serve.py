"""Serve a search page over a folder of images.

``python tools/serve.py CONFIG CHECKPOINT --images DIR [--host 127.0.0.1]
[--port 8000]``

Indexes the folder (reusing its up-to-date index file, as tools/search.py
does) and serves, with uvicorn, a page where you type a description, see
the ranked crops with their scores, load more, and click a crop for its
part-level explanation. Listens on localhost unless ``--host`` says
otherwise; there is no authentication, so put it behind a reverse proxy that
has some before exposing it (docs/deploy.md, "Security model"). ``--onnx DIR``
encodes with onnxruntime through graphs exported by
tools/deployment/pytorch2onnx.py (with ``--attention`` for explanations).

Examples:
    python tools/serve.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images my_photos
    python tools/serve.py configs/tbps_synth.py tbps_synth.safetensors \\
        --images my_photos --onnx deploy/tbps_synth --port 8080
"""

import argparse
import sys

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import TBPSInferencer
from tbps_mm.apis.local_server import uvicorn_config
from tbps_mm.apis.search_app import create_app
from tbps_mm.engine import LaunchError, add_inference_args, load_config
from tbps_mm.models.checkpoint import CheckpointMismatchError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Serve a text-based person search page over a folder'
    )
    parser.add_argument('config', help='model config file')
    parser.add_argument(
        'checkpoint',
        help='checkpoint: published .safetensors, state dict or training checkpoint',
    )
    parser.add_argument('--images', required=True, help='folder of images')
    parser.add_argument(
        '--host', default='127.0.0.1', help='address to listen on (localhost)'
    )
    parser.add_argument('--port', type=int, default=8000, help='port')
    parser.add_argument(
        '--index',
        help='gallery index file (default: .tbps_mm_gallery.idx inside the image '
        'folder)',
    )
    parser.add_argument(
        '--onnx',
        metavar='DIR',
        help='encode with onnxruntime through the graphs exported into DIR',
    )
    parser.add_argument(
        '--api-docs',
        action='store_true',
        help='also serve the OpenAPI schema (/openapi.json) and /docs (off by '
        'default: every path but the page and its API answers 404)',
    )
    add_inference_args(parser)
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace):
    """Index the folder and build the application.

    Args:
        args (argparse.Namespace): :func:`parse_args`'s result.

    Returns:
        FastAPI: The application.
    """
    cfg = load_config(args.config, args.cfg_options)
    inferencer = TBPSInferencer(
        cfg,
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        backend='onnxruntime' if args.onnx else 'pytorch',
        onnx_dir=args.onnx,
        trust_checkpoint=args.trust_checkpoint,
    )
    summary = inferencer.index(args.images, index_file=args.index)
    action = 'loaded' if summary['loaded'] else 'built'
    print(f'index {action}: {summary["num_images"]} images ({summary["index_file"]})')
    if summary['skipped']:
        print(f'skipped {len(summary["skipped"])} unreadable image(s)')
    return create_app(inferencer, api_docs=args.api_docs)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 < args.port < 65536:
        print(f'error: --port must be 1-65535, got {args.port}', file=sys.stderr)
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
