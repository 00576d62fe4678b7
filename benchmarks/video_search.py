"""Video search on held-out SynthPedes videos: what detection and tracking cost.

``python benchmarks/video_search.py CONFIG CHECKPOINT [--out results.json]``

Generates (on first use) a SynthPedes video set whose people are not in the
image dataset (``small``: 3 cameras x 20 s at 10 fps, 320 x 180; seed 100 by
default), indexes it through the real ingestion path
(:class:`tbps_mm.apis.VideoIndexer`: decode, sample, detect, track, crop,
encode, pool, save) and measures:

- **text -> track retrieval**: every caption of every person who appears is
  a query; a track is correct for a query when most of its boxes match
  (IoU >= 0.5) that person's ground-truth boxes. R@1, R@5 and mAP (percent),
  with queries whose person got no track counted as misses (R@K = AP = 0).
  The same queries are run against **ground-truth tracks** (each person's
  ground-truth boxes in each video, cropped, encoded and pooled exactly as
  pipeline tracks are), so the difference is what detection + tracking cost;
  it is reported with a paired bootstrap 95 % CI over queries;
- **detection AP@0.5** of the detector on the sampled frames (ground truth
  less than 25 % visible is ignored);
- **IDF1 / MOTA** of the kept tracks on the sampled frames (``motmetrics``);
- **ingest speed**: video seconds per wall-clock second (median of
  ``--runs`` full ingests into a fresh gallery) and each stage's share.

Detectors: the config's ``video_ingest`` detector (the weight-free
background-subtraction detector by default) and the ground truth read as a
detections file (an oracle detector, which isolates the tracker's and the
pooling's share of the gap).

Example:
    python benchmarks/video_search.py configs/video/tbps_synth_video.py \\
        tbps_synth.safetensors --out benchmarks/results/video_search.json
"""

import argparse
import os
import os.path as osp
import sys
import tempfile
import time
from typing import Dict

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from _common import machine_info, median, quiet_mmengine, write_json  # noqa: E402

import tbps_mm  # noqa: E402,F401
from tbps_mm.apis import (  # noqa: E402
    DEFAULT_VIDEO_INGEST,
    FusedEncoder,
    VideoIndexer,
    track_encoders,
)
from tbps_mm.datasets import SynthPedesVideos  # noqa: E402
from tbps_mm.engine import (  # noqa: E402
    add_inference_args,
    inference_options,
    load_config,
)
from tbps_mm.evaluation import markdown_table, query_rank_stats  # noqa: E402
from tbps_mm.evaluation.video_metrics import (  # noqa: E402
    box_iou,
    detection_average_precision,
    tracking_metrics,
)
from tbps_mm.registry import TASK_UTILS  # noqa: E402
from tbps_mm.video import (  # noqa: E402
    STAGES,
    TrackAccumulator,
    VideoFrameReader,
    pool_track_vectors,
)


class RecordingDetector:
    """Wraps a detector and keeps every frame's output (for AP)."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.outputs: Dict[str, Dict[int, tuple]] = {}
        self._video = None

    def reset(self, video_path: str) -> None:
        self._video = video_path
        self.outputs[video_path] = {}
        self.detector.reset(video_path)

    def detect(self, frame):
        boxes, scores = self.detector.detect(frame)
        self.outputs[self._video][frame.index + 1] = (boxes.copy(), scores.copy())
        return boxes, scores

    def settings(self) -> dict:
        return self.detector.settings()


def per_query(sim: np.ndarray, query_labels, gallery_labels) -> Dict[str, np.ndarray]:
    """Per-query R@1, R@5 and AP (fractions); a query whose person has no
    gallery item scores 0 (a miss, never skipped)."""
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    out = {k: np.zeros(len(query_labels)) for k in ('R1', 'R5', 'AP')}
    answerable = np.isin(query_labels, gallery_labels)
    if answerable.any():
        stats = query_rank_stats(
            torch.from_numpy(sim[answerable]).float(),
            torch.from_numpy(query_labels[answerable]),
            torch.from_numpy(gallery_labels),
        )
        above = stats['first_above'].double().numpy()
        tied = stats['first_tied'].double().numpy()
        tied_ok = stats['first_tied_correct'].double().numpy()
        for k in (1, 5):
            # expected R@K over the orders of the tied group (tie rule)
            room = np.clip(k - above, 0, None)
            prob = np.zeros_like(above)
            for i in range(len(above)):
                if room[i] <= 0:
                    continue
                # P(at least one correct among the first `room` of the group)
                n, c, r = int(tied[i]), int(tied_ok[i]), int(min(room[i], tied[i]))
                miss = 1.0
                for j in range(r):
                    miss *= max(0.0, (n - c - j) / (n - j))
                prob[i] = 1.0 - miss
            out[f'R{k}'][answerable] = prob
        out['AP'][answerable] = stats['ap'].numpy()
    return out


def bootstrap_ci(values: np.ndarray, rounds: int = 2000, seed: int = 0):
    """Mean and percentile-bootstrap 95 % CI (percent)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(rounds, len(values)))
    means = values[idx].mean(1)
    return (
        100 * float(values.mean()),
        100 * float(np.percentile(means, 2.5)),
        100 * float(np.percentile(means, 97.5)),
    )


