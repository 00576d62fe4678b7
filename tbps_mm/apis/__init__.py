"""High-level APIs: index an image folder and search it with text."""

from .inferencer import DEFAULT_INDEX_NAME, IMAGE_EXTENSIONS, TBPSInferencer

__all__ = ['TBPSInferencer', 'IMAGE_EXTENSIONS', 'DEFAULT_INDEX_NAME']
