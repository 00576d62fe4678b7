"""Index videos as person tracks for text search.

``python tools/index_video.py CONFIG CHECKPOINT VIDEO_OR_FOLDER [...] --index FILE``

Each video is decoded and sampled, people are detected and tracked, and each
track becomes one gallery entry (the pooled vector of its best crops) with
its camera, start / end time, frames and boxes; its best crop is saved
beside the index (``FILE.crops/``). Indexing is incremental: videos already
indexed with the same settings (same bytes, same detector, tracker,
sampling, camera and start time) are skipped, others are added or replace
their earlier tracks. Search the result with ``tools/search_video.py``.

The detector, tracker and sampling come from the config's ``video_ingest``
(``configs/video/tbps_synth_video.py``); ``--detections DIR`` reads each
video's boxes from ``DIR/<video name>.txt`` (MOTChallenge rows
``frame,id,x,y,w,h,score``) instead: the route for any detector of your own.

Examples:
    python tools/index_video.py configs/video/tbps_synth_video.py \\
        tbps_synth.safetensors footage/ --index footage.tracks \\
        --manifest footage/cameras.json
    python tools/index_video.py configs/video/tbps_synth_video.py \\
        tbps_synth.safetensors lobby.mp4 --index footage.tracks \\
        --camera 2 --start-time 2025-06-02T10:00:00 --detections dets/
"""

import argparse
import sys
from datetime import datetime

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.apis import (
    DEFAULT_VIDEO_INGEST,
    FusedEncoder,
    VideoIndexer,
    list_videos,
    read_manifest,
    track_encoders,
)
from tbps_mm.engine import (
    LaunchError,
    add_inference_args,
    inference_options,
    load_config,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Index videos as person tracks')
    # config (with video_ingest settings), checkpoint, --trust-checkpoint,
    # --cfg-options, --onnx, --device, --batch-size
    add_inference_args(parser)
    parser.add_argument(
        'videos', nargs='+', help='video files or folders (searched recursively)'
    )
    parser.add_argument('--index', required=True, help='the track gallery file')
    parser.add_argument(
        '--manifest',
        help='JSON list of {file, camera, start_time} (or a SynthPedes '
        'videos.json) giving each video its camera and wall-clock start',
    )
    parser.add_argument(
        '--camera',
        help='camera id of videos the manifest does not name '
        '(default: the file name without extension)',
    )
    parser.add_argument(
        '--start-time',
        help='wall-clock start (ISO 8601, e.g. 2025-06-02T10:00:00) of videos '
        'the manifest does not give',
    )
    parser.add_argument(
        '--detections',
        metavar='DIR',
        help='read detections from DIR/<video name>.txt (MOTChallenge rows) '
        "instead of running the config's detector",
    )
    parser.add_argument('--sample-fps', type=float, help='frames per second to process')
    parser.add_argument(
        '--rebuild-index', action='store_true', help='start the gallery afresh'
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.sample_fps is not None and not args.sample_fps > 0:
        print(
            f'error: --sample-fps must be > 0, got {args.sample_fps}', file=sys.stderr
        )
        return 2
    if args.start_time is not None:
        try:
            datetime.fromisoformat(args.start_time)
        except ValueError:
            print(
                f'error: --start-time must be ISO 8601 (2025-06-02T10:00:00), got '
                f'{args.start_time!r}',
                file=sys.stderr,
            )
            return 2
    try:
        cfg = load_config(args.config, args.cfg_options)
        ingest = dict(cfg.get('video_ingest') or DEFAULT_VIDEO_INGEST)
        if hasattr(ingest.get('detector'), 'to_dict'):
            ingest['detector'] = ingest['detector'].to_dict()
        if hasattr(ingest.get('tracker'), 'to_dict'):
            ingest['tracker'] = ingest['tracker'].to_dict()
        if args.detections:
            ingest['detector'] = dict(type='MOTDetectionsFile', det_dir=args.detections)
        if args.sample_fps is not None:
            ingest['sample_fps'] = args.sample_fps
        videos = list_videos(args.videos)
        cameras = read_manifest(args.manifest) if args.manifest else {}
        if args.batch_size < 1:
            raise ValueError(f'--batch-size must be >= 1, got {args.batch_size}')
        encoder = FusedEncoder.from_config(
            cfg, args.checkpoint, **inference_options(args)
        )
        encode_crops, _, fingerprint = track_encoders(encoder)
        indexer = VideoIndexer(
            ingest, encode_crops, args.index, fingerprint, rebuild=args.rebuild_index
        )
        entries = [dict(file=v, **cameras.get(v, {})) for v in videos]
        summary = indexer.index_videos(
            entries, camera=args.camera, start_time=args.start_time
        )
    except (LaunchError, OSError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for path in summary['added']:
        print(f'added     {path}')
    for path in summary['replaced']:
        print(f'replaced  {path} (other settings)')
    for path in summary['skipped']:
        print(f'unchanged {path}')
    for problem in summary['problems'].values():
        print(f'warning: {problem}')
    seconds = sum(summary['seconds'].values())
    print(
        f'{summary["tracks_added"]} tracks added; the gallery holds '
        f'{summary["num_tracks"]} tracks ({args.index})'
    )
    if summary['video_seconds']:
        print(
            f'{summary["video_seconds"]:.1f} s of video in {seconds:.1f} s '
            f'({summary["video_seconds"] / max(seconds, 1e-9):.2f} video-s per s)'
        )
    return 0


if __name__ == '__main__':
    sys.exit(main())
