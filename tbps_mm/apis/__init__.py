"""High-level APIs: build a model, encode images and captions into fused
vectors, index image folders and videos and search them with text."""

from tbps_mm.index import (
    CorruptIndexError,
    GalleryIndex,
    GalleryIndexError,
    IndexMismatchError,
    NotAnIndexError,
)

from .encoding_cache import EncodingCache
from .fused_encoder import BACKENDS, FusedEncoder, find_test_pipeline
from .image_folders import IMAGE_EXTENSIONS, FolderListing, list_image_folders
from .inferencer import DEFAULT_INDEX_NAME, TBPSInferencer, format_index_summary
from .model import init_model, read_config
from .track_gallery import TrackGallery, TrackGalleryError, insert_tracks
from .video_indexer import (
    DEFAULT_VIDEO_INGEST,
    VIDEO_EXTENSIONS,
    VideoIndexer,
    list_videos,
    read_manifest,
    track_encoders,
)

__all__ = [
    'BACKENDS',
    'CorruptIndexError',
    'DEFAULT_INDEX_NAME',
    'DEFAULT_VIDEO_INGEST',
    'EncodingCache',
    'FolderListing',
    'FusedEncoder',
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
    'find_test_pipeline',
    'format_index_summary',
    'init_model',
    'insert_tracks',
    'list_image_folders',
    'list_videos',
    'read_config',
    'read_manifest',
    'track_encoders',
]
