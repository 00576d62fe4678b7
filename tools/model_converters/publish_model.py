"""Publish a trained model: a training checkpoint -> a shareable weights file.

Usage::

    python tools/model_converters/publish_model.py IN OUT [--config CONFIG]
        [--keep-training-weights] [--trust-checkpoint]

``IN`` is a checkpoint ``tools/train.py`` wrote (``epoch_N.pth``,
``best_*.pth``). The tool keeps only the model weights (no optimizer,
scheduler or message-hub state), drops the training-only ID classifiers
under ``losses.`` (search and evaluation do not use them; keep them with
``--keep-training-weights``), writes ``OUT`` as ``.safetensors`` (the
default; a plain state dict when ``OUT`` ends in ``.pth``) and appends the
first 8 hex digits of the file's SHA-256 to its name, as MMPretrain's
``publish_model.py`` does. The result is what ``tools/test.py``,
``tools/search.py`` and ``TBPSInferencer`` load. With ``--config`` every
weight must fit that config's model (besides the training-only ones under
``losses.``), or nothing is written and the tool exits non-zero naming the
first misfit keys. ``IN`` is read without running code from it (torch's
weights-only unpickler and the allow-list of
``tbps_mm.models.checkpoint.load_checkpoint_file``); ``--trust-checkpoint``
unpickles it in full, only for a file you trust.

Example::

    python tools/model_converters/publish_model.py \\
        work_dirs/tbps_synth/best_t2i_R1_epoch_9.pth tbps_synth.safetensors \\
        --config configs/tbps_synth.py
    # -> tbps_synth-1a2b3c4d.safetensors
"""

import argparse
import sys

from tbps_mm.engine import LaunchError
from tbps_mm.models.checkpoint import (
    INFERENCE_IGNORED_PREFIXES,
    TRUST_CHECKPOINT_HELP,
    publish_weights,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Turn a training checkpoint into a weights-only file named '
        'with its SHA-256 prefix'
    )
    parser.add_argument('input', help='training checkpoint (tools/train.py output)')
    parser.add_argument(
        'output',
        help='output file: NAME.safetensors (default when no extension) or '
        'NAME.pth; published as NAME-<sha256[:8]>.<ext>',
    )
    parser.add_argument(
        '--keep-training-weights',
        action='store_true',
        help='keep the ID classifiers under losses. (needed only to resume '
        'training from the published file)',
    )
    parser.add_argument(
        '--config',
        help="check that the checkpoint's weights fit this config's model "
        '(every key, besides the training-only ones under losses.) before '
        'publishing',
    )
    parser.add_argument(
        '--trust-checkpoint', action='store_true', help=TRUST_CHECKPOINT_HELP
    )
    return parser.parse_args(argv)


def build_model(config: str):
    """The model of ``config`` (randomly initialised), to check keys against."""
    import tbps_mm  # noqa: F401  (registers every component)
    from tbps_mm.apis import init_model
    from tbps_mm.engine import load_config

    return init_model(load_config(config))


def main(argv=None) -> int:
    args = parse_args(argv)
    drop = () if args.keep_training_weights else INFERENCE_IGNORED_PREFIXES
    try:
        result = publish_weights(
            args.input,
            args.output,
            drop_prefixes=drop,
            trust=args.trust_checkpoint,
            check_model=build_model(args.config) if args.config else None,
        )
    except (FileNotFoundError, FileExistsError, ValueError, LaunchError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(f'published {args.input} -> {result["path"]}')
    print(f'  {result["num_tensors"]} tensors, sha256 {result["sha256"]}')
    if result['dropped']:
        print(
            f'  left out {len(result["dropped"])} training-only tensor(s): '
            + ', '.join(result['dropped'])
        )
    print('evaluate it:  python tools/test.py CONFIG ' + result['path'])
    print(
        'search with it:  python tools/search.py CONFIG '
        f'{result["path"]} --images DIR --query "..."'
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
