"""Video person detectors, registered in ``tbps_mm.registry.TASK_UTILS``:
detections from MOTChallenge-style files (:class:`MOTDetectionsFile`), a
weight-free background-subtraction detector for static cameras
(:class:`BackgroundSubtractionDetector`) and a user's torchvision model
(:class:`TorchvisionDetector`)."""

from .background import BackgroundSubtractionDetector
from .base import BaseVideoDetector, empty_detections
from .mot_file import MOTDetectionsFile, MOTFileError, read_mot_detections
from .torchvision_detector import TorchvisionDetector

__all__ = [
    'BackgroundSubtractionDetector',
    'BaseVideoDetector',
    'MOTDetectionsFile',
    'MOTFileError',
    'TorchvisionDetector',
    'empty_detections',
    'read_mot_detections',
]
