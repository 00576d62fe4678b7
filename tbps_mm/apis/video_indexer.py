"""``VideoIndexer``: index videos as person tracks and search them with text.

For each video: hash its content, decode and sample it, detect and track
people (:class:`~tbps_mm.video.pipeline.VideoTrackPipeline`), encode each
track's best crops with the ``encode_crops`` callable and pool them into one
vector per track, save each track's best crop beside the gallery file, and
insert the tracks (:func:`~tbps_mm.apis.track_gallery.insert_tracks`) with
their metadata (video, camera, start / end time, frames, boxes, crop).

Indexing is incremental and idempotent: a video is identified by the
SHA-256 of its bytes, and indexed under a fingerprint of everything that
decides its tracks (detector and tracker settings, sampling rate, crops per
track, camera id and start time). A video already indexed with the same
fingerprint is skipped; the same video with other settings replaces its
previous tracks; a new video adds its tracks. The gallery file is written
after each video, so an interrupted run keeps the videos finished before.

:func:`track_encoders` wires a :class:`~tbps_mm.apis.FusedEncoder` in
(its test pipeline pre-processes the crops in memory, exactly as image
search pre-processes files); any other encoder fits the same two callables.

Example:
    >>> encoder = FusedEncoder.from_config('configs/tbps_synth.py',
    ...                                    'model.safetensors')
    >>> encode_crops, encode_text, fingerprint = track_encoders(encoder)
    >>> indexer = VideoIndexer(
    ...     dict(detector=dict(type='BackgroundSubtractionDetector'),
    ...          tracker=dict(type='ByteTrackAdapter'), sample_fps=5),
    ...     encode_crops, 'footage.tracks', fingerprint)
    >>> indexer.index_videos([dict(file='cam2.mp4', camera='2',
    ...                            start_time='2025-06-02T10:00:00')])
    >>> indexer.search(encode_text('a woman in a red coat'), cameras=['2'])
"""

import hashlib
import json
import os
import os.path as osp
import time
from datetime import datetime
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmengine.logging import print_log
from PIL import Image

from tbps_mm.index import GalleryIndex
from tbps_mm.models.checkpoint import file_sha256
from tbps_mm.video import STAGES, VideoTrackPipeline

from .fused_encoder import FusedEncoder
from .track_gallery import TrackGallery, covered_dates, insert_tracks, wall_clock

__all__ = [
    'DEFAULT_VIDEO_INGEST',
    'VideoIndexer',
    'VIDEO_EXTENSIONS',
    'track_encoders',
    'list_videos',
    'read_manifest',
]

#: The ingestion settings of configs without a ``video_ingest`` entry.
DEFAULT_VIDEO_INGEST = dict(
    detector=dict(type='BackgroundSubtractionDetector'),
    tracker=dict(
        type='ByteTrackAdapter',
        track_activation_threshold=0.3,
        high_conf_det_threshold=0.5,
        minimum_iou_threshold=0.05,
        lost_track_buffer=60,
        minimum_consecutive_frames=2,
    ),
    sample_fps=5.0,
    crops_per_track=8,
    min_detections=3,
)

#: File extensions (lower case) found in video folders.
VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.avi', '.mov', '.webm', '.m4v', '.mpg', '.ts')


def _fingerprint(value) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, default=str).encode()
    ).hexdigest()


def list_videos(paths: Sequence[str]) -> List[str]:
    """Video files among ``paths`` (files as given; folders searched
    recursively for :data:`VIDEO_EXTENSIONS`), absolute, sorted per folder.

    Raises:
        FileNotFoundError: A path that does not exist.
        ValueError: A folder with no video.
    """
    found: List[str] = []
    for path in paths:
        if osp.isfile(path):
            found.append(osp.abspath(path))
        elif osp.isdir(path):
            inside = []
            for root, dirs, files in os.walk(path):
                dirs.sort()
                inside += [
                    osp.abspath(osp.join(root, name))
                    for name in files
                    if name.lower().endswith(VIDEO_EXTENSIONS)
                ]
            if not inside:
                raise ValueError(
                    f'video folder "{path}" holds no video (looked recursively '
                    f'for {", ".join(VIDEO_EXTENSIONS)})'
                )
            found += sorted(inside)
        else:
            raise FileNotFoundError(f'video "{path}" does not exist')
    return list(dict.fromkeys(found))


