"""``GalleryIndex``: the searchable, persistent store of a gallery's vectors.

It owns everything between "one vector per image" and "the top-k keys of a
query": a FAISS index over the images' fused vectors
(:func:`tbps_mm.fused_score.fused_vector`, whose inner product with a
caption's fused vector is the model's test-time score), the mapping from
FAISS ids to keys (image paths), incremental ``add`` / ``remove``, and a
versioned on-disk format. It knows nothing about models or images: the
inferencer encodes, this class stores and searches.

Index types (``index_type``):

* ``'flat'``: exact inner-product search (``IndexFlatIP`` under an
  ``IndexIDMap2``), 4 bytes per dimension. Its ranking is the model's fused
  score, the one ``TBPSRetrievalMetric`` ranks by.
* ``'ivf-sq8'``: an inverted file (``nlist`` k-means cells over the vectors,
  ``nprobe`` of them visited per query) with 8-bit scalar quantisation, one
  byte per dimension: 10M images of 1,280-d fused vectors take about 12.8 GB
  of codes. With ``nlist >= HNSW_QUANTIZER_MIN_NLIST`` the cell assignment
  uses an HNSW graph over the centroids (``IVF{nlist}_HNSW32,SQ8``) so that
  adding millions of vectors does not compare each with every centroid.
  Needs training (k-means and the quantiser's ranges): :meth:`train`, or the
  first :meth:`add` trains on its own vectors.
* ``'ivf-pq-refine'``: the same inverted file over 4-bit product-quantiser
  codes (``IVF{nlist},PQ{pq_m}x4fs``, FAISS's SIMD "fast scan", ``pq_m / 2``
  bytes per vector) finds ``refine_factor * topk`` candidates, which are then
  re-scored from an 8-bit scalar-quantised copy of every vector
  (``IndexScalarQuantizer``, one byte per dimension): scanning is cheaper
  than with ``'ivf-sq8'``, the final scores come from the same 8-bit codes,
  and the memory is the SQ8 copy plus the PQ codes.
* ``'auto'``: ``'flat'`` while the gallery holds fewer than
  :data:`AUTO_FLAT_MAX` vectors; past that, the next :meth:`add` converts
  the index to ``'ivf-sq8'``, trained on the exact vectors the flat index
  holds plus the new ones. ``expected_size`` makes the choice up front.
  ``nlist`` defaults to :func:`default_nlist` (``sqrt(N)``) of the size
  it is trained for, ``nprobe`` to :func:`default_nprobe`, ``pq_m`` to
  :func:`default_pq_m`.

Incremental updates: ``add`` encodes nothing and retrains nothing; it
appends vectors under new ids; ``remove`` deletes ids. For ``'flat'`` the
result is the index a rebuild from the same (key, vector) pairs gives: the
same scores and, ties aside, the same ranking. For the IVF types the trained
state (centroids, quantiser ranges and codebooks) is kept, so the result
equals a rebuild that reuses that trained state (:meth:`empty_like` then ``add``):
every vector sits in the same cell with the same code, and searches return
the same scores. A rebuild that *retrains* gives other cells and codes and
the same recall on average, not the same lists.

On disk (:meth:`save`, :meth:`load`) an index is one file, written to a
temporary name in the same folder and moved into place with
``os.replace``, so a crash never leaves a partial index::

    8 bytes   magic b'TBPSGIDX'
    8 bytes   header length (little-endian uint64)
    8 bytes   payload length
    4 bytes   CRC-32 of the header, 4 bytes CRC-32 of the payload
    header    JSON: format, version, dim, index type, nlist, nprobe, keys,
              ids, the caller's metadata (model and pipeline fingerprints,
              folders, ...)
    payload   the FAISS index as ``faiss.write_index`` streams it (then,
              for ``'ivf-pq-refine'``, its SQ8 copy)

No pickle is involved. A file without the magic is not an index
(:class:`NotAnIndexError`); a truncated or altered one fails its lengths or
checksums (:class:`CorruptIndexError`); one whose metadata differs from what
the caller expects (another model, another pipeline) raises
:class:`IndexMismatchError` naming the fields. All three are ``ValueError``
and say which file and what is wrong.

Example:
    >>> index = GalleryIndex(dim=4)
    >>> index.add(['a.jpg', 'b.jpg'], np.eye(2, 4, dtype=np.float32))
    >>> scores, keys = index.search(np.eye(1, 4, dtype=np.float32), topk=1)
    >>> keys
    [['a.jpg']]
    >>> index.save('gallery.idx', metadata=dict(model='abc'))
    >>> GalleryIndex.load('gallery.idx', expected_metadata=dict(model='abc'))
"""

