"""Tracks of one video: their observations, their best crops, their vector.

:class:`TrackAccumulator` collects, frame by frame, the boxes the tracker
put in each track and keeps each track's ``crops_per_track`` best person
crops (ranked by detection score x box height, halved for boxes that touch
the frame edge, where the person is usually cut off). :func:`person_crop`
cuts a crop the way SynthPedes crops are framed (the person about 87 % of
the crop height, 128 x 48, the aspect of the image dataset), so that the
model sees what it was trained on. :func:`pool_track_vectors` turns the
crops' fused vectors into the track's one gallery vector.

Written by hand (bookkeeping); crops with OpenCV.

Example:
    >>> acc = TrackAccumulator(crops_per_track=8)
    >>> acc.add(frame, boxes, scores, track_ids)
    >>> tracks = acc.finish(min_detections=3)
"""

import heapq
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .decoding import VideoFrame

__all__ = ['Track', 'TrackAccumulator', 'person_crop', 'pool_track_vectors']

#: Crop size (H, W) and person height / crop height of SynthPedes crops.
CROP_SIZE = (128, 48)
CROP_MARGIN = 0.875


def person_crop(
    image: np.ndarray,
    box,
    size: Tuple[int, int] = CROP_SIZE,
    margin: float = CROP_MARGIN,
) -> np.ndarray:
    """Cut a person crop around ``box``, framed like a SynthPedes crop.

    The crop is centred on the box, ``box height / margin`` tall and of the
    aspect of ``size``; parts outside the frame are filled by repeating the
    edge pixels. It is resized to ``size``.

    Args:
        image (np.ndarray): (H, W, 3) uint8 frame.
        box (Sequence[float]): x1, y1, x2, y2.
        size (tuple[int, int]): Output (height, width). Defaults to (128, 48).
        margin (float): Box height / crop height. Defaults to 0.875.

    Returns:
        np.ndarray: (size[0], size[1], 3) uint8.

    Example:
        >>> person_crop(np.zeros((180, 320, 3), np.uint8), (10, 20, 40, 100)).shape
        (128, 48, 3)
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    height = max(2.0, (y2 - y1) / margin, (x2 - x1) / margin * size[0] / size[1])
    width = height * size[1] / size[0]
    left, top = int(round(cx - width / 2)), int(round(cy - height / 2))
    right, bottom = left + max(1, int(round(width))), top + max(1, int(round(height)))
    h, w = image.shape[:2]
    pad = (max(0, -top), max(0, bottom - h), max(0, -left), max(0, right - w))
    sub = image[max(0, top) : min(h, bottom), max(0, left) : min(w, right)]
    if sub.size == 0:
        sub = np.zeros((1, 1, 3), np.uint8)
    elif any(pad):
        sub = cv2.copyMakeBorder(sub, *pad, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(sub, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def pool_track_vectors(vectors: np.ndarray) -> np.ndarray:
    """One vector for a track from its crops' fused vectors.

    The mean of the crops' vectors, L2-normalised and rescaled to the crops'
    mean norm (a fused vector's norm is fixed by the model's fusion weight),
    so that a track scores on the same scale as a single image.

    Args:
        vectors (np.ndarray): (N, D) fused vectors of the track's crops.

    Returns:
        np.ndarray: (D,) float32.

    Example:
        >>> v = pool_track_vectors(np.eye(2, dtype=np.float32))
        >>> float(np.linalg.norm(v))
        1.0
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or not len(vectors):
        raise ValueError(f'need (N, D) vectors with N >= 1, got {vectors.shape}')
    mean = vectors.mean(0)
    norm = float(np.linalg.norm(mean))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError('the crops of a track have vectors that cancel out')
    scale = float(np.linalg.norm(vectors, axis=1).mean())
    return (mean / norm * scale).astype(np.float32)


@dataclass
class Track:
    """One track of one video.

    Attributes:
        track_id (int): The tracker's id.
        frames (list[int]): Decoded frame index of each observation.
        times (list[float]): Seconds from the video start of each.
        boxes (list[list[float]]): xyxy box of each.
        scores (list[float]): Detection score of each.
        crops (list[np.ndarray]): The best crops, best first.
        crop_quality (list[float]): Their ranking values.
    """

    track_id: int
    frames: List[int] = field(default_factory=list)
    times: List[float] = field(default_factory=list)
    boxes: List[List[float]] = field(default_factory=list)
    scores: List[float] = field(default_factory=list)
    crops: List[np.ndarray] = field(default_factory=list)
    crop_quality: List[float] = field(default_factory=list)


class TrackAccumulator:
    """Collect a video's tracks and their best crops.

    Args:
        crops_per_track (int): Crops kept per track. Defaults to 8.

    Example:
        >>> acc = TrackAccumulator(4)
    """

    def __init__(self, crops_per_track: int = 8) -> None:
        if crops_per_track < 1:
            raise ValueError(f'crops_per_track must be >= 1, got {crops_per_track}')
        self.crops_per_track = int(crops_per_track)
        self._tracks: Dict[int, Track] = {}
        # per track: a min-heap of (quality, order, crop) of the best crops
        self._heaps: Dict[int, list] = {}
        self._order = 0

    def add(
        self,
        frame: VideoFrame,
        boxes: np.ndarray,
        scores: np.ndarray,
        track_ids: np.ndarray,
    ) -> None:
        """Record one frame's tracked boxes (boxes with id -1 are ignored)."""
        h, w = frame.image.shape[:2]
        for box, score, tid in zip(boxes, scores, track_ids):
            tid = int(tid)
            if tid < 0:
                continue
            track = self._tracks.setdefault(tid, Track(tid))
            x1, y1, x2, y2 = (float(v) for v in box)
            track.frames.append(int(frame.index))
            track.times.append(float(frame.time))
            track.boxes.append([x1, y1, x2, y2])
            track.scores.append(float(score))
            touches = x1 <= 1 or y1 <= 1 or x2 >= w - 1 or y2 >= h - 1
            quality = float(score) * min(y2 - y1, 2.0 * CROP_SIZE[0] * CROP_MARGIN)
            quality *= 0.5 if touches else 1.0
            heap = self._heaps.setdefault(tid, [])
            self._order += 1
            key = (quality, -self._order)  # ties: the earlier crop wins
            if len(heap) < self.crops_per_track:
                heapq.heappush(heap, (*key, person_crop(frame.image, box)))
            elif key > heap[0][:2]:
                heapq.heapreplace(heap, (*key, person_crop(frame.image, box)))

    def finish(self, min_detections: int = 3) -> List[Track]:
        """The tracks with at least ``min_detections`` observations, by id.

        Args:
            min_detections (int): Shorter tracks are dropped (and counted by
                the caller). Defaults to 3.

        Returns:
            list[Track]: With their crops, best first.
        """
        out = []
        for tid in sorted(self._tracks):
            track = self._tracks[tid]
            if len(track.frames) < min_detections:
                continue
            best = sorted(self._heaps[tid], key=lambda t: (-t[0], -t[1]))
            track.crops = [c for _, _, c in best]
            track.crop_quality = [q for q, _, _ in best]
            out.append(track)
        return out

    @property
    def num_tracks(self) -> int:
        """Tracks seen so far, whatever their length."""
        return len(self._tracks)
