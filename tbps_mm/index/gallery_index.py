"""``GalleryIndex``: the searchable, persistent store of a gallery's vectors.

It owns everything between "one vector per image" and "the top-k keys of a
query": a vector backend (:class:`~tbps_mm.index.backend.IndexBackend`:
in-process FAISS, or Milvus) holding the images' fused vectors under integer
ids (:func:`tbps_mm.fused_score.fused_vector`, whose inner product with a
caption's fused vector is the model's test-time score), a SQLite
:class:`~tbps_mm.index.metadata_store.MetadataStore` mapping each id to its
key (image path) and metadata (camera, time, source, extra), filters on that
metadata (:class:`~tbps_mm.index.search_filter.SearchFilter`), incremental
``add`` / ``remove``, and a versioned, checksummed on-disk format. It knows
nothing about models or images: the inferencer encodes, this class stores
and searches. Searching costs the backend's search plus ``k`` key lookups,
whatever the gallery size.

Index types (``index_type``; see :mod:`tbps_mm.index.faiss_backend`):
``'flat'`` (exact), ``'ivf-sq8'``, ``'pca-ivf-sq8'`` (a learned projection
to ``rank`` dimensions, then IVF-SQ8), ``'two-stage'`` (``'pca-ivf-sq8'``
candidates re-scored exactly from float16 vectors on disk) and ``'auto'``:
``'flat'`` while the gallery holds fewer than :data:`AUTO_FLAT_MAX` vectors;
past that, the next :meth:`add` converts the index to ``'two-stage'``,
trained on the vectors the flat index holds plus the new ones
(``expected_size`` makes the choice up front). The IVF types measure
``nprobe`` for ``target_recall`` when trained (overridable).

Incremental updates: ``add`` appends vectors under new ids and retrains
nothing; ``remove`` deletes ids. For ``'flat'`` the result is the index a
rebuild from the same (key, vector) pairs gives (same scores, same ranking
ties aside). For the IVF types the trained state (projection, centroids,
quantiser ranges, nprobe) is kept, so the result equals a rebuild that
reuses it (:meth:`empty_like` then ``add``): every vector sits in the same
cell with the same code, and searches return the same scores.

On disk (:meth:`save`, :meth:`load`) an index is one file plus sidecar
files next to it, named after it::

    gallery.idx                   preamble, backend payload, manifest
    gallery.idx.<token>.sqlite    keys, metadata (MetadataStore)
    gallery.idx.<token>.f16       'two-stage' only: float16 vectors, row = id

The main file is ``magic (8 bytes) | manifest length (8) | payload length
(8) | manifest CRC-32 (4) | 0 (4) | payload | manifest``. The manifest
(JSON, small at any size: no keys) holds the format version, the backend's
type and knobs, the counts, the CRC-32 of every 16 MiB block of the payload,
the store file's name, size and CRC-32, and the vector file's name, rows
and per-block CRC-32. Saving writes new sidecars under a fresh token and the
main file to a temporary name, then moves the main file into place with
``os.replace`` and deletes the sidecars it no longer names: a crash leaves
the old index whole (and stray files that the next :meth:`load` deletes).
The vector file is append-only, so a later save of the same index appends
to it instead of copying gigabytes.

Loading reads each byte once: the manifest is checked first, the store
before its metadata is compared, and each payload block is checked as FAISS
reads it (FAISS never parses an unchecked byte). The vector file's size is
checked on load; its block checksums are read only with
``verify_vectors=True`` or :meth:`verify_vectors` (tens of GB at scale).

Errors: a file without the magic is not an index (:class:`NotAnIndexError`;
callers never overwrite it); a truncated or altered one, or one of an older
format, is :class:`CorruptIndexError`; one whose metadata differs from what
the caller expects raises :class:`IndexMismatchError` naming the fields. All
three are ``ValueError`` and say which file and what is wrong. No pickle is
involved.

Example:
    >>> index = GalleryIndex(dim=4)
    >>> index.add(['a.jpg', 'b.jpg'], np.eye(2, 4, dtype=np.float32),
    ...           metadata=[dict(camera='c1'), dict(camera='c2')])
    >>> scores, keys = index.search(np.eye(1, 4, dtype=np.float32), topk=1)
    >>> keys
    [['a.jpg']]
    >>> index.search(np.eye(1, 4, dtype=np.float32), 1, filter=dict(cameras=['c2']))[1]
    [['b.jpg']]
    >>> index.save('gallery.idx', metadata=dict(model='abc'))
    >>> GalleryIndex.load('gallery.idx', expected_metadata=dict(model='abc'))
"""