import json
import math
import os
import os.path as osp
import struct
import tempfile
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import faiss
import numpy as np

__all__ = [
    'AUTO_FLAT_MAX',
    'CorruptIndexError',
    'GalleryIndex',
    'GalleryIndexError',
    'HNSW_QUANTIZER_MIN_NLIST',
    'INDEX_TYPES',
    'IndexMismatchError',
    'NotAnIndexError',
    'default_nlist',
    'default_nprobe',
    'default_pq_m',
]

#: The index types :class:`GalleryIndex` builds (besides ``'auto'``).
INDEX_TYPES = ('flat', 'ivf-sq8', 'ivf-pq-refine')
#: ``'auto'`` keeps an exact index below this many vectors.
AUTO_FLAT_MAX = 100_000
#: From this many cells on, IVF assigns vectors to cells through an HNSW
#: graph over the centroids instead of comparing with every centroid.
HNSW_QUANTIZER_MIN_NLIST = 4096
#: k-means wants at least this many training vectors per cell.
MIN_TRAIN_PER_LIST = 39
#: Centroids of each 4-bit product sub-quantiser.
PQ_CENTROIDS = 16

FORMAT = 'tbps_mm-gallery-index'
VERSION = 1
MAGIC = b'TBPSGIDX'
_PREAMBLE = struct.Struct('<8sQQII')


class GalleryIndexError(ValueError):
    """An index file that cannot be used (base of the specific errors)."""


class NotAnIndexError(GalleryIndexError):
    """The file is not a tbps_mm gallery index at all."""


class CorruptIndexError(GalleryIndexError):
    """The file is a tbps_mm gallery index, but truncated or altered."""


class IndexMismatchError(GalleryIndexError):
    """The index was built for something else (model, pipeline, type, ...)."""