def track_labels(gallery, gts: Dict[str, dict]) -> Dict[str, int]:
    """Each pipeline track's person: the ground-truth id most of its boxes
    match with IoU >= 0.5 (-1: no match for most boxes)."""
    labels = {}
    for key, record in gallery.records.items():
        gt = gts[record['video']]
        votes: Dict[int, int] = {}
        for frame, x, y, w, h, _ in record['boxes']:
            if frame not in gt:
                continue
            boxes, ids, _ = gt[frame]
            iou = box_iou(np.array([[x, y, x + w, y + h]]), boxes)[0]
            if iou.size and iou.max() >= 0.5:
                pid = int(ids[int(iou.argmax())])
                votes[pid] = votes.get(pid, 0) + 1
        best = max(votes.items(), key=lambda kv: kv[1]) if votes else (-1, 0)
        labels[key] = best[0] if best[1] * 2 > len(record['boxes']) else -1
    return labels


def gt_track_gallery(dataset, encode_crops, sample_fps, crops_per_track):
    """One pooled vector per (video, person) from ground-truth boxes, cut and
    chosen exactly as pipeline tracks are (visibility as the score)."""
    vectors, labels = [], []
    for video in dataset.videos:
        gt = dataset.load_gt(video)
        acc = TrackAccumulator(crops_per_track)
        for frame in VideoFrameReader(video['file'], sample_fps):
            if frame.index + 1 not in gt:
                continue
            boxes, ids, vis = gt[frame.index + 1]
            keep = vis >= 0.25
            acc.add(frame, boxes[keep], vis[keep], ids[keep])
        for track in acc.finish(min_detections=1):
            vectors.append(pool_track_vectors(encode_crops(track.crops)))
            labels.append(track.track_id)
    return np.stack(vectors), np.asarray(labels)


def detections_and_tracks(dataset, gallery, detector, gts, sampled_frames, tag):
    """One video set's AP inputs and MOT sequences, keyed apart by ``tag``."""
    dets_all, gt_all, sequences, frames = {}, {}, {}, {}
    for video in dataset.videos:
        gt = gts[video['file']]
        for f in sampled_frames[video['file']]:
            gt_all[(tag, video['file'], f)] = gt.get(
                f, (np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))
            )
            dets_all[(tag, video['file'], f)] = detector.outputs[video['file']].get(
                f, (np.zeros((0, 4)), np.zeros(0))
            )
        hyp: Dict[int, list] = {}
        for record in gallery.records.values():
            if record['video'] != video['file']:
                continue
            for frame, x, y, w, h, _ in record['boxes']:
                hyp.setdefault(frame, []).append(
                    ([x, y, x + w, y + h], record['track_id'])
                )
        name = f'{tag}/cam{video["camera"]}'
        sequences[name] = (
            gt,
            {
                f: (np.array([b for b, _ in items]), np.array([t for _, t in items]))
                for f, items in hyp.items()
            },
        )
        frames[name] = sampled_frames[video['file']]
    return gt_all, dets_all, sequences, frames