import glob
import json
import os
import os.path as osp
import secrets
import struct
import tempfile
import zlib
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .backend import IndexBackend
from .faiss_backend import (
    DEFAULT_REFINE_FACTOR,
    DEFAULT_TARGET_RECALL,
    FAISS_INDEX_TYPES,
    HNSW_QUANTIZER_MIN_NLIST,
    MIN_TRAIN_PER_LIST,
    FaissBackend,
    default_nlist,
    default_rank,
)
from .metadata_store import MetadataStore
from .search_filter import SearchFilter
from .vector_file import VectorFile

__all__ = [
    'AUTO_FLAT_MAX',
    'BACKENDS',
    'CorruptIndexError',
    'GalleryIndex',
    'GalleryIndexError',
    'HNSW_QUANTIZER_MIN_NLIST',
    'INDEX_TYPES',
    'IndexMismatchError',
    'MIN_TRAIN_PER_LIST',
    'NotAnIndexError',
    'default_nlist',
    'default_rank',
]

#: The index types :class:`GalleryIndex` builds (besides ``'auto'``).
INDEX_TYPES = FAISS_INDEX_TYPES
#: The vector backends.
BACKENDS = ('faiss', 'milvus')
#: ``'auto'`` keeps an exact index below this many vectors.
AUTO_FLAT_MAX = 100_000
#: The type ``'auto'`` grows into.
AUTO_LARGE_TYPE = 'two-stage'

FORMAT = 'tbps_mm-gallery-index'
VERSION = 2
MAGIC = b'TBPSGIX2'
#: The magic of format version 1 (one file, JSON header of every key).
MAGIC_V1 = b'TBPSGIDX'
PAYLOAD_BLOCK = 1 << 24
_PREAMBLE = struct.Struct('<8sQQII')


class GalleryIndexError(ValueError):
    """An index file that cannot be used (base of the specific errors)."""


class NotAnIndexError(GalleryIndexError):
    """The file is not a tbps_mm gallery index at all."""


class CorruptIndexError(GalleryIndexError):
    """The file is a tbps_mm gallery index, but truncated, altered or of an
    older format."""


class IndexMismatchError(GalleryIndexError):
    """The index was built for something else (model, pipeline, type, ...)."""


def _new_backend(
    dim: int, backend: str, index_type: str, options: Dict
) -> IndexBackend:
    if backend == 'faiss':
        return FaissBackend(dim, index_type, **options)
    from .milvus_backend import MilvusBackend

    return MilvusBackend(dim, **options)