def default_nlist(size: int) -> int:
    """IVF cells for a gallery of ``size`` vectors: ``sqrt(size)``.

    With :func:`default_nprobe` a query visits 1/16 of the cells, the point
    the search-at-scale benchmark measured (docs/benchmarks.md).

    Capped so that every cell gets at least :data:`MIN_TRAIN_PER_LIST`
    training vectors when training on the gallery itself.

    Args:
        size (int): Number of vectors the index is trained for.

    Returns:
        int: At least 1.

    Example:
        >>> default_nlist(1_000_000)
        1000
    """
    return max(1, min(int(math.sqrt(max(size, 1))), size // MIN_TRAIN_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Cells visited per query: ``nlist / 16``, at least 16 (or ``nlist``).

    Args:
        nlist (int): Number of IVF cells.

    Returns:
        int: Between 1 and ``nlist``.

    Example:
        >>> default_nprobe(4096)
        256
    """
    return max(1, min(nlist, max(16, nlist // 16)))


def default_pq_m(dim: int) -> int:
    """Sub-quantisers of ``'ivf-pq-refine'``: about one per 20 dimensions.

    The even divisor of ``dim`` closest to ``dim / 20`` (FAISS's 4-bit fast
    scan packs codes in pairs).

    Args:
        dim (int): Vector dimension.

    Returns:
        int: ``pq_m``; ``dim`` itself when no even divisor exists.

    Example:
        >>> default_pq_m(1280)
        64
    """
    divisors = [m for m in range(2, dim + 1, 2) if dim % m == 0]
    if not divisors:
        return dim
    return min(divisors, key=lambda m: (abs(m - dim / 20), m))


class GalleryIndex:
    """A FAISS inner-product index over keyed vectors, saved and loaded safely.

    Args:
        dim (int): Vector dimension (``D * (1 + K)`` for fused vectors).
        index_type (str): ``'auto'`` (default), ``'flat'``, ``'ivf-sq8'`` or
            ``'ivf-pq-refine'``; see the module docstring.
        nlist (int, optional): IVF cells. Defaults to
            :func:`default_nlist` of the size trained for.
        nprobe (int, optional): IVF cells visited per query (a search-time
            knob; may be changed at any time). Defaults to
            :func:`default_nprobe`.
        expected_size (int, optional): The gallery size the caller expects;
            ``'auto'`` chooses the type from it and IVF sizes ``nlist`` for
            it instead of for the first batch.
        pq_m (int, optional): ``'ivf-pq-refine'``: sub-quantisers (a divisor
            of ``dim``). Defaults to :func:`default_pq_m`.
        refine_factor (int): ``'ivf-pq-refine'``: candidates re-scored per
            result wanted. Defaults to 10.

    Raises:
        ValueError: An unknown ``index_type`` or a non-positive knob.

    Example:
        >>> index = GalleryIndex(1280, 'ivf-sq8', nlist=4096, nprobe=64)
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
        pq_m: Optional[int] = None,
        refine_factor: int = 10,
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f'dim must be >= 1, got {dim}')
        if index_type not in ('auto', *INDEX_TYPES):
            raise ValueError(
                f'unknown index type "{index_type}"; choose one of '
                f'{", ".join(("auto",) + INDEX_TYPES)}'
            )
        for name, value in (
            ('nlist', nlist),
            ('nprobe', nprobe),
            ('expected_size', expected_size),
            ('pq_m', pq_m),
            ('refine_factor', refine_factor),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        self.dim = int(dim)
        self.requested_type = index_type
        self._nlist = None if nlist is None else int(nlist)
        self._nprobe = None if nprobe is None else int(nprobe)
        self.expected_size = None if expected_size is None else int(expected_size)
        if pq_m is not None and int(dim) % int(pq_m):
            raise ValueError(f'pq_m must divide dim {dim}, got {pq_m}')
        self._pq_m = None if pq_m is None else int(pq_m)
        self.refine_factor = int(refine_factor)
        # key -> FAISS id, in insertion order; and the reverse.
        self._ids: Dict[str, int] = {}
        self._keys: Dict[int, str] = {}
        self._next_id = 0
        self._faiss: Optional[faiss.Index] = None
        # 'ivf-pq-refine': the SQ8 copy the candidates are re-scored from.
        self._refine: Optional[faiss.Index] = None
        #: The metadata :meth:`load` read (empty for a new index).
        self.metadata: dict = {}
        self.index_type: Optional[str] = None
        if index_type != 'auto':
            self.index_type = index_type
        elif expected_size is not None:
            self.index_type = self._auto_type(expected_size)
        else:
            self.index_type = 'flat'
        if self.index_type == 'flat':
            self._faiss = self._new_flat()

    # ------------------------------------------------------------------ #
    # Properties
    # ------------------------------------------------------------------ #
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    @property
    def keys(self) -> List[str]:
        """The keys held, in the order they were added."""
        return list(self._ids)

    @property
    def is_trained(self) -> bool:
        """Whether vectors can be added without training first."""
        return self._faiss is not None and bool(self._faiss.is_trained)

    @property
    def nlist(self) -> Optional[int]:
        """IVF cells of the trained index (None for ``'flat'``)."""
        ivf = self._ivf()
        return int(ivf.nlist) if ivf is not None else self._nlist

    @property
    def pq_m(self) -> Optional[int]:
        """``'ivf-pq-refine'`` sub-quantisers (None for the other types)."""
        if self.index_type != 'ivf-pq-refine':
            return None
        return self._pq_m or default_pq_m(self.dim)

    @property
    def nprobe(self) -> Optional[int]:
        """IVF cells visited per query (None for ``'flat'``)."""
        ivf = self._ivf()
        return int(ivf.nprobe) if ivf is not None else self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f'nprobe must be >= 1, got {value}')
        self._nprobe = int(value)
        self._apply_nprobe()

    @property
    def bytes_per_vector(self) -> int:
        """Bytes one stored vector takes (codes only, ids aside)."""
        if self.index_type == 'flat':
            return 4 * self.dim
        if self._ivf() is None:
            return self.dim
        if self._refine is not None:
            return int(self._ivf().code_size) + self.dim
        return int(self._ivf().code_size)

    def describe(self) -> str:
        """A one-line summary, e.g. ``'ivf-sq8 (nlist 4000, nprobe 64), 1000000
        vectors of 1280 dims'``."""
        knobs = ''
        if self.index_type != 'flat':
            knobs = f' (nlist {self.nlist}, nprobe {self.nprobe})'
        if self.index_type == 'ivf-pq-refine':
            knobs = f'{knobs[:-1]}, pq_m {self.pq_m}, refine x{self.refine_factor})'
        return f'{self.index_type}{knobs}, {len(self)} vectors of {self.dim} dims'

    # ------------------------------------------------------------------ #
    # Building
    # ------------------------------------------------------------------ #
    @staticmethod
    def _auto_type(size: int) -> str:
        return 'flat' if size < AUTO_FLAT_MAX else 'ivf-sq8'

    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _new_ivf(self, nlist: int) -> faiss.Index:
        quantizer = '_HNSW32' if nlist >= HNSW_QUANTIZER_MIN_NLIST else ''
        codes = 'SQ8'
        if self.index_type == 'ivf-pq-refine':
            codes = f'PQ{self.pq_m}x4fs'
        return faiss.index_factory(
            self.dim, f'IVF{nlist}{quantizer},{codes}', faiss.METRIC_INNER_PRODUCT
        )

    def _new_refine(self) -> faiss.Index:
        return faiss.IndexIDMap2(
            faiss.IndexScalarQuantizer(
                self.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
        )

    def _ivf(self) -> Optional[faiss.IndexIVF]:
        if self._faiss is None or self.index_type == 'flat':
            return None
        return faiss.extract_index_ivf(self._faiss)

    def _apply_nprobe(self) -> None:
        ivf = self._ivf()
        if ivf is None:
            return
        nprobe = self._nprobe or default_nprobe(int(ivf.nlist))
        ivf.nprobe = min(nprobe, int(ivf.nlist))
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            # The graph must return at least nprobe cells per query.
            quantizer.hnsw.efSearch = max(64, 2 * int(ivf.nprobe))

    def _check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(
                f'{what} must be a (N, {self.dim}) array, got shape '
                f'{tuple(vectors.shape)}'
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            rows = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
            raise ValueError(
                f'{what} holds NaN or infinite values (rows {rows[:10].tolist()})'
            )
        return vectors

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF index (k-means cells and quantiser ranges).

        A no-op for ``'flat'``. Train on vectors drawn like the gallery's
        (e.g. a random sample of it); ``nlist`` is sized for
        ``expected_size`` when given, else for ``len(sample)``.

        Args:
            sample (np.ndarray): (n, dim) float32 vectors,
                ``n >= nlist`` (``>= 39 * nlist`` for good cells).

        Raises:
            ValueError: Wrong shape, too few vectors, or an index that
                already holds vectors (train before adding).
        """
        sample = self._check_vectors(sample, 'training vectors')
        if self.index_type == 'flat':
            return
        if len(self):
            raise ValueError(
                f'the index holds {len(self)} vectors already: train before adding'
            )
        nlist = self._nlist or default_nlist(self.expected_size or len(sample))
        if len(sample) < nlist:
            raise ValueError(
                f'{len(sample)} training vectors for {nlist} IVF cells: give at '
                f'least {nlist} (better {MIN_TRAIN_PER_LIST * nlist}) or a '
                'smaller nlist'
            )
        if self.index_type == 'ivf-pq-refine' and len(sample) < PQ_CENTROIDS:
            raise ValueError(
                f'{len(sample)} training vectors for 4-bit product quantisers: '
                f'give at least {PQ_CENTROIDS}'
            )
        index = self._new_ivf(nlist)
        index.train(sample)
        if self.index_type == 'ivf-pq-refine':
            self._refine = self._new_refine()
            self._refine.train(sample)
        self._faiss = index
        self._apply_nprobe()

    def empty_like(self) -> 'GalleryIndex':
        """A new, empty index of the same type and trained state.

        Adding the same (key, vector) pairs to it gives the same index as
        this one's incremental history (see the module docstring).

        Returns:
            GalleryIndex: Untouched by later changes to this one.
        """
        other = GalleryIndex(
            self.dim,
            self.index_type,
            nlist=self._nlist,
            nprobe=self._nprobe,
            expected_size=self.expected_size,
            pq_m=self._pq_m,
            refine_factor=self.refine_factor,
        )
        other.requested_type = self.requested_type
        if self._faiss is not None and self.index_type != 'flat':
            other._faiss = faiss.clone_index(self._faiss)
            other._faiss.reset()
            other._apply_nprobe()
        if self._refine is not None:
            other._refine = faiss.clone_index(self._refine)
            other._refine.reset()
        return other

    def _flat_contents(self) -> Tuple[np.ndarray, np.ndarray]:
        """The ids and exact vectors a flat index holds, in storage order."""
        ids = faiss.vector_to_array(self._faiss.id_map).astype(np.int64)
        flat = faiss.downcast_index(self._faiss.index)
        vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * self.dim)
        return ids, np.array(vectors, dtype=np.float32).reshape(-1, self.dim)

    def _convert_to_ivf(self, extra: np.ndarray) -> None:
        """``'auto'`` outgrew exact search: retrain as ``'ivf-sq8'``."""
        ids, vectors = self._flat_contents()
        self.index_type = 'ivf-sq8'
        self._faiss = None
        held = dict(self._keys)
        self._ids.clear()
        self._keys.clear()
        self.train(np.concatenate([vectors, extra]))
        self._faiss.add_with_ids(vectors, ids)
        for faiss_id in ids.tolist():
            self._ids[held[faiss_id]] = faiss_id
            self._keys[faiss_id] = held[faiss_id]

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors under new keys.

        An untrained IVF index is trained on these vectors first. With
        ``'auto'``, an exact index that this call takes to
        :data:`AUTO_FLAT_MAX` vectors or more becomes ``'ivf-sq8'``.

        Args:
            keys (Sequence[str]): One unique key (e.g. an image path) per row.
            vectors (np.ndarray): (N, dim) float32.

        Raises:
            ValueError: Wrong shape, non-finite values, a key given twice or
                already in the index (remove it first), or too few vectors to
                train an untrained IVF index.
        """
        keys = [str(k) for k in keys]
        vectors = self._check_vectors(vectors, 'vectors')
        if len(keys) != len(vectors):
            raise ValueError(f'{len(keys)} keys for {len(vectors)} vectors')
        if not keys:
            return
        if len(set(keys)) != len(keys):
            seen, twice = set(), []
            for key in keys:
                if key in seen:
                    twice.append(key)
                seen.add(key)
            raise ValueError(f'keys given twice: {twice[:5]}')
        present = [k for k in keys if k in self._ids]
        if present:
            raise ValueError(
                f'{len(present)} key(s) already in the index (remove them '
                f'first): {present[:5]}'
            )
        if (
            self.requested_type == 'auto'
            and self.index_type == 'flat'
            and len(self) + len(keys) >= AUTO_FLAT_MAX
        ):
            self._convert_to_ivf(vectors)
        if not self.is_trained:
            self.train(vectors)
        ids = np.arange(self._next_id, self._next_id + len(keys), dtype=np.int64)
        self._faiss.add_with_ids(vectors, ids)
        if self._refine is not None:
            self._refine.add_with_ids(vectors, ids)
        self._next_id += len(keys)
        for key, faiss_id in zip(keys, ids.tolist()):
            self._ids[key] = faiss_id
            self._keys[faiss_id] = key

    def remove(self, keys: Sequence[str]) -> int:
        """Remove keys (unknown keys are ignored).

        Args:
            keys (Sequence[str]): Keys to remove.

        Returns:
            int: How many were removed.
        """
        ids = [self._ids.pop(k) for k in dict.fromkeys(keys) if k in self._ids]
        if not ids:
            return 0
        for faiss_id in ids:
            del self._keys[faiss_id]
        selector = faiss.IDSelectorBatch(np.asarray(ids, dtype=np.int64))
        removed = self._faiss.remove_ids(selector)
        if self._refine is not None and self._refine.remove_ids(selector) != removed:
            raise RuntimeError('FAISS removed other vectors from the SQ8 copy')
        if removed != len(ids):
            raise RuntimeError(
                f'FAISS removed {removed} of {len(ids)} vectors: the id map and '
                'the index disagree'
            )
        return len(ids)

    # ------------------------------------------------------------------ #
    # Searching
    # ------------------------------------------------------------------ #
    def search(
        self, queries: np.ndarray, topk: int
    ) -> Tuple[np.ndarray, List[List[str]]]:
        """The ``topk`` keys of largest inner product with each query.

        Args:
            queries (np.ndarray): (Q, dim) float32 (a (dim,) vector is one
                query).
            topk (int): Results per query (clipped to the index size).

        Returns:
            tuple[np.ndarray, list[list[str]]]: ``scores`` (Q, k) float32,
            best first, and the keys of each row. An approximate index may
            find fewer than ``k`` candidates in the cells it visits: such a
            row has fewer keys and ``-inf`` scores in the missing places.

        Raises:
            ValueError: ``topk < 1``, wrong shape, or an empty index.
        """
        if int(topk) < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        queries = np.asarray(queries)
        if queries.ndim == 1:
            queries = queries[None]
        queries = self._check_vectors(queries, 'queries')
        if not len(self):
            raise ValueError('the index is empty: add vectors before searching')
        k = min(int(topk), len(self))
        if self._refine is None:
            scores, ids = self._faiss.search(queries, k)
        else:
            scores, ids = self._refined_search(queries, k)
        scores = scores.astype(np.float32)
        scores[ids < 0] = -np.inf
        keys = [[self._keys[i] for i in row if i >= 0] for row in ids.tolist()]
        return scores, keys

    def _refined_search(
        self, queries: np.ndarray, k: int
    ) -> Tuple[np.ndarray, np.ndarray]:
        """PQ candidates, re-scored from the SQ8 copy (``'ivf-pq-refine'``)."""
        wanted = min(len(self), k * self.refine_factor)
        _, candidates = self._faiss.search(queries, wanted)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(queries, candidates)):
            found = found[found >= 0]
            if not len(found):
                continue
            rescored = self._refine.reconstruct_batch(found) @ query
            order = np.argsort(-rescored, kind='stable')[:k]
            scores[row, : len(order)] = rescored[order]
            ids[row, : len(order)] = found[order]
        return scores, ids

    # ------------------------------------------------------------------ #
    # Persistence
    # ------------------------------------------------------------------ #
    def _header(self, metadata: dict) -> dict:
        return dict(
            format=FORMAT,
            version=VERSION,
            dim=self.dim,
            index_type=self.index_type,
            requested_type=self.requested_type,
            nlist=self._nlist,
            nprobe=self._nprobe,
            expected_size=self.expected_size,
            pq_m=self._pq_m,
            refine_factor=self.refine_factor,
            next_id=self._next_id,
            keys=list(self._ids),
            ids=list(self._ids.values()),
            metadata=metadata,
        )

    def save(self, path: str, metadata: Optional[dict] = None) -> None:
        """Write the index and ``metadata`` to ``path``, atomically.

        Args:
            path (str): The index file (its folder is created).
            metadata (dict, optional): JSON-serialisable facts that
                :meth:`load` can check (``expected_metadata``), e.g. the
                model and pipeline fingerprints.

        Raises:
            ValueError: An untrained index or metadata JSON cannot hold.
            OSError: The file cannot be written (the old file, if any, is
                left as it was and no temporary file remains).
        """
        if self._faiss is None:
            raise ValueError('the index is not trained yet: nothing to save')
        try:
            header = json.dumps(self._header(dict(metadata or {}))).encode()
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'index metadata is not JSON-serialisable: {err}'
            ) from None
        folder = osp.dirname(osp.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=osp.basename(path) + '.', suffix='.tmp', dir=folder
        )
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(_PREAMBLE.pack(MAGIC, 0, 0, 0, 0))
                f.write(header)
                state = dict(size=0, crc=0)

                def write(chunk: bytes) -> int:
                    f.write(chunk)
                    state['size'] += len(chunk)
                    state['crc'] = zlib.crc32(chunk, state['crc'])
                    return len(chunk)

                writer = faiss.PyCallbackIOWriter(write)
                faiss.write_index(self._faiss, writer)
                if self._refine is not None:
                    faiss.write_index(self._refine, writer)
                del writer  # flushes its buffer through ``write``
                f.seek(0)
                f.write(
                    _PREAMBLE.pack(
                        MAGIC,
                        len(header),
                        state['size'],
                        zlib.crc32(header),
                        state['crc'],
                    )
                )
                f.flush()
                os.fsync(f.fileno())
            _readable_like_a_new_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise

    @staticmethod
    def read_header(path: str) -> dict:
        """The header of an index file (format, type, keys, metadata, ...),
        checked, without reading the FAISS payload.

        Args:
            path (str): The index file.

        Returns:
            dict: The header (``metadata`` is the caller's dict).

        Raises:
            FileNotFoundError: No such file.
            NotAnIndexError: Not a tbps_mm gallery index.
            CorruptIndexError: Truncated, altered, or of a newer format.
        """
        with open(path, 'rb') as f:
            return _read_header(f, path)[0]

    @classmethod
    def load(
        cls, path: str, expected_metadata: Optional[dict] = None
    ) -> 'GalleryIndex':
        """Read an index file written by :meth:`save`.

        Args:
            path (str): The index file.
            expected_metadata (dict, optional): Entries the stored metadata
                must hold with equal values (e.g. the current model and
                pipeline fingerprints).

        Returns:
            GalleryIndex: The index; ``metadata`` holds the stored dict.

        Raises:
            FileNotFoundError: No such file.
            NotAnIndexError: Not a tbps_mm gallery index.
            CorruptIndexError: Truncated or altered (lengths, checksums, or a
                payload FAISS cannot read), or inconsistent.
            IndexMismatchError: ``expected_metadata`` entries differ; the
                message names each one.
        """
        if not osp.isfile(path):
            raise FileNotFoundError(f'index file "{path}" does not exist')
        with open(path, 'rb') as f:
            header, _, payload_crc = _read_header(f, path)
            mismatch = _metadata_mismatch(header['metadata'], expected_metadata or {})
            if mismatch:
                raise IndexMismatchError(
                    f'index "{path}" was built for something else: '
                    + '; '.join(mismatch)
                )
            # Checked before FAISS parses anything: a damaged length field
            # must not reach its reader.
            start, crc = f.tell(), 0
            for block in iter(lambda: f.read(1 << 24), b''):
                crc = zlib.crc32(block, crc)
            if crc != payload_crc:
                raise CorruptIndexError(
                    f'index "{path}" is damaged: its payload does not match its '
                    'checksum'
                )
            f.seek(start)
            try:
                reader = faiss.PyCallbackIOReader(f.read)
                index = faiss.read_index(reader)
                refine = None
                if header['index_type'] == 'ivf-pq-refine':
                    refine = faiss.read_index(reader)
            except RuntimeError as err:
                raise CorruptIndexError(
                    f'index "{path}" is damaged: FAISS cannot read its payload '
                    f'({str(err).strip().splitlines()[-1][:200]})'
                ) from None
        self = cls.__new__(cls)
        self.dim = int(header['dim'])
        self.requested_type = header['requested_type']
        self.index_type = header['index_type']
        self._nlist = header['nlist']
        self._nprobe = header['nprobe']
        self.expected_size = header['expected_size']
        self._pq_m = header.get('pq_m')
        self.refine_factor = int(header.get('refine_factor') or 10)
        self._refine = refine
        self._next_id = int(header['next_id'])
        self._ids = dict(zip(header['keys'], header['ids']))
        self._keys = {v: k for k, v in self._ids.items()}
        self._faiss = index
        self.metadata = header['metadata']
        if (
            index.d != self.dim
            or index.ntotal != len(self._ids)
            or len(self._keys) != len(self._ids)
            or (refine is not None and refine.ntotal != index.ntotal)
        ):
            raise CorruptIndexError(
                f'index "{path}" is inconsistent: {index.ntotal} vectors of '
                f'{index.d} dims for {len(self._ids)} keys of {self.dim} dims'
            )
        self._apply_nprobe()
        return self


def _read_header(f, path: str) -> Tuple[dict, int, int]:
    """Check the preamble and header of an open index file."""
    preamble = f.read(_PREAMBLE.size)
    if len(preamble) < len(MAGIC) or preamble[: len(MAGIC)] != MAGIC:
        raise NotAnIndexError(
            f'"{path}" is not a tbps_mm gallery index (it does not start with '
            f'{MAGIC!r})'
        )
    if len(preamble) < _PREAMBLE.size:
        raise CorruptIndexError(f'index "{path}" is damaged: truncated header')
    _, header_size, payload_size, header_crc, payload_crc = _PREAMBLE.unpack(preamble)
    file_size = os.fstat(f.fileno()).st_size
    expected = _PREAMBLE.size + header_size + payload_size
    if file_size != expected:
        raise CorruptIndexError(
            f'index "{path}" is damaged: {file_size} bytes where its header '
            f'announces {expected} (truncated or appended to)'
        )
    raw = f.read(header_size)
    if zlib.crc32(raw) != header_crc:
        raise CorruptIndexError(
            f'index "{path}" is damaged: its header does not match its checksum'
        )
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise CorruptIndexError(
            f'index "{path}" is damaged: unreadable header ({err})'
        ) from None
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        raise NotAnIndexError(f'"{path}" is not a tbps_mm gallery index')
    if header.get('version') != VERSION:
        raise CorruptIndexError(
            f'index "{path}" has format version {header.get("version")}; this '
            f'tbps_mm reads version {VERSION}: rebuild the index'
        )
    return header, payload_size, payload_crc


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
