"""Gallery indexes: vectors, keys and metadata of searchable images.

Floor 1 of the package: it depends on numpy, FAISS and the standard library
(SQLite) only, never on torch or MMPretrain, so a search service can import
it without the model stack (``import tbps_mm.index`` does not register the
model components; see ``tbps_mm/__init__.py``).

* :class:`GalleryIndex`: keyed vectors with metadata, searched by inner
  product, saved safely (``gallery_index.py``).
* :class:`IndexBackend`: what a vector store provides (``backend.py``);
  :class:`FaissBackend` (in-process FAISS) and ``MilvusBackend`` (Milvus
  Lite or a Milvus server; needs the ``milvus`` extra).
* :class:`MetadataStore`: ids -> keys and metadata, in SQLite.
* :class:`SearchFilter`: the filter spec (cameras, sources, time window,
  minimum score).
* :class:`VectorFile`: float16 vectors on disk for exact re-scoring.
"""

from .backend import IndexBackend
from .faiss_backend import FaissBackend, default_nlist, default_rank
from .gallery_index import (
    AUTO_FLAT_MAX,
    BACKENDS,
    INDEX_TYPES,
    MIN_TRAIN_PER_LIST,
    CorruptIndexError,
    GalleryIndex,
    GalleryIndexError,
    IndexMismatchError,
    NotAnIndexError,
)
from .metadata_store import MetadataStore
from .search_filter import SearchFilter
from .vector_file import VectorFile

__all__ = [
    'AUTO_FLAT_MAX',
    'BACKENDS',
    'CorruptIndexError',
    'FaissBackend',
    'GalleryIndex',
    'GalleryIndexError',
    'INDEX_TYPES',
    'IndexBackend',
    'IndexMismatchError',
    'MIN_TRAIN_PER_LIST',
    'MetadataStore',
    'NotAnIndexError',
    'SearchFilter',
    'VectorFile',
    'default_nlist',
    'default_rank',
]