def read_manifest(path: str) -> Dict[str, dict]:
    """Camera ids and start times of videos, from a JSON manifest.

    The manifest is a list of ``{"file", "camera", "start_time"}`` objects
    (or an object with such a list under ``"videos"``, as in a SynthPedes
    video set's ``videos.json``); ``file`` is relative to the manifest's
    folder or absolute, ``start_time`` ISO 8601 (``2025-06-02T10:00:00``).

    Returns:
        dict: absolute video path -> ``{camera, start_time}``.

    Raises:
        ValueError: Not such a JSON file (the entry and field named).
    """
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f'manifest "{path}" cannot be read: {err}') from err
    entries = content.get('videos') if isinstance(content, dict) else content
    if not isinstance(entries, list):
        raise ValueError(
            f'manifest "{path}" must be a list of {{file, camera, start_time}} '
            'objects or hold one under "videos"'
        )
    root = osp.dirname(osp.abspath(path))
    out = {}
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get('file'), str):
            raise ValueError(f'manifest "{path}", entry {number}: no "file" string')
        start = entry.get('start_time')
        if start is not None:
            try:
                datetime.fromisoformat(start)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f'manifest "{path}", entry {number}, field "start_time": not '
                    f'an ISO 8601 time: {start!r}'
                ) from err
        out[osp.abspath(osp.join(root, entry['file']))] = dict(
            camera=None if entry.get('camera') is None else str(entry['camera']),
            start_time=start,
        )
    return out


def track_encoders(
    encoder: FusedEncoder,
) -> Tuple[Callable, Callable, str]:
    """The crop and caption encoders of a track gallery, from a
    :class:`~tbps_mm.apis.FusedEncoder`.

    Crops go through the config's test pipeline in memory
    (:meth:`~tbps_mm.apis.FusedEncoder.encode_image_arrays`), exactly as
    gallery image files do, so a track vector and an image vector of the
    same pixels are the same.

    Args:
        encoder (FusedEncoder): The encoder (a model loaded from a
            checkpoint, on either backend).

    Returns:
        tuple: ``encode_crops`` (list of (H, W, 3) uint8 RGB crops -> (N, D)
        float32 fused vectors), ``encode_text`` (caption -> (D,) float32
        fused vector) and the encoder fingerprint: a digest of
        :attr:`~tbps_mm.apis.FusedEncoder.fingerprints` (checkpoint bytes,
        model config and test pipeline), what an image gallery records.

    Example:
        >>> encoder = FusedEncoder.from_config('configs/tbps_synth.py',
        ...                                    'tbps_synth.safetensors')
        >>> encode_crops, encode_text, fingerprint = track_encoders(encoder)
    """

    def encode_crops(crops: Sequence[np.ndarray]) -> np.ndarray:
        out = encoder.encode_image_arrays(
            crops, names=[f'track crop {i}' for i in range(len(crops))]
        )
        return out['fused_embed'].float().cpu().numpy()

    def encode_text(text: str) -> np.ndarray:
        return encoder.encode_texts([text])['fused_embed'][0].float().cpu().numpy()

    return encode_crops, encode_text, _fingerprint(encoder.fingerprints)


