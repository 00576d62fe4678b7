"""From a video file to its tracks and their vectors.

:class:`VideoTrackPipeline` decodes a video (PyAV), samples frames at
``sample_fps``, runs the configured detector and tracker (registered in
``tbps_mm.registry.TASK_UTILS``) on each sampled frame, keeps each track's
best crops, and encodes them with the ``encode_crops`` callable it is given
(``list of (H, W, 3) uint8 RGB crops -> (N, D) fused vectors``; any encoder
fits). Each track becomes one vector: the pooled mean of its best crops'
vectors (:func:`~tbps_mm.video.tracks.pool_track_vectors`). It times every
stage, so that ingest speed and where it goes can be measured.

Written by hand (orchestration); decoding with PyAV, detection and tracking
by the configured components.

Example:
    >>> pipeline = VideoTrackPipeline(
    ...     detector=dict(type='BackgroundSubtractionDetector'),
    ...     tracker=dict(type='ByteTrackAdapter'), sample_fps=5)
    >>> result = pipeline.run('cam1.mp4', encode_crops)
    >>> len(result.tracks), result.vectors.shape
"""

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from tbps_mm.registry import TASK_UTILS

from .decoding import VideoFrameReader
from .tracks import Track, TrackAccumulator, pool_track_vectors

__all__ = ['VideoTrackPipeline', 'VideoTracks', 'STAGES']

#: The timed stages, in order.
STAGES = ('decode', 'detect', 'track', 'crop', 'encode')

EncodeCrops = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass
class VideoTracks:
    """The result of one video.

    Attributes:
        tracks (list[Track]): Kept tracks (with their best crops).
        vectors (np.ndarray): (T, D) float32 pooled vector of each track.
        info (dict): :func:`~tbps_mm.video.decoding.probe_video`'s facts.
        frames_decoded (int): Frames decoded.
        frames_sampled (int): Frames run through detection and tracking.
        detections (int): Boxes the detector returned.
        short_tracks (int): Tracks dropped for having fewer than
            ``min_detections`` observations.
        problem (str | None): Why decoding stopped early, if it did.
        seconds (dict[str, float]): Wall-clock seconds per stage.
    """

    tracks: List[Track]
    vectors: np.ndarray
    info: dict
    frames_decoded: int = 0
    frames_sampled: int = 0
    detections: int = 0
    short_tracks: int = 0
    problem: Optional[str] = None
    seconds: Dict[str, float] = field(default_factory=dict)


def _build(component: Union[dict, object]):
    return TASK_UTILS.build(component) if isinstance(component, dict) else component


