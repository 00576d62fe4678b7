"""Search indexed video tracks with text, filter them, export the results.

``python tools/search_video.py CONFIG CHECKPOINT --index FILE --query "..."``

Ranks the tracks of a gallery built by ``tools/index_video.py`` (one entry
per person track) by the model's fused score and prints one line per track:
rank, score, camera, wall-clock start and end, frames and video. Filters:
``--camera`` (one or more ids), ``--time-from`` / ``--time-to`` (``HH:MM``
or ``HH:MM:SS`` for a time of day, or a full ISO date and time) and
``--min-score``. ``--similar-to KEY`` searches with a hit's own vector
("find similar"; the hit itself is left out). ``--export results.csv`` (or
``.json``) writes the results, ``--export-crops DIR`` copies their crops.

Examples:
    python tools/search_video.py configs/video/tbps_synth_video.py \\
        tbps_synth.safetensors --index footage.tracks \\
        --query "a woman in a red coat with a black backpack" \\
        --camera 2 --time-from 10:00 --time-to 10:05 --export hits.csv
    python tools/search_video.py configs/video/tbps_synth_video.py \\
        tbps_synth.safetensors --index footage.tracks \\
        --similar-to 3f9a0c1d2b4e5f60/7 --topk 5
"""

import argparse
import os
import os.path as osp
import shutil
import sys
from datetime import time

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import FusedEncoder, TrackGallery, track_encoders
from tbps_mm.apis.track_export import parse_time_bound, tracks_csv, tracks_json
from tbps_mm.engine import (
    LaunchError,
    add_inference_args,
    inference_options,
    load_config,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Search indexed video tracks')
    # config and checkpoint the tracks were indexed with, --trust-checkpoint,
    # --cfg-options, --onnx, --device, --batch-size
    add_inference_args(parser)
    parser.add_argument('--index', required=True, help='the track gallery file')
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument('--query', help='description of the person')
    query.add_argument(
        '--similar-to', metavar='KEY', help="search with this track's vector"
    )
    parser.add_argument('--topk', type=int, default=10, help='results to show')
    parser.add_argument(
        '--camera', nargs='+', metavar='ID', help='keep tracks of these cameras'
    )
    parser.add_argument('--time-from', help='keep tracks that end at or after this')
    parser.add_argument('--time-to', help='keep tracks that start at or before this')
    parser.add_argument('--min-score', type=float, help='keep scores at or above this')
    parser.add_argument('--export', help='write the results to a .csv or .json file')
    parser.add_argument('--export-crops', metavar='DIR', help="copy the results' crops")
    return parser.parse_args(argv)


def export(hits, path: str) -> None:
    """Write ``hits`` to ``path`` (.csv: one row per hit; .json: records)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    text = tracks_json(hits) if path.lower().endswith('.json') else tracks_csv(hits)
    with open(path, 'w', encoding='utf-8', newline='') as f:
        f.write(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.topk < 1:
        print(f'error: --topk must be >= 1, got {args.topk}', file=sys.stderr)
        return 2
    if args.query is not None and not args.query.strip():
        print('error: the query is empty: describe the person to find', file=sys.stderr)
        return 2
    if args.export and not args.export.lower().endswith(('.csv', '.json')):
        print(f'error: --export must end in .csv or .json, got {args.export!r}',
              file=sys.stderr)  # fmt: skip
        return 2
    if not osp.isfile(args.index):
        print(f'error: track gallery "{args.index}" does not exist (make it with '
              'tools/index_video.py)', file=sys.stderr)  # fmt: skip
        return 2
    try:
        time_from = (
            parse_time_bound(args.time_from, '--time-from') if args.time_from else None
        )
        time_to = parse_time_bound(args.time_to, '--time-to') if args.time_to else None
        both = time_from is not None and time_to is not None
        if both and isinstance(time_from, time) != isinstance(time_to, time):
            raise ValueError(
                '--time-from and --time-to must both be times of day or both '
                'full dates and times'
            )
        cfg = load_config(args.config, args.cfg_options)
        if args.batch_size < 1:
            raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
        encoder = FusedEncoder.from_config(
            cfg, args.checkpoint, **inference_options(args)
        )
        _, encode_text, fingerprint = track_encoders(encoder)
        gallery = TrackGallery.open(args.index, fingerprint)
        if args.similar_to is not None:
            if args.similar_to not in gallery:
                raise ValueError(
                    f'track "{args.similar_to}" is not in "{args.index}" (use a key '
                    'printed by a search)'
                )
            vector = gallery.vectors([args.similar_to])[0]
            exclude = [args.similar_to]
        else:
            vector, exclude = encode_text(args.query), []
        hits = gallery.search(
            vector,
            args.topk,
            cameras=args.camera,
            time_from=time_from,
            time_to=time_to,
            min_score=args.min_score,
            exclude=exclude,
        )
    except (LaunchError, OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    asked = args.query if args.query is not None else f'similar to {args.similar_to}'
    print(f'query: {asked}')
    print(f'{len(hits)} tracks (of {len(gallery)})')
    for hit in hits:
        when = hit['start_time'] or f'{hit["start"]:.1f}s'
        until = hit['end_time'] or f'{hit["end"]:.1f}s'
        print(
            f'{hit["rank"]:3d}  {hit["score"]:8.4f}  camera {hit["camera"]}  '
            f'{when} - {until}  frames {hit["first_frame"]}-{hit["last_frame"]}  '
            f'{hit["key"]}  {hit["video"]}'
        )
    if args.export:
        export(hits, args.export)
        print(f'results written to {args.export}')
    if args.export_crops:
        os.makedirs(args.export_crops, exist_ok=True)
        for hit in hits:
            key = hit['key'].replace('/', '_')
            name = f'{hit["rank"]:03d}_cam{hit["camera"]}_{key}.jpg'
            shutil.copyfile(hit['crop_path'], osp.join(args.export_crops, name))
        print(f'{len(hits)} crops copied to {args.export_crops}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