class VideoIndexer:
    """Index videos as one gallery entry per person track.

    Args:
        pipeline (VideoTrackPipeline | dict): The pipeline or the keyword
            arguments of one (``detector``, ``tracker``, ``sample_fps``,
            ``crops_per_track``, ``min_detections``...).
        encode_crops (Callable): list of (H, W, 3) uint8 RGB crops -> (N, D)
            fused vectors.
        index_file (str): The track gallery file (created if absent).
        encoder_fingerprint (str): Identifies the encoder; a gallery made by
            another one is refused (or replaced with ``rebuild``).
        rebuild (bool): Start a new gallery in ``index_file``. Defaults to
            False.

    Example:
        >>> indexer = VideoIndexer(dict(detector=..., tracker=...),
        ...                        encode_crops, 'footage.tracks', 'fp')
    """

    def __init__(
        self,
        pipeline: Union[VideoTrackPipeline, dict],
        encode_crops: Callable[[Sequence[np.ndarray]], np.ndarray],
        index_file: str,
        encoder_fingerprint: str,
        rebuild: bool = False,
    ) -> None:
        if isinstance(pipeline, dict):
            pipeline = VideoTrackPipeline(**pipeline)
        self.pipeline = pipeline
        self.encode_crops = encode_crops
        self.gallery = TrackGallery.open(index_file, encoder_fingerprint, rebuild)
        if rebuild and osp.isdir(self.gallery.crop_dir):
            for name in os.listdir(self.gallery.crop_dir):
                os.remove(osp.join(self.gallery.crop_dir, name))

    def index_videos(
        self,
        videos: Sequence[Union[str, dict]],
        camera: Optional[str] = None,
        start_time: Optional[str] = None,
    ) -> dict:
        """Index videos (skipping those already indexed the same way).

        Args:
            videos (Sequence[str | dict]): Video paths, or dicts with
                ``file`` and optionally ``camera`` and ``start_time`` (ISO).
            camera (str, optional): Camera id of videos that give none.
                Defaults to the video file's name without extension.
            start_time (str, optional): Wall-clock start (ISO) of videos
                that give none; without one, tracks have video times only
                and time filters leave them out.

        Returns:
            dict: ``added`` / ``skipped`` / ``replaced`` video paths,
            ``tracks_added``, ``num_tracks`` (gallery total), ``problems``
            (path -> why decoding stopped early), ``video_seconds`` and
            ``seconds`` per stage (plus ``hash``, ``save``) of this call.

        Raises:
            FileNotFoundError: A video (or its detections file) is missing.
            VideoDecodeError: A video cannot be decoded (named).
        """
        summary = dict(
            added=[], skipped=[], replaced=[], tracks_added=0, problems={},
            video_seconds=0.0,
            seconds={stage: 0.0 for stage in (*STAGES, 'hash', 'save')},
        )  # fmt: skip
        for entry in videos:
            entry = {'file': entry} if isinstance(entry, str) else dict(entry)
            path = osp.abspath(entry['file'])
            if not osp.isfile(path):
                raise FileNotFoundError(f'video "{path}" does not exist')
            cam = entry.get('camera') or camera
            cam = str(cam) if cam is not None else osp.splitext(osp.basename(path))[0]
            start = entry.get('start_time') or start_time
            if start is not None:
                datetime.fromisoformat(start)  # a clear ValueError if malformed
            tick = time.perf_counter()
            sha = file_sha256(path)
            summary['seconds']['hash'] += time.perf_counter() - tick
            self.pipeline.prepare(path)
            settings = dict(self.pipeline.settings(), camera=cam, start_time=start)
            fingerprint = _fingerprint(settings)
            known = self.gallery.videos.get(sha)
            if known is not None and known['fingerprint'] == fingerprint:
                summary['skipped'].append(path)
                continue
            result = self.pipeline.run(path, self.encode_crops, prepared=True)
            for stage, seconds in result.seconds.items():
                summary['seconds'][stage] += seconds
            fps = result.info['fps'] or 1.0
            summary['video_seconds'] += result.frames_decoded / fps
            if known is not None:
                self.gallery.remove_video(sha)
                summary['replaced'].append(path)
            else:
                summary['added'].append(path)
            keys, records = self._records(path, sha, cam, start, result)
            insert_tracks(self.gallery, keys, result.vectors, records)
            if self.gallery.index is None:
                # no track yet: an empty gallery of the encoder's dimension
                # still records that this video was indexed
                dim = np.asarray(self.encode_crops([np.zeros((128, 48, 3), np.uint8)]))
                self.gallery.index = GalleryIndex(int(dim.shape[1]))
            self.gallery.videos[sha] = dict(
                path=path,
                camera=cam,
                start_time=start,
                fingerprint=fingerprint,
                settings=settings,
                tracks=keys,
                dates=covered_dates(records),
                frames_decoded=result.frames_decoded,
                frames_sampled=result.frames_sampled,
                detections=result.detections,
                short_tracks=result.short_tracks,
                problem=result.problem,
            )
            if result.problem:
                summary['problems'][path] = result.problem
            summary['tracks_added'] += len(keys)
            tick = time.perf_counter()
            self.gallery.save()
            summary['seconds']['save'] += time.perf_counter() - tick
            print_log(
                f'{path}: {len(keys)} tracks (camera {cam}; {result.frames_sampled} '
                f'of {result.frames_decoded} frames sampled, {result.detections} '
                f'detections, {result.short_tracks} tracks too short)',
                logger='current',
            )
        summary['num_tracks'] = len(self.gallery)
        return summary

    def _records(
        self, path, sha, camera, start, result
    ) -> Tuple[List[str], List[dict]]:
        os.makedirs(self.gallery.crop_dir, exist_ok=True)
        keys, records = [], []
        for track in result.tracks:
            key = f'{sha[:16]}/{track.track_id}'
            crop = f'{sha[:16]}_{track.track_id}.jpg'
            Image.fromarray(track.crops[0]).save(
                osp.join(self.gallery.crop_dir, crop), quality=92
            )
            best = int(np.argmax(track.scores))
            keys.append(key)
            records.append(
                dict(
                    video=path,
                    video_sha256=sha,
                    camera=camera,
                    track_id=int(track.track_id),
                    start=round(track.times[0], 3),
                    end=round(track.times[-1], 3),
                    start_time=wall_clock(start, track.times[0]),
                    end_time=wall_clock(start, track.times[-1]),
                    first_frame=track.frames[0] + 1,
                    last_frame=track.frames[-1] + 1,
                    best_frame=track.frames[best] + 1,
                    max_score=round(float(track.scores[best]), 4),
                    # frame (from 1), x, y, w, h, score of every observation
                    boxes=[
                        [
                            f + 1,
                            *[
                                round(v, 1)
                                for v in (b[0], b[1], b[2] - b[0], b[3] - b[1])
                            ],
                            round(s, 4),
                        ]
                        for f, b, s in zip(track.frames, track.boxes, track.scores)
                    ],
                    crop=crop,
                )
            )
        return keys, records

    def search(self, query: np.ndarray, topk: int = 10, **filters) -> List[dict]:
        """Search the tracks with a fused query vector (see
        :meth:`~tbps_mm.apis.track_gallery.TrackGallery.search` for the
        filters)."""
        return self.gallery.search(query, topk, **filters)
