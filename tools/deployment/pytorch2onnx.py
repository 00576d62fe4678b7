"""Export a tbps_mm model to ONNX and check the graphs against PyTorch.

``python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT OUT_DIR``

Writes ``image_encoder.onnx`` (normalised images -> the fused, coarse and
part embeddings), ``text_encoder.onnx`` (token ids + mask -> the same for
captions) and ``deploy.json`` into OUT_DIR, with a dynamic batch and, on the
text side, a dynamic caption length. It then runs onnxruntime and PyTorch on
the same random inputs (batches of 1 and 5, captions of several lengths),
prints the largest difference of every output and exits with status 1 when
one exceeds ``--tolerance``. The model comes from ``tbps_mm.apis.init_model``;
the parity check compares the two encoder backends search uses
(``PyTorchEncoder`` and ``ONNXRuntimeEncoder``).

Examples:
    python tools/deployment/pytorch2onnx.py configs/tbps_synth.py \\
        tbps_synth.safetensors deploy/tbps_synth
    python tools/deployment/pytorch2onnx.py configs/tbps_synth.py \\
        tbps_synth.safetensors deploy/tbps_synth --attention
"""

import argparse
import sys

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import init_model
from tbps_mm.deployment import check_onnx_parity, export_onnx, image_size_from_config
from tbps_mm.engine import LaunchError, add_checkpoint_args, load_config
from tbps_mm.models.checkpoint import CheckpointMismatchError, file_sha256


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Export a tbps_mm model to two ONNX graphs and check them'
    )
    add_checkpoint_args(parser)
    parser.add_argument('out_dir', help='folder for the graphs and deploy.json')
    parser.add_argument(
        '--image-size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="image size (default: the config's test pipeline Resize)",
    )
    parser.add_argument(
        '--attention',
        action='store_true',
        help='also output the part attention maps (needed for explanations)',
    )
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-4,
        help='largest allowed |onnxruntime - PyTorch| (fp32)',
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options)
        size = args.image_size or image_size_from_config(cfg)
        if size is None:
            raise ValueError(
                f'config "{args.config}" names no image size (no Resize in its '
                'test pipeline, no image_encoder.img_size): pass --image-size H W'
            )
        model = init_model(cfg, args.checkpoint, trust_checkpoint=args.trust_checkpoint)
    except (LaunchError, FileNotFoundError, ValueError, CheckpointMismatchError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    meta = export_onnx(
        model,
        args.out_dir,
        image_size=size,
        with_attention=args.attention,
        opset=args.opset,
        checkpoint_sha256=file_sha256(args.checkpoint),
    )
    print(
        f'exported to {args.out_dir}: {meta["image"]["file"]} (images 3x{size[0]}x'
        f'{size[1]}), {meta["text"]["file"]} (captions up to '
        f'{meta["text"]["max_length"]} tokens); outputs {", ".join(meta["outputs"])}'
    )
    diffs = check_onnx_parity(model, args.out_dir)
    worst = max(diffs.values())
    for name, diff in diffs.items():
        print(f'  max |onnxruntime - pytorch| {name:18s} {diff:.3e}')
    print(f'largest difference: {worst:.3e} (tolerance {args.tolerance:.0e})')
    if worst > args.tolerance:
        print(
            f'error: onnxruntime differs from PyTorch by {worst:.3e} > '
            f'{args.tolerance:.0e}',
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
