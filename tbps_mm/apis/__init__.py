"""High-level APIs: index image folders and search them with text."""

from tbps_mm.index import (
    CorruptIndexError,
    GalleryIndex,
    GalleryIndexError,
    IndexMismatchError,
    NotAnIndexError,
)

from .inferencer import DEFAULT_INDEX_NAME, IMAGE_EXTENSIONS, TBPSInferencer

__all__ = [
    'CorruptIndexError',
    'DEFAULT_INDEX_NAME',
    'GalleryIndex',
    'GalleryIndexError',
    'IMAGE_EXTENSIONS',
    'IndexMismatchError',
    'NotAnIndexError',
    'TBPSInferencer',
]
