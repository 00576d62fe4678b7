"""The interface every video person detector implements.

A detector sees the frames of one video in order: :meth:`reset` is called
with the video's path before its first frame (so that a detector can load
per-video data or clear its state), then :meth:`detect` once per sampled
frame. Boxes are ``(N, 4)`` float32 ``x1, y1, x2, y2`` pixels of the frame,
scores ``(N,)`` float32 in [0, 1].

Example:
    >>> detector = TASK_UTILS.build(dict(type='MOTDetectionsFile',
    ...                                  det_dir='dets/'))
    >>> detector.reset('videos/cam1.mp4')
    >>> boxes, scores = detector.detect(frame)
"""

from abc import ABC, abstractmethod
from typing import Tuple

import numpy as np

from ..decoding import VideoFrame

__all__ = ['BaseVideoDetector', 'empty_detections']


def empty_detections() -> Tuple[np.ndarray, np.ndarray]:
    """No detections: ``(0, 4)`` boxes and ``(0,)`` scores (float32)."""
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)


class BaseVideoDetector(ABC):
    """Base class of the registered video person detectors."""

    def reset(self, video_path: str) -> None:
        """Start a new video.

        Args:
            video_path (str): The video about to be decoded.
        """
        # Stateless detectors have nothing to reset; stateful ones (the
        # background model) override this.
        return None

    @abstractmethod
    def detect(self, frame: VideoFrame) -> Tuple[np.ndarray, np.ndarray]:
        """Detect people in one frame.

        Args:
            frame (VideoFrame): The decoded frame (index, time, RGB image).

        Returns:
            tuple[np.ndarray, np.ndarray]: ``(N, 4)`` xyxy boxes and ``(N,)``
            scores, float32.
        """

    def settings(self) -> dict:
        """What decides this detector's output (part of an ingestion's
        fingerprint: other settings re-index a video)."""
        return dict(type=type(self).__name__)