class GalleryIndex:
    """Keyed vectors with metadata, searched by inner product, saved safely.

    Args:
        dim (int): Vector dimension (``D * (1 + K)`` for fused vectors).
        index_type (str): ``'auto'`` (default) or one of
            :data:`INDEX_TYPES`; see the module docstring.
        nlist (int, optional): IVF cells. Defaults to :func:`default_nlist`
            of the size trained for.
        nprobe (int, optional): IVF cells visited per query (may be changed
            at any time). Default: measured for ``target_recall`` when the
            index is trained.
        expected_size (int, optional): The gallery size the caller expects;
            ``'auto'`` chooses the type from it and IVF sizes ``nlist`` for
            it instead of for the training sample.
        rank (int, optional): Projected dimensions of ``'pca-ivf-sq8'`` and
            ``'two-stage'``. Defaults to :func:`default_rank`.
        refine_factor (int): ``'two-stage'``: candidates re-scored per
            result wanted. Defaults to 10.
        target_recall (float): Recall@10 against exact search that the
            measured ``nprobe`` reaches. Defaults to 0.99.
        backend (str): ``'faiss'`` (default) or ``'milvus'``.
        backend_options (dict, optional): ``'milvus'``: ``uri`` (a Milvus
            Lite ``.db`` file or a server URI), ``collection``, ``token``,
            ``index_params`` (see ``MilvusBackend``).

    Raises:
        ValueError: An unknown type or backend, or a non-positive knob.

    Example:
        >>> index = GalleryIndex(1280, 'two-stage', nlist=4096)
        >>> index.train(sample)              # (n, 1280) float32, n >= 39 * 4096
        >>> for keys, vectors in chunks:
        ...     index.add(keys, vectors)
        >>> scores, keys = index.search(queries, topk=10)
    """

    def __init__(
        self,
        dim: int,
        index_type: str = 'auto',
        nlist: Optional[int] = None,
        nprobe: Optional[int] = None,
        expected_size: Optional[int] = None,
        rank: Optional[int] = None,
        refine_factor: int = DEFAULT_REFINE_FACTOR,
        target_recall: float = DEFAULT_TARGET_RECALL,
        backend: str = 'faiss',
        backend_options: Optional[Dict] = None,
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f'dim must be >= 1, got {dim}')
        if backend not in BACKENDS:
            raise ValueError(
                f'unknown backend "{backend}"; choose one of {", ".join(BACKENDS)}'
            )
        if index_type not in ('auto', *INDEX_TYPES):
            raise ValueError(
                f'unknown index type "{index_type}"; choose one of '
                f'{", ".join(("auto",) + INDEX_TYPES)}'
            )
        if expected_size is not None and int(expected_size) < 1:
            raise ValueError(f'expected_size must be >= 1, got {expected_size}')
        self.dim = int(dim)
        self.requested_type = index_type
        self.expected_size = None if expected_size is None else int(expected_size)
        self.backend_name = backend
        self._options = dict(
            nlist=nlist,
            nprobe=nprobe,
            rank=rank,
            refine_factor=refine_factor,
            target_recall=target_recall,
            expected_size=self.expected_size,
        )
        if backend == 'milvus':
            if index_type not in ('auto', 'flat'):
                raise ValueError(
                    f'index type "{index_type}" is a FAISS type; a Milvus index '
                    'takes its index type from backend_options["index_params"]'
                )
            self._options = dict(backend_options or {})
            index_type = 'flat'
        elif index_type == 'auto':
            large = expected_size is not None and expected_size >= AUTO_FLAT_MAX
            index_type = AUTO_LARGE_TYPE if large else 'flat'
        self.index_type = index_type
        self.backend: IndexBackend = _new_backend(
            self.dim, backend, index_type, self._options
        )
        self.store = MetadataStore()
        self._next_id = 0
        #: The metadata :meth:`load` read (empty for a new index).
        self.metadata: dict = {}
        self._path: Optional[str] = None

    # ------------------------------------------------------------------ #
    # Properties
    # ------------------------------------------------------------------ #
    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, key: str) -> bool:
        return self.store.ids_of([str(key)])[0] is not None

    @property
    def keys(self) -> List[str]:
        """Every key, in the order added (reads the whole store: O(N))."""
        return list(self.store.iter_keys())

    @property
    def is_trained(self) -> bool:
        """Whether vectors can be added without training first."""
        return self.backend.is_trained

    @property
    def nlist(self) -> Optional[int]:
        """IVF cells (None for ``'flat'`` and Milvus)."""
        return getattr(self.backend, 'nlist', None)

    @property
    def nprobe(self) -> Optional[int]:
        """IVF cells visited per query (None for ``'flat'`` and Milvus)."""
        return getattr(self.backend, 'nprobe', None)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if not hasattr(self.backend, 'nprobe'):
            raise ValueError(f'the {self.backend_name} backend has no nprobe')
        self.backend.nprobe = value

    @property
    def rank(self) -> Optional[int]:
        """Projected dimensions (PCA types; None otherwise)."""
        return getattr(self.backend, 'rank', None)

    @property
    def refine_factor(self) -> Optional[int]:
        """``'two-stage'`` candidates re-scored per result."""
        return getattr(self.backend, 'refine_factor', None)

    @refine_factor.setter
    def refine_factor(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f'refine_factor must be >= 1, got {value}')
        self.backend.refine_factor = int(value)

    @property
    def calibration(self) -> Optional[dict]:
        """What training measured to choose ``nprobe`` (None if given)."""
        return getattr(self.backend, 'calibration', None)

    @property
    def bytes_per_vector(self) -> int:
        """Bytes of memory one stored vector takes (codes and id)."""
        memory = getattr(self.backend, 'memory_bytes', None)
        if memory is None or not len(self):
            return {'flat': 4 * self.dim}.get(
                self.index_type, self.rank or self.dim
            ) + 8
        return int(round(memory() / len(self)))

    def describe(self) -> str:
        """A one-line summary, e.g. ``'two-stage (nlist 4096, nprobe 40,
        rank 256, re-scored x10 from float16), 1000000 vectors of 1280
        dims'``."""
        return f'{self.backend.describe()}, {len(self)} vectors of {self.dim} dims'

    def key_of(self, item_id: int) -> Optional[str]:
        """The key of an id (None if unknown): one primary-key lookup."""
        return self.store.keys_of([int(item_id)])[0]

    def id_of(self, key: str) -> Optional[int]:
        """The id of a key (None if unknown): one unique-key lookup."""
        return self.store.ids_of([str(key)])[0]

    def item(self, item_id: int) -> Optional[dict]:
        """Key and metadata of an id (None if unknown)."""
        return self.store.item(item_id)

    # ------------------------------------------------------------------ #
    # Building
    # ------------------------------------------------------------------ #
    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f'{what} must be a (N, {self.dim}) array, got shape '
                f'{tuple(vectors.shape)}'
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise ValueError(
                f'{what} holds NaN or infinite values (rows {rows[:10].tolist()})'
            )
        return vectors

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF index (projection, cells, quantiser ranges) and
        measure ``nprobe`` unless it was given. A no-op for ``'flat'``.

        Train on vectors drawn like the gallery's (e.g. a random sample of
        it); ``nlist`` is sized for ``expected_size`` when given, else for
        ``len(sample)``.

        Args:
            sample (np.ndarray): (n, dim) float32 vectors, ``n >= nlist``
                (``>= 39 * nlist`` for good cells).

        Raises:
            ValueError: Wrong shape, too few vectors, or an index that
                already holds vectors (train before adding).
        """
        sample = self._check_vectors(sample, 'training vectors')
        if len(self):
            raise ValueError(
                f'the index holds {len(self)} vectors already: train before adding'
            )
        self.backend.train(sample)

    def calibrate(
        self, sample: np.ndarray, queries: Optional[np.ndarray] = None
    ) -> int:
        """Measure ``nprobe`` again (e.g. with real caption queries); see
        ``FaissBackend.calibrate``.

        Returns:
            int: The new nprobe.
        """
        if not hasattr(self.backend, 'calibrate') or self.index_type == 'flat':
            raise ValueError(f'a {self.index_type} index has no nprobe to measure')
        sample = self._check_vectors(sample, 'calibration vectors')
        if queries is not None:
            queries = self._check_vectors(queries, 'calibration queries')
        return self.backend.calibrate(sample, queries)

    def empty_like(self) -> 'GalleryIndex':
        """A new, empty index of the same type and trained state.

        Adding the same (key, vector) pairs to it gives the same index as
        this one's incremental history (see the module docstring).
        """
        other = GalleryIndex.__new__(GalleryIndex)
        other.dim, other.requested_type = self.dim, self.requested_type
        other.expected_size, other.backend_name = self.expected_size, self.backend_name
        other._options, other.index_type = dict(self._options), self.index_type
        other.backend = self.backend.empty_like()
        other.store = MetadataStore()
        other._next_id, other.metadata, other._path = 0, {}, None
        return other

    def _convert_to_large(self, extra: np.ndarray) -> None:
        """``'auto'`` outgrew exact search: retrain as :data:`AUTO_LARGE_TYPE`
        on the held vectors plus ``extra``, keeping every id."""
        import faiss

        flat = self.backend.index
        ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
        inner = faiss.downcast_index(flat.index)
        held = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * self.dim)
        held = np.array(held, dtype=np.float32).reshape(-1, self.dim)
        order = np.argsort(ids, kind='stable')
        ids, vectors = ids[order], held[order]
        options = dict(self._options, expected_size=len(ids) + len(extra))
        backend = FaissBackend(self.dim, AUTO_LARGE_TYPE, **options)
        backend.train(np.concatenate([vectors, extra]))
        if len(ids):
            backend.add(ids, vectors)
        self.backend, self.index_type = backend, AUTO_LARGE_TYPE

    def add(
        self,
        keys: Sequence[str],
        vectors: np.ndarray,
        metadata: Optional[Sequence[Optional[Mapping]]] = None,
    ) -> None:
        """Add vectors under new keys, with optional per-item metadata.

        An untrained IVF index is trained on these vectors first. With
        ``'auto'``, an exact index that this call takes to
        :data:`AUTO_FLAT_MAX` vectors or more becomes :data:`AUTO_LARGE_TYPE`.

        Args:
            keys (Sequence[str]): One unique key (e.g. an image path) per row.
            vectors (np.ndarray): (N, dim) float32.
            metadata (Sequence[dict], optional): Per row: ``camera`` (str),
                ``time`` (float), ``source`` (str), ``extra`` (JSON dict).

        Raises:
            ValueError: Wrong shape, non-finite values, a key given twice or
                already in the index (remove it first), bad metadata, or too
                few vectors to train an untrained IVF index.
        """
        keys = [str(k) for k in keys]
        vectors = self._check_vectors(vectors, 'vectors')
        if len(keys) != len(vectors):
            raise ValueError(f'{len(keys)} keys for {len(vectors)} vectors')
        if metadata is not None and len(metadata) != len(keys):
            raise ValueError(f'{len(metadata)} metadata entries for {len(keys)} keys')
        if not keys:
            return
        if len(set(keys)) != len(keys):
            seen, twice = set(), []
            for key in keys:
                if key in seen:
                    twice.append(key)
                seen.add(key)
            raise ValueError(f'keys given twice: {twice[:5]}')
        ids = np.arange(self._next_id, self._next_id + len(keys), dtype=np.int64)
        # The store checks keys and metadata before any vector is stored.
        self.store.add(ids.tolist(), keys, metadata)
        try:
            if (
                self.requested_type == 'auto'
                and self.index_type == 'flat'
                and self.backend_name == 'faiss'
                and len(self) >= AUTO_FLAT_MAX
            ):
                self._convert_to_large(vectors)
            if not self.is_trained:
                self.backend.train(vectors)
            rows = metadata if metadata is not None else [{}] * len(keys)
            self.backend.add(ids, vectors, rows)
        except BaseException:
            self.store.remove(ids.tolist())
            raise
        self._next_id += len(keys)

    def remove(self, keys: Sequence[str]) -> int:
        """Remove keys (unknown keys are ignored).

        Args:
            keys (Sequence[str]): Keys to remove.

        Returns:
            int: How many were removed.
        """
        keys = list(dict.fromkeys(str(k) for k in keys))
        ids = np.asarray(
            [i for i in self.store.ids_of(keys) if i is not None], np.int64
        )
        if not len(ids):
            return 0
        removed = self.backend.remove(ids)
        if removed != len(ids):
            raise RuntimeError(
                f'the backend removed {removed} of {len(ids)} vectors: the store '
                'and the vectors disagree'
            )
        self.store.remove(ids.tolist())
        return len(ids)

    # ------------------------------------------------------------------ #
    # Searching
    # ------------------------------------------------------------------ #
    def search_ids(
        self,
        queries: np.ndarray,
        topk: int,
        filter: Union[None, Mapping, SearchFilter] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``topk`` ids of largest inner product with each query.

        Args:
            queries (np.ndarray): (Q, dim) float32 (a (dim,) vector is one
                query).
            topk (int): Results per query (clipped to the index size).
            filter (dict | SearchFilter, optional): Which items may be
                returned (see :class:`SearchFilter`).

        Returns:
            tuple[np.ndarray, np.ndarray]: (Q, k) float32 scores, best first,
            and int64 ids; a row with fewer than ``k`` results (an
            approximate index, a filter) has ``-inf`` / ``-1`` in the
            missing places.

        Raises:
            ValueError: ``topk < 1``, wrong shape, a bad filter, or an empty
                index.
        """
        if int(topk) < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        spec = SearchFilter.from_spec(filter)
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None]
        queries = self._check_vectors(queries, 'queries')
        if not len(self):
            raise ValueError('the index is empty: add vectors before searching')
        k = min(int(topk), len(self))
        allowed = None
        if spec.selects_items and not self.backend.pushes_down_filters:
            allowed = self.store.ids_matching(spec)
            if not len(allowed):
                return (
                    np.full((len(queries), k), -np.inf, np.float32),
                    np.full((len(queries), k), -1, np.int64),
                )
        scores, ids = self.backend.search(
            queries, k, allowed_ids=allowed, spec=spec if spec.selects_items else None
        )
        scores = np.asarray(scores, dtype=np.float32).copy()
        ids = np.asarray(ids, dtype=np.int64).copy()
        missing = ids < 0
        if spec.min_score is not None:
            missing |= scores < spec.min_score
        scores[missing] = -np.inf
        ids[missing] = -1
        return scores, ids

    def search(
        self,
        queries: np.ndarray,
        topk: int,
        filter: Union[None, Mapping, SearchFilter] = None,
    ) -> Tuple[np.ndarray, List[List[str]]]:
        """The ``topk`` keys of largest inner product with each query.

        Args:
            queries (np.ndarray): (Q, dim) float32 (a (dim,) vector is one
                query).
            topk (int): Results per query (clipped to the index size).
            filter (dict | SearchFilter, optional): See :meth:`search_ids`.

        Returns:
            tuple[np.ndarray, list[list[str]]]: ``scores`` (Q, k) float32,
            best first, and the keys of each row (only the rows found: a row
            with fewer than ``k`` has ``-inf`` scores in the missing places).
            Only the returned ids are looked up.

        Raises:
            ValueError: ``topk < 1``, wrong shape, a bad filter, or an empty
                index.
        """
        scores, ids = self.search_ids(queries, topk, filter)
        found = self.store.keys_of(ids[ids >= 0].tolist())
        keys, pos = [], 0
        for row in ids:
            n = int((row >= 0).sum())
            keys.append(found[pos : pos + n])
            pos += n
        # A returned id always has a key: the store and backend change together.
        return scores, keys

    # ------------------------------------------------------------------ #
    # Persistence
    # ------------------------------------------------------------------ #
    def save(self, path: str, metadata: Optional[dict] = None) -> None:
        """Write the index and ``metadata`` to ``path``, atomically.

        Args:
            path (str): The index file (its folder is created).
            metadata (dict, optional): JSON-serialisable facts that
                :meth:`load` can check (``expected_metadata``), e.g. the
                model and pipeline fingerprints.

        Raises:
            ValueError: An untrained index, or metadata JSON cannot hold.
            OSError: A file cannot be written (the old index, if any, is left
                as it was).
        """
        if not self.is_trained:
            raise ValueError('the index is not trained yet: nothing to save')
        path = osp.abspath(path)
        folder, base = osp.dirname(path), osp.basename(path)
        os.makedirs(folder, exist_ok=True)
        self.store.set_meta(dict(metadata or {}))
        token = secrets.token_hex(6)
        new_files: List[str] = []
        tmp = None
        try:
            store_file = osp.join(folder, f'{base}.{token}.sqlite')
            self.store.save_copy(store_file + '.tmp')
            new_files.append(store_file + '.tmp')
            store_size, store_crc = _file_crc(store_file + '.tmp')
            vectors = getattr(self.backend, 'vectors', None)
            vector_facts = None
            if vectors is not None:
                placed = osp.dirname(vectors.path) == folder and osp.basename(
                    vectors.path
                ).startswith(base + '.')
                if self._path != path or not placed:
                    target = osp.join(folder, f'{base}.{token}.f16')
                    vectors.move_to(target)
                    new_files.append(target)
                vectors.fsync()
                vector_facts = dict(
                    file=osp.basename(vectors.path),
                    rows=vectors.rows,
                    dim=vectors.dim,
                    crcs=vectors.block_checksums(),
                )
            fd, tmp = tempfile.mkstemp(prefix=base + '.', suffix='.tmp', dir=folder)
            with os.fdopen(fd, 'wb') as f:
                f.write(_PREAMBLE.pack(MAGIC, 0, 0, 0, 0))
                crcs: List[int] = []
                state = dict(size=0, block=b'')

                def write(chunk: bytes) -> int:
                    f.write(chunk)
                    state['size'] += len(chunk)
                    block = state['block'] + bytes(chunk)
                    while len(block) >= PAYLOAD_BLOCK:
                        crcs.append(zlib.crc32(block[:PAYLOAD_BLOCK]))
                        block = block[PAYLOAD_BLOCK:]
                    state['block'] = block
                    return len(chunk)

                backend_facts = self.backend.write_payload(
                    write, folder, f'{base}.{token}'
                )
                if state['block']:
                    crcs.append(zlib.crc32(state['block']))
                manifest = json.dumps(
                    dict(
                        format=FORMAT,
                        version=VERSION,
                        dim=self.dim,
                        count=len(self),
                        next_id=self._next_id,
                        requested_type=self.requested_type,
                        index_type=self.index_type,
                        expected_size=self.expected_size,
                        backend=dict(
                            name=self.backend_name,
                            config=self.backend.config(),
                            facts=backend_facts,
                        ),
                        payload=dict(
                            size=state['size'], block=PAYLOAD_BLOCK, crcs=crcs
                        ),
                        store=dict(
                            file=osp.basename(store_file),
                            size=store_size,
                            crc=store_crc,
                        ),
                        vectors=vector_facts,
                    )
                ).encode()
                f.write(manifest)
                f.seek(0)
                f.write(
                    _PREAMBLE.pack(
                        MAGIC, len(manifest), state['size'], zlib.crc32(manifest), 0
                    )
                )
                f.flush()
                os.fsync(f.fileno())
            _readable_like_a_new_file(tmp)
            os.replace(store_file + '.tmp', store_file)
            new_files[0] = store_file
            os.replace(tmp, path)
            tmp = None
        except BaseException:
            for name in [tmp] + [n for n in new_files if not n.endswith('.f16')]:
                if name and osp.exists(name):
                    os.remove(name)
            raise
        self._path = path
        self.metadata = dict(metadata or {})
        _remove_stale_files(path, keep={store_file, vectors.path if vectors else ''})

    @staticmethod
    def _read_manifest(f, path: str) -> Tuple[dict, int]:
        """Check the preamble and manifest of an open index file."""
        preamble = f.read(_PREAMBLE.size)
        if preamble[: len(MAGIC_V1)] == MAGIC_V1:
            raise CorruptIndexError(
                f'index "{path}" has format version 1; this tbps_mm reads version '
                f'{VERSION}: rebuild the index'
            )
        if len(preamble) < len(MAGIC) or preamble[: len(MAGIC)] != MAGIC:
            raise NotAnIndexError(
                f'"{path}" is not a tbps_mm gallery index (it does not start with '
                f'{MAGIC!r})'
            )
        if len(preamble) < _PREAMBLE.size:
            raise CorruptIndexError(f'index "{path}" is damaged: truncated header')
        _, manifest_size, payload_size, manifest_crc, _ = _PREAMBLE.unpack(preamble)
        file_size = os.fstat(f.fileno()).st_size
        expected = _PREAMBLE.size + payload_size + manifest_size
        if file_size != expected:
            raise CorruptIndexError(
                f'index "{path}" is damaged: {file_size} bytes where its header '
                f'announces {expected} (truncated or appended to)'
            )
        f.seek(_PREAMBLE.size + payload_size)
        raw = f.read(manifest_size)
        if zlib.crc32(raw) != manifest_crc:
            raise CorruptIndexError(
                f'index "{path}" is damaged: its manifest does not match its checksum'
            )
        try:
            manifest = json.loads(raw)
        except ValueError as err:
            raise CorruptIndexError(
                f'index "{path}" is damaged: unreadable manifest ({err})'
            ) from None
        if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
            raise NotAnIndexError(f'"{path}" is not a tbps_mm gallery index')
        if manifest.get('version') != VERSION:
            raise CorruptIndexError(
                f'index "{path}" has format version {manifest.get("version")}; this '
                f'tbps_mm reads version {VERSION}: rebuild the index'
            )
        return manifest, payload_size

    @staticmethod
    def _open_store(path: str, manifest: dict, check: bool) -> MetadataStore:
        facts = manifest['store']
        store_file = osp.join(
            osp.dirname(osp.abspath(path)), osp.basename(facts['file'])
        )
        if not osp.isfile(store_file):
            raise CorruptIndexError(
                f'index "{path}" is damaged: its store "{store_file}" is missing'
            )
        size, crc = _file_crc(store_file) if check else (osp.getsize(store_file), None)
        if size != facts['size'] or (check and crc != facts['crc']):
            raise CorruptIndexError(
                f'index "{path}" is damaged: its store "{store_file}" does not match '
                'its size or checksum'
            )
        try:
            return MetadataStore(store_file)
        except ValueError as err:
            raise CorruptIndexError(f'index "{path}" is damaged: {err}') from None

    @classmethod
    def read_header(cls, path: str) -> dict:
        """The manifest of an index file (format, type, counts, backend
        knobs) and its ``metadata``, checked, without reading the payload.

        Args:
            path (str): The index file.

        Returns:
            dict: The manifest, with ``metadata`` (the caller's dict),
            ``nlist`` and ``nprobe`` added.

        Raises:
            FileNotFoundError: No such file.
            NotAnIndexError: Not a tbps_mm gallery index.
            CorruptIndexError: Truncated, altered, or of another format.
        """
        with open(path, 'rb') as f:
            manifest, _ = cls._read_manifest(f, path)
        store = cls._open_store(path, manifest, check=False)
        try:
            manifest['metadata'] = store.get_meta()
        except Exception as err:  # sqlite3.DatabaseError and kin
            raise CorruptIndexError(f'index "{path}" is damaged: {err}') from None
        finally:
            store.close()
        config = manifest['backend']['config']
        manifest['nlist'] = config.get('nlist')
        manifest['nprobe'] = config.get('nprobe')
        return manifest

    @classmethod
    def load(
        cls,
        path: str,
        expected_metadata: Optional[dict] = None,
        verify_vectors: bool = False,
    ) -> 'GalleryIndex':
        """Read an index written by :meth:`save` (each byte read once) and
        delete stray files a crashed save left next to it.

        Args:
            path (str): The index file.
            expected_metadata (dict, optional): Entries the stored metadata
                must hold with equal values (e.g. the current model and
                pipeline fingerprints).
            verify_vectors (bool): Also check every block of the float16
                vector file (``'two-stage'``; reads the whole file).

        Returns:
            GalleryIndex: The index; ``metadata`` holds the stored dict.

        Raises:
            FileNotFoundError: No such file.
            NotAnIndexError: Not a tbps_mm gallery index.
            CorruptIndexError: Truncated or altered (lengths, checksums, or a
                payload FAISS cannot read), inconsistent, or of another
                format.
            IndexMismatchError: ``expected_metadata`` entries differ; the
                message names each one.
        """
        if not osp.isfile(path):
            raise FileNotFoundError(f'index file "{path}" does not exist')
        path = osp.abspath(path)
        with open(path, 'rb') as f:
            manifest, payload_size = cls._read_manifest(f, path)
            store = cls._open_store(path, manifest, check=True)
            try:
                stored_meta = store.get_meta()
            except Exception as err:  # sqlite3.DatabaseError and kin
                store.close()
                raise CorruptIndexError(f'index "{path}" is damaged: {err}') from None
            mismatch = _metadata_mismatch(stored_meta, expected_metadata or {})
            if mismatch:
                store.close()
                raise IndexMismatchError(
                    f'index "{path}" was built for something else: '
                    + '; '.join(mismatch)
                )
            backend_facts = manifest['backend']
            config = dict(backend_facts['config'])
            if backend_facts['name'] == 'faiss':
                calibration = config.pop('calibration', None)
                index_type = config.pop('index_type')
                backend = FaissBackend(manifest['dim'], index_type, **config)
                backend.calibration = calibration
                f.seek(_PREAMBLE.size)
                reader = _CheckedReader(f, payload_size, manifest['payload'])
                try:
                    backend.read_payload(reader)
                except RuntimeError as err:
                    store.close()
                    why = reader.error or str(err).strip().splitlines()[-1][:200]
                    raise CorruptIndexError(
                        f'index "{path}" is damaged: the payload cannot be read ({why})'
                    ) from None
                if reader.error or reader.remaining:
                    store.close()
                    raise CorruptIndexError(
                        f'index "{path}" is damaged: '
                        f'{reader.error or "unread payload bytes"}'
                    )
            else:
                from .milvus_backend import MilvusBackend

                backend = MilvusBackend.reopen(manifest['dim'], config)
        vectors = manifest.get('vectors')
        if vectors is not None:
            vector_file = osp.join(osp.dirname(path), osp.basename(vectors['file']))
            if not osp.isfile(vector_file):
                raise CorruptIndexError(
                    f'index "{path}" is damaged: its vector file '
                    f'"{vector_file}" is missing'
                )
            try:
                backend.vectors = VectorFile.open(
                    vector_file, vectors['dim'], vectors['rows'], vectors['crcs']
                )
            except ValueError as err:
                raise CorruptIndexError(f'index "{path}" is damaged: {err}') from None
            if verify_vectors:
                block = backend.vectors.verify(vectors['crcs'])
                if block is not None:
                    raise CorruptIndexError(
                        f'index "{path}" is damaged: block {block} of its vector file '
                        f'"{vector_file}" does not match its checksum'
                    )
        self = cls.__new__(cls)
        self.dim = int(manifest['dim'])
        self.requested_type = manifest['requested_type']
        self.index_type = manifest['index_type']
        self.expected_size = manifest['expected_size']
        self.backend_name = backend_facts['name']
        self._options = dict(backend_facts['config'])
        for name in ('index_type', 'calibration'):
            self._options.pop(name, None)
        self.backend = backend
        self.store = store
        self._next_id = int(manifest['next_id'])
        self.metadata = stored_meta
        self._path = path
        if not len(backend) == len(store) == manifest['count']:
            raise CorruptIndexError(
                f'index "{path}" is inconsistent: {len(backend)} vectors, '
                f'{len(store)} keys, {manifest["count"]} recorded'
            )
        _remove_stale_files(
            path,
            keep={
                osp.join(osp.dirname(path), osp.basename(manifest['store']['file'])),
                backend.vectors.path if getattr(backend, 'vectors', None) else '',
            },
        )
        return self

    def verify_vectors(self) -> None:
        """Check every block of the float16 vector file against the
        checksums of the last save (``'two-stage'``; reads the whole file).

        Raises:
            CorruptIndexError: A block differs.
        """
        if self._path is None or getattr(self.backend, 'vectors', None) is None:
            return
        with open(self._path, 'rb') as f:
            manifest, _ = self._read_manifest(f, self._path)
        block = self.backend.vectors.verify(manifest['vectors']['crcs'])
        if block is not None:
            raise CorruptIndexError(
                f'index "{self._path}" is damaged: block {block} of its vector file '
                'does not match its checksum'
            )


