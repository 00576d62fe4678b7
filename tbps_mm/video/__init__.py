"""Person search in videos: decoding, detection, tracking and per-track vectors.

Importing this package registers the video person detectors and the tracker
adapter in ``tbps_mm.registry.TASK_UTILS``. The pieces:

- :mod:`.decoding`: PyAV frames at a sampling rate, clear errors;
- :mod:`.detectors`: MOTChallenge-style detection files, a weight-free
  background-subtraction detector, a user's torchvision model;
- :mod:`.tracker`: ByteTrack (``trackers`` library) behind an adapter;
- :mod:`.tracks`: per-track crops and the pooled track vector;
- :mod:`.pipeline`: one video to its tracks and vectors, timed by stage.

Detection AP and IDF1 / MOTA are in
:mod:`tbps_mm.evaluation.video_metrics`; the SynthPedes video set in
:mod:`tbps_mm.datasets.synthpedes.video`.
"""

from .decoding import VideoDecodeError, VideoFrame, VideoFrameReader, probe_video
from .detectors import (
    BackgroundSubtractionDetector,
    BaseVideoDetector,
    MOTDetectionsFile,
    MOTFileError,
    TorchvisionDetector,
    read_mot_detections,
)
from .pipeline import STAGES, VideoTrackPipeline, VideoTracks
from .tracker import ByteTrackAdapter
from .tracks import Track, TrackAccumulator, person_crop, pool_track_vectors

__all__ = [
    'BackgroundSubtractionDetector',
    'BaseVideoDetector',
    'ByteTrackAdapter',
    'MOTDetectionsFile',
    'MOTFileError',
    'STAGES',
    'TorchvisionDetector',
    'Track',
    'TrackAccumulator',
    'VideoDecodeError',
    'VideoFrame',
    'VideoFrameReader',
    'VideoTrackPipeline',
    'VideoTracks',
    'person_crop',
    'pool_track_vectors',
    'probe_video',
    'read_mot_detections',
]