class VideoTrackPipeline:
    """Decode, sample, detect, track, crop and encode one video at a time.

    Args:
        detector (dict | BaseVideoDetector): The detector or its config.
        tracker (dict | ByteTrackAdapter): The tracker adapter or its config.
        sample_fps (float, optional): Frames per second run through the
            detector (None: every frame). Defaults to 5.
        crops_per_track (int): Best crops encoded per track. Defaults to 8.
        min_detections (int): Tracks with fewer observations are dropped.
            Defaults to 3.
        strict_decoding (bool): A video that stops decoding part-way is an
            error instead of a warning. Defaults to False.
        encode_batch (int): Crops per ``encode_crops`` call. Defaults to 64.

    Example:
        >>> VideoTrackPipeline(dict(type='MOTDetectionsFile', det_dir='dets'),
        ...                    dict(type='ByteTrackAdapter'))
    """

    def __init__(
        self,
        detector: Union[dict, object],
        tracker: Union[dict, object],
        sample_fps: Optional[float] = 5.0,
        crops_per_track: int = 8,
        min_detections: int = 3,
        strict_decoding: bool = False,
        encode_batch: int = 64,
    ) -> None:
        if sample_fps is not None and not sample_fps > 0:
            raise ValueError(f'sample_fps must be > 0 or None, got {sample_fps}')
        if min_detections < 1:
            raise ValueError(f'min_detections must be >= 1, got {min_detections}')
        self.detector = _build(detector)
        self.tracker = _build(tracker)
        self.sample_fps = sample_fps
        self.crops_per_track = int(crops_per_track)
        self.min_detections = int(min_detections)
        self.strict_decoding = bool(strict_decoding)
        self.encode_batch = int(encode_batch)

    def settings(self) -> dict:
        """Everything that decides the tracks and their vectors, apart from
        the encoder (part of a video's ingestion fingerprint)."""
        return dict(
            detector=self.detector.settings(),
            tracker=self.tracker.settings(),
            sample_fps=self.sample_fps,
            crops_per_track=self.crops_per_track,
            min_detections=self.min_detections,
            crop='synthpedes-128x48-0.875',
        )

    def prepare(self, video_path: str) -> None:
        """Reset the detector for ``video_path`` (a detector reading a
        per-video file reads it here, so its settings name its content)."""
        self.detector.reset(video_path)

    def run(
        self,
        video_path: str,
        encode_crops: EncodeCrops,
        prepared: bool = False,
    ) -> VideoTracks:
        """Process one video.

        Args:
            video_path (str): The video file.
            encode_crops (Callable): ``list of (H, W, 3) uint8 RGB crops ->
                (N, D)`` fused vectors.
            prepared (bool): :meth:`prepare` was already called for this
                video. Defaults to False.

        Returns:
            VideoTracks: The tracks, their vectors and the stage timings.

        Raises:
            FileNotFoundError: The video (or a detections file) is missing.
            VideoDecodeError: The video cannot be decoded (named).
        """
        seconds = {stage: 0.0 for stage in STAGES}
        reader = VideoFrameReader(video_path, self.sample_fps, self.strict_decoding)
        if not prepared:
            self.prepare(video_path)
        info = reader.info
        rate = self.sample_fps if self.sample_fps is not None else info['fps']
        rate = min(rate, info['fps']) if info['fps'] else rate
        self.tracker.reset(frame_rate=rate or 1.0)
        accumulator = TrackAccumulator(self.crops_per_track)
        sampled = detections = 0
        frames = iter(reader)
        while True:
            start = time.perf_counter()
            frame = next(frames, None)
            seconds['decode'] += time.perf_counter() - start
            if frame is None:
                break
            sampled += 1
            start = time.perf_counter()
            boxes, scores = self.detector.detect(frame)
            seconds['detect'] += time.perf_counter() - start
            detections += len(boxes)
            start = time.perf_counter()
            ids = self.tracker.update(boxes, scores, frame.image)
            seconds['track'] += time.perf_counter() - start
            start = time.perf_counter()
            accumulator.add(frame, boxes, scores, ids)
            seconds['crop'] += time.perf_counter() - start
        tracks = accumulator.finish(self.min_detections)
        start = time.perf_counter()
        vectors = self._encode(tracks, encode_crops)
        seconds['encode'] += time.perf_counter() - start
        return VideoTracks(
            tracks=tracks,
            vectors=vectors,
            info=info,
            frames_decoded=reader.decoded,
            frames_sampled=sampled,
            detections=detections,
            short_tracks=accumulator.num_tracks - len(tracks),
            problem=reader.problem,
            seconds=seconds,
        )

    def _encode(self, tracks: List[Track], encode_crops: EncodeCrops) -> np.ndarray:
        crops = [c for t in tracks for c in t.crops]
        if not crops:
            return np.zeros((0, 0), np.float32)
        chunks = []
        for start in range(0, len(crops), self.encode_batch):
            batch = encode_crops(crops[start : start + self.encode_batch])
            batch = np.asarray(batch, dtype=np.float32)
            if batch.ndim != 2 or len(batch) != len(
                crops[start : start + self.encode_batch]
            ):
                raise ValueError(
                    f'encode_crops returned shape {batch.shape} for '
                    f'{len(crops[start : start + self.encode_batch])} crops; '
                    'expected (N, D)'
                )
            chunks.append(batch)
        vectors = np.concatenate(chunks)
        pooled, offset = [], 0
        for track in tracks:
            pooled.append(
                pool_track_vectors(vectors[offset : offset + len(track.crops)])
            )
            offset += len(track.crops)
        return np.stack(pooled)
