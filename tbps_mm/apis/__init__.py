"""High-level APIs: index image folders and videos, search them with text."""

from .gallery_index import (
    CorruptIndexError,
    GalleryIndex,
    GalleryIndexError,
    IndexMismatchError,
    NotAnIndexError,
)
from .inferencer import DEFAULT_INDEX_NAME, IMAGE_EXTENSIONS, TBPSInferencer
from .track_gallery import TrackGallery, TrackGalleryError, insert_tracks
from .video_indexer import (
    DEFAULT_VIDEO_INGEST,
    VIDEO_EXTENSIONS,
    VideoIndexer,
    inferencer_encoders,
    list_videos,
    read_manifest,
)

__all__ = [
    'CorruptIndexError',
    'DEFAULT_VIDEO_INGEST',
    'DEFAULT_INDEX_NAME',
    'GalleryIndex',
    'GalleryIndexError',
    'IMAGE_EXTENSIONS',
    'IndexMismatchError',
    'NotAnIndexError',
    'TBPSInferencer',
    'TrackGallery',
    'TrackGalleryError',
    'VIDEO_EXTENSIONS',
    'VideoIndexer',
    'inferencer_encoders',
    'insert_tracks',
    'list_videos',
    'read_manifest',
]
