"""The tracker adapter: ByteTrack from Roboflow's ``trackers`` library.

``supervision`` 0.26+ moved its ByteTrack into the ``trackers`` package
(``trackers.ByteTrackTracker``, which takes and returns
``supervision.Detections``); this adapter feeds it a frame's boxes and
scores and returns one track id per box (-1 for a box that belongs to no
confirmed track yet). It holds no tracking logic of its own.

Example:
    >>> tracker = TASK_UTILS.build(dict(type='ByteTrackAdapter'))
    >>> tracker.reset(frame_rate=5.0)
    >>> ids = tracker.update(boxes, scores)
"""

from typing import Optional

import numpy as np

from tbps_mm.registry import TASK_UTILS

__all__ = ['ByteTrackAdapter']


@TASK_UTILS.register_module()
class ByteTrackAdapter:
    """ByteTrack (``trackers.ByteTrackTracker``) behind tbps_mm's tracker
    interface: :meth:`reset` per video, :meth:`update` per sampled frame.

    Args:
        lost_track_buffer (int): How long a lost track may be re-found, in
            frames at 30 fps (the library scales it to ``frame_rate``).
            Defaults to 30.
        track_activation_threshold (float): Smallest score that starts a
            track. Defaults to 0.5.
        minimum_consecutive_frames (int): Matched frames before a track is
            confirmed (and gets an id). Defaults to 2.
        minimum_iou_threshold (float): Smallest IoU of a match. Defaults
            to 0.1.
        high_conf_det_threshold (float): Score that splits ByteTrack's
            first (high) and second (low) association stage. Defaults to 0.6.

    Example:
        >>> tracker = ByteTrackAdapter(minimum_consecutive_frames=1)
    """

    def __init__(
        self,
        lost_track_buffer: int = 30,
        track_activation_threshold: float = 0.5,
        minimum_consecutive_frames: int = 2,
        minimum_iou_threshold: float = 0.1,
        high_conf_det_threshold: float = 0.6,
    ) -> None:
        self.kwargs = dict(
            lost_track_buffer=int(lost_track_buffer),
            track_activation_threshold=float(track_activation_threshold),
            minimum_consecutive_frames=int(minimum_consecutive_frames),
            minimum_iou_threshold=float(minimum_iou_threshold),
            high_conf_det_threshold=float(high_conf_det_threshold),
        )
        self._tracker = None

    def reset(self, frame_rate: float) -> None:
        """Start a new video whose frames arrive at ``frame_rate`` per second.

        Args:
            frame_rate (float): The sampled frame rate.
        """
        from trackers import ByteTrackTracker

        self._tracker = ByteTrackTracker(frame_rate=float(frame_rate), **self.kwargs)

    def update(
        self, boxes: np.ndarray, scores: np.ndarray, frame: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Associate one frame's detections with the tracks.

        Args:
            boxes (np.ndarray): (N, 4) xyxy boxes.
            scores (np.ndarray): (N,) scores.
            frame (np.ndarray, optional): The frame (unused by ByteTrack).

        Returns:
            np.ndarray: (N,) int64 track id of each box, -1 where the box is
            in no confirmed track.
        """
        import supervision as sv

        if self._tracker is None:
            raise RuntimeError('call reset(frame_rate) before update()')
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        detections = sv.Detections(
            xyxy=boxes,
            confidence=scores,
            class_id=np.zeros(len(boxes), dtype=int),
            data={'row': np.arange(len(boxes))},
        )
        out = self._tracker.update(detections)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        if len(out) and out.tracker_id is not None:
            rows = out.data.get('row', np.arange(len(out)))
            ids[np.asarray(rows, dtype=int)] = np.asarray(
                out.tracker_id, dtype=np.int64
            )
        return ids

    def settings(self) -> dict:
        """What decides the tracks (part of an ingestion's fingerprint)."""
        return dict(type=type(self).__name__, **self.kwargs)