def ci_text(value, signed: bool = False) -> str:
    """``mean [low, high]`` of a bootstrap triple."""
    f = '{:+.1f}' if signed else '{:.1f}'
    return f'{f.format(value[0])} [{f.format(value[1])}, {f.format(value[2])}]'


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    # config, checkpoint, --trust-checkpoint, --cfg-options, --onnx,
    # --device, --batch-size
    add_inference_args(parser)
    parser.add_argument(
        '--data-root',
        default='data/synthpedes_videos',
        help='folder of the video sets (one sub-folder per seed)',
    )
    parser.add_argument('--seeds', type=int, nargs='+', default=[100, 101, 102])
    parser.add_argument('--size', default='small')
    parser.add_argument('--runs', type=int, default=3, help='timed ingests')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', help='write the results as JSON')
    args = parser.parse_args(argv)
    quiet_mmengine()
    torch.set_num_threads(args.threads)

    cfg = load_config(args.config, args.cfg_options)
    ingest = dict(cfg.get('video_ingest') or DEFAULT_VIDEO_INGEST)
    for name in ('detector', 'tracker'):
        if hasattr(ingest[name], 'to_dict'):
            ingest[name] = ingest[name].to_dict()
    encoder = FusedEncoder.from_config(cfg, args.checkpoint, **inference_options(args))
    encode_crops, encode_text, fingerprint = track_encoders(encoder)

    sets = []
    for seed in args.seeds:
        dataset = SynthPedesVideos(
            osp.join(args.data_root, f'{args.size}_seed{seed}'), args.size, seed
        )
        gts = {v['file']: dataset.load_gt(v) for v in dataset.videos}
        sampled = {
            v['file']: [
                f.index + 1 for f in VideoFrameReader(v['file'], ingest['sample_fps'])
            ]
            for v in dataset.videos
        }
        appearing = sorted({p['id'] for v in dataset.videos for p in v['people']})
        people = {p['id']: p for p in dataset.identities}
        labels = np.array([pid for pid in appearing for _ in people[pid]['captions']])
        queries = np.stack(
            [encode_text(c) for pid in appearing for c in people[pid]['captions']]
        )
        gt_vectors, gt_labels = gt_track_gallery(
            dataset, encode_crops, ingest['sample_fps'], ingest['crops_per_track']
        )
        sets.append(
            dict(
                seed=seed,
                dataset=dataset,
                gts=gts,
                sampled=sampled,
                labels=labels,
                queries=queries,
                people=len(appearing),
                gt_tracks=len(gt_labels),
                gt_scores=per_query(queries @ gt_vectors.T, labels, gt_labels),
            )
        )
    gt_scores = {
        k: np.concatenate([s['gt_scores'][k] for s in sets]) for k in ('R1', 'R5', 'AP')
    }

    detectors = {
        ingest['detector']['type']: lambda s: TASK_UTILS.build(ingest['detector']),
        # gt/camN.txt rows are valid detection rows: an oracle detector
        'ground truth as detections (oracle)': lambda s: TASK_UTILS.build(
            dict(type='MOTDetectionsFile', det_dir=osp.join(s.data_root, 'gt'))
        ),
    }
    results, rows = {}, []
    for name, make in detectors.items():
        timings, seconds_runs = [], []
        scores = {k: [] for k in ('R1', 'R5', 'AP')}
        gt_all, dets_all, sequences, frames = {}, {}, {}, {}
        num_tracks = false_tracks = found = 0
        video_seconds = 0.0
        for run in range(args.runs):
            wall, seconds = 0.0, {}
            for s in sets:
                detector = RecordingDetector(make(s['dataset']))
                with tempfile.TemporaryDirectory() as folder:
                    indexer = VideoIndexer(
                        dict(ingest, detector=detector),
                        encode_crops,
                        osp.join(folder, 'v.tracks'),
                        fingerprint,
                    )
                    start = time.perf_counter()
                    summary = indexer.index_videos(s['dataset'].manifest())
                    wall += time.perf_counter() - start
                    for k, v in summary['seconds'].items():
                        seconds[k] = seconds.get(k, 0.0) + v
                    if run:
                        continue
                    video_seconds += summary['video_seconds']
                    parts = detections_and_tracks(
                        s['dataset'], indexer.gallery, detector, s['gts'],
                        s['sampled'], s['seed'],
                    )  # fmt: skip
                    for into, part in zip((gt_all, dets_all, sequences, frames), parts):
                        into.update(part)
                    labels = track_labels(indexer.gallery, s['gts'])
                    keys = list(indexer.gallery.records)
                    track_label = np.array([labels[k] for k in keys])
                    vectors = indexer.gallery.vectors(keys)
                    for k, v in per_query(
                        s['queries'] @ vectors.T, s['labels'], track_label
                    ).items():
                        scores[k].append(v)
                    num_tracks += len(keys)
                    false_tracks += int((track_label < 0).sum())
                    found += len(set(track_label[track_label >= 0].tolist()))
            timings.append(wall)
            seconds_runs.append(seconds)
        scores = {k: np.concatenate(v) for k, v in scores.items()}
        order = {key: i for i, key in enumerate(sorted(gt_all, key=str))}
        detection = detection_average_precision(
            {order[k]: v for k, v in gt_all.items()},
            {order[k]: v for k, v in dets_all.items()},
        )
        tracking = tracking_metrics(sequences, frames=frames)['overall']
        wall = median(timings)
        run_seconds = seconds_runs[timings.index(sorted(timings)[len(timings) // 2])]
        total = sum(run_seconds.values())
        diff = {k: bootstrap_ci(gt_scores[k] - scores[k]) for k in ('R1', 'AP')}
        results[name] = dict(
            retrieval={k: bootstrap_ci(v) for k, v in scores.items()},
            gap_vs_gt_tracks=diff,
            detection=detection,
            tracking=tracking,
            num_tracks=num_tracks,
            false_tracks=false_tracks,
            people_found=found,
            ingest=dict(
                video_seconds=video_seconds,
                wall_seconds_median=wall,
                wall_seconds=timings,
                video_seconds_per_second=video_seconds / wall,
                stage_share={k: v / total for k, v in run_seconds.items()},
            ),
        )
        r = results[name]
        rows.append([
            name, ci_text(r['retrieval']['R1']), f'{r["retrieval"]["AP"][0]:.1f}',
            ci_text(diff['R1'], True), ci_text(diff['AP'], True),
            f'{100 * detection["ap"]:.1f}', f'{100 * tracking["idf1"]:.1f}',
            f'{100 * tracking["mota"]:.1f}', f'{num_tracks} ({false_tracks})',
            f'{video_seconds / wall:.2f}',
        ])  # fmt: skip
    gt_summary = {k: bootstrap_ci(v) for k, v in gt_scores.items()}
    num_gt_tracks = sum(s['gt_tracks'] for s in sets)
    rows.append([
        'ground-truth tracks (no detection, no tracking)', ci_text(gt_summary['R1']),
        f'{gt_summary["AP"][0]:.1f}', '-', '-', '-', '-', '-', f'{num_gt_tracks}', '-',
    ])  # fmt: skip
    print(
        markdown_table(
            ['detections', 'text->track R@1 [95% CI]', 'mAP',
             'R@1 gap [95% CI]', 'mAP gap [95% CI]', 'det AP@0.5', 'IDF1',
             'MOTA', 'tracks (no majority person)', 'video-s / s'],
            rows,
        )
    )  # fmt: skip
    for name, r in results.items():
        shares = ', '.join(
            f'{k} {100 * v:.0f}%' for k, v in r['ingest']['stage_share'].items()
        )
        print(f'{name}: stage shares: {shares}')
    machine = machine_info()
    # the command as typed, without this machine's folders
    machine['command'] = 'python ' + ' '.join(
        osp.basename(a) if osp.isabs(a) else a for a in sys.argv
    )
    write_json(
        args.out,
        dict(
            machine=machine,
            dataset=dict(
                size=args.size,
                seeds=args.seeds,
                videos=sum(len(s['dataset'].videos) for s in sets),
                people=sum(s['people'] for s in sets),
                queries=int(len(gt_scores['R1'])),
            ),
            checkpoint=os.path.basename(args.checkpoint),
            ingest=ingest,
            stages=list(STAGES),
            gt_tracks=dict(retrieval=gt_summary, num_tracks=num_gt_tracks),
            results=results,
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