class _CheckedReader:
    """A ``read(n)`` over the payload that checks each block's CRC-32 before
    any of its bytes reach FAISS (a damaged length field never does)."""

    def __init__(self, f, size: int, facts: dict) -> None:
        self.f, self.remaining = f, int(size)
        self.block_size, self.crcs = int(facts['block']), list(facts['crcs'])
        self.block, self.pos, self.index = b'', 0, 0
        self.error: Optional[str] = None

    def _next_block(self) -> bool:
        if self.error or self.index >= len(self.crcs) or not self.remaining:
            return False
        data = self.f.read(min(self.block_size, self.remaining))
        if zlib.crc32(data) != self.crcs[self.index]:
            self.error = f'payload block {self.index} does not match its checksum'
            return False
        self.block, self.pos = data, 0
        self.remaining -= len(data)
        self.index += 1
        return True

    def __call__(self, n: int) -> bytes:
        out = []
        while n > 0:
            if self.pos >= len(self.block) and not self._next_block():
                break
            piece = self.block[self.pos : self.pos + n]
            self.pos += len(piece)
            n -= len(piece)
            out.append(piece)
        return b''.join(out)


def _file_crc(path: str) -> Tuple[int, int]:
    """Size and CRC-32 of a file, read in 16 MiB blocks."""
    crc, size = 0, 0
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 24), b''):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, crc


def _remove_stale_files(path: str, keep: set) -> None:
    """Delete files a save of ``path`` names or may leave behind (temporary
    files, sidecars of older saves) except ``keep``."""
    pattern = glob.escape(path) + '.*'
    for name in glob.glob(pattern):
        if name in keep or not name.endswith(('.tmp', '.sqlite', '.f16')):
            continue
        try:
            os.remove(name)
        except OSError:
            pass


def _metadata_mismatch(stored: dict, expected: dict) -> List[str]:
    """``'<name>: index has X, expected Y'`` for each differing entry."""

    def short(value) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return text if len(text) <= 80 else text[:77] + '...'

    return [
        f'{name}: index has {short(stored.get(name))}, expected {short(value)}'
        for name, value in expected.items()
        # Compared as JSON holds them (tuples come back as lists).
        if stored.get(name) != json.loads(json.dumps(value, default=str))
    ]


def _readable_like_a_new_file(path: str) -> None:
    """Give a ``mkstemp`` file (owner-only) the mode ``open()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
