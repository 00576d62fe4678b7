"""Detections read from MOTChallenge-style files: any detector's export.

This is the documented route for real footage: run whatever person detector
you trust (a hosted model, an NVR's analytics, a YOLO export) and write one
text file per video, one row per detection::

    frame,id,x,y,w,h,score[,...]

``frame`` counts the video's frames from 1, ``id`` is ignored (write -1),
``x, y, w, h`` is the box's top-left corner and size in pixels and
``score`` the detector's confidence in [0, 1]; further columns (the
MOTChallenge ``x, y, z`` world coordinates or a class) are ignored. Rows may
also be separated by whitespace. A bad row is an error naming the file, the
row number and the field.

Written by hand (a ten-line format; numpy parses nothing this strict).

Example:
    >>> detector = MOTDetectionsFile(det_dir='dets/')  # dets/cam1.txt
    >>> detector.reset('videos/cam1.mp4')
"""

import hashlib
import math
import os.path as osp
from typing import Dict, Optional, Tuple

import numpy as np

from tbps_mm.registry import TASK_UTILS

from ..decoding import VideoFrame
from .base import BaseVideoDetector, empty_detections

__all__ = ['MOTDetectionsFile', 'MOTFileError', 'read_mot_detections']

_FIELDS = ('frame', 'id', 'x', 'y', 'w', 'h', 'score')


class MOTFileError(ValueError):
    """A malformed detections file (the message names file, row and field)."""


def read_mot_detections(
    path: str,
) -> Dict[int, Tuple[np.ndarray, np.ndarray]]:
    """Parse a MOTChallenge-style detections file.

    Args:
        path (str): The file.

    Returns:
        dict[int, tuple]: frame number (from 1) -> ``(N, 4)`` xyxy boxes and
        ``(N,)`` scores, float32.

    Raises:
        FileNotFoundError: No such file.
        MOTFileError: A row with fewer than 7 fields, a field that is not a
            number, a frame number below 1 or not whole, a width or height
            that is not positive, or a score outside [0, 1] (file, row and
            field named).

    Example:
        >>> dets = read_mot_detections('dets/cam1.txt')
        >>> boxes, scores = dets[1]
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'detections file "{path}" does not exist')
    rows: Dict[int, list] = {}
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text or text.startswith('#'):
                continue
            parts = [p for p in text.replace(',', ' ').split()]
            if len(parts) < len(_FIELDS):
                raise MOTFileError(
                    f'{path}, row {number}: {len(parts)} fields, expected at least '
                    f'{len(_FIELDS)} ({",".join(_FIELDS)}): {text!r}'
                )
            values = {}
            for name, raw in zip(_FIELDS, parts):
                try:
                    value = float(raw)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise MOTFileError(
                        f'{path}, row {number}, field "{name}": not a finite '
                        f'number: {raw!r}'
                    )
                values[name] = value
            frame = values['frame']
            if frame < 1 or frame != int(frame):
                raise MOTFileError(
                    f'{path}, row {number}, field "frame": must be a whole number '
                    f'>= 1 (frames count from 1), got {parts[0]!r}'
                )
            for name in ('w', 'h'):
                if values[name] <= 0:
                    raise MOTFileError(
                        f'{path}, row {number}, field "{name}": must be > 0, got '
                        f'{parts[_FIELDS.index(name)]!r}'
                    )
            if not 0.0 <= values['score'] <= 1.0:
                raise MOTFileError(
                    f'{path}, row {number}, field "score": must be in [0, 1], got '
                    f'{parts[6]!r}'
                )
            x, y = values['x'], values['y']
            rows.setdefault(int(frame), []).append(
                (x, y, x + values['w'], y + values['h'], values['score'])
            )
    out = {}
    for frame, items in rows.items():
        arr = np.asarray(items, dtype=np.float32)
        out[frame] = (arr[:, :4], arr[:, 4])
    return out


@TASK_UTILS.register_module()
class MOTDetectionsFile(BaseVideoDetector):
    """Detections of each video from ``{det_dir}/{video stem}{suffix}``.

    Args:
        det_dir (str, optional): Folder of the detection files. None: the
            file sits beside the video (``cam1.mp4`` -> ``cam1.txt``).
        suffix (str): File name ending. Defaults to ``'.txt'``.
        min_score (float): Drop detections scored below this. Defaults to 0.

    Example:
        >>> detector = MOTDetectionsFile('dets/', min_score=0.3)
        >>> detector.reset('videos/cam1.mp4')  # reads dets/cam1.txt
    """

    def __init__(
        self,
        det_dir: Optional[str] = None,
        suffix: str = '.txt',
        min_score: float = 0.0,
    ) -> None:
        self.det_dir = det_dir
        self.suffix = suffix
        self.min_score = float(min_score)
        self._frames: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}
        self.path: Optional[str] = None

    def file_for(self, video_path: str) -> str:
        """The detections file of ``video_path``."""
        stem = osp.splitext(osp.basename(video_path))[0]
        folder = self.det_dir if self.det_dir is not None else osp.dirname(video_path)
        return osp.join(folder, stem + self.suffix)

    def reset(self, video_path: str) -> None:
        self.path = self.file_for(video_path)
        self._frames = read_mot_detections(self.path)
        with open(self.path, 'rb') as f:
            self._sha256 = hashlib.sha256(f.read()).hexdigest()

    def detect(self, frame: VideoFrame) -> Tuple[np.ndarray, np.ndarray]:
        boxes, scores = self._frames.get(frame.index + 1, empty_detections())
        keep = scores >= self.min_score
        return boxes[keep], scores[keep]

    def settings(self) -> dict:
        # the file's content: an edited detections file re-indexes the video
        return dict(
            type=type(self).__name__,
            min_score=self.min_score,
            file_sha256=getattr(self, '_sha256', None),
        )
