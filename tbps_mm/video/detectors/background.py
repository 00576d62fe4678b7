"""A person detector for static cameras that needs no weights: OpenCV's MOG2
background subtraction, cleaned foreground blobs, person-shaped boxes.

OpenCV 5 no longer ships the HOG people detector
(``cv2.HOGDescriptor_getDefaultPeopleDetector`` is gone from the
``opencv-python`` wheels that MMEngine installs), and nothing else in the
installed stack detects people without downloading weights. Background
subtraction is the classical detector of fixed-camera video analytics, and it
ships with every OpenCV: it learns the background of each video, marks
pixels that differ, and each connected blob of the right size and shape is a
detection. Its limits are those of the method: people who stand still fade
into the background, people walking close together merge into one blob, and
a moving camera or a swaying tree gives false detections. Its accuracy on
SynthPedes videos is measured in benchmarks/video_search.py.

The score of a box is the fraction of its pixels that are foreground (a
solid blob scores high, a sparse one low).

Written on OpenCV (``createBackgroundSubtractorMOG2``, morphology,
``connectedComponentsWithStats``); only the box rules are ours.

Example:
    >>> detector = BackgroundSubtractionDetector(min_height=40)
    >>> detector.reset('cam1.mp4')
    >>> boxes, scores = detector.detect(frame)
"""

from typing import Tuple

import cv2
import numpy as np

from tbps_mm.registry import TASK_UTILS

from ..decoding import VideoFrame
from .base import BaseVideoDetector, empty_detections

__all__ = ['BackgroundSubtractionDetector']


@TASK_UTILS.register_module()
class BackgroundSubtractionDetector(BaseVideoDetector):
    """Moving people in a static camera's frames (MOG2 foreground blobs).

    Args:
        history (int): Frames the background model remembers. Defaults to 500.
        var_threshold (float): MOG2's squared-distance threshold for a pixel
            to be foreground. Defaults to 10.
        warmup (int): Frames at the start of a video that only teach the
            background (no detections). Defaults to 2.
        min_height (int): Smallest box height in pixels. Defaults to 30.
        aspect_range (tuple[float, float]): Allowed height / width of a box.
            Defaults to (1.2, 6.0).
        min_fill (float): Smallest foreground fraction of a box. Defaults
            to 0.25.
        kernel (int): Size of the morphological opening / closing that
            removes speckle and joins a person's parts. Defaults to 3.

    The defaults were chosen on a validation SynthPedes video set (seed 200,
    not one the benchmark reports on); see docs/benchmarks.md.

    Example:
        >>> detector = TASK_UTILS.build(
        ...     dict(type='BackgroundSubtractionDetector', min_height=40))
    """

    def __init__(
        self,
        history: int = 500,
        var_threshold: float = 10.0,
        warmup: int = 2,
        min_height: int = 30,
        aspect_range: Tuple[float, float] = (1.2, 6.0),
        min_fill: float = 0.25,
        kernel: int = 3,
    ) -> None:
        if min_height < 1 or kernel < 1 or history < 1 or warmup < 0:
            raise ValueError(
                'history, min_height and kernel must be >= 1 and warmup >= 0'
            )
        self.history = int(history)
        self.var_threshold = float(var_threshold)
        self.warmup = int(warmup)
        self.min_height = int(min_height)
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.min_fill = float(min_fill)
        self.kernel = int(kernel)
        self._subtractor = None
        self._seen = 0

    def reset(self, video_path: str) -> None:
        self._subtractor = cv2.createBackgroundSubtractorMOG2(
            history=self.history, varThreshold=self.var_threshold, detectShadows=False
        )
        self._seen = 0

    def detect(self, frame: VideoFrame) -> Tuple[np.ndarray, np.ndarray]:
        if self._subtractor is None:
            self.reset('')
        foreground = self._subtractor.apply(frame.image)
        self._seen += 1
        if self._seen <= self.warmup:
            return empty_detections()
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (self.kernel,) * 2)
        mask = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, element)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, element, iterations=2)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(
            (mask > 0).astype(np.uint8), connectivity=8
        )
        boxes, scores = [], []
        low, high = self.aspect_range
        for label in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[label])
            if h < self.min_height or not low <= h / max(w, 1) <= high:
                continue
            fill = area / float(w * h)
            if fill < self.min_fill:
                continue
            boxes.append((x, y, x + w, y + h))
            scores.append(min(1.0, fill))
        if not boxes:
            return empty_detections()
        return np.asarray(boxes, np.float32), np.asarray(scores, np.float32)

    def settings(self) -> dict:
        return dict(
            type=type(self).__name__,
            history=self.history,
            var_threshold=self.var_threshold,
            warmup=self.warmup,
            min_height=self.min_height,
            aspect_range=list(self.aspect_range),
            min_fill=self.min_fill,
            kernel=self.kernel,
        )
