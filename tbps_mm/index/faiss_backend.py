"""``FaissBackend``: the in-process FAISS vector store of a ``GalleryIndex``.

Index types (``index_type``); every score is an inner product of fused
vectors (:func:`tbps_mm.fused_score.fused_vector`), the model's test-time
score:

* ``'flat'``: exact search (``IndexFlatIP`` under ``IndexIDMap2``), 4 bytes
  per dimension in memory.
* ``'ivf-sq8'``: an inverted file of ``nlist`` k-means cells, ``nprobe`` of
  them visited per query, over 8-bit scalar-quantised codes (1 byte per
  dimension). From :data:`HNSW_QUANTIZER_MIN_NLIST` cells on, vectors find
  their cell through an HNSW graph over the centroids, searched with
  :data:`ADD_EF_SEARCH` while adding (one cell per vector) and with
  ``max(64, 2 * nprobe)`` while searching (``nprobe`` cells per query).
* ``'pca-ivf-sq8'``: the vectors projected onto the ``rank`` leading
  directions of the training sample's uncentred second moment (a learned
  linear map that keeps inner products up to what lies outside the
  subspace), then an ``IVF{nlist},SQ8`` with a flat quantiser in those
  ``rank`` dimensions: ``rank`` bytes per vector, cheap to build and scan.
* ``'two-stage'``: ``'pca-ivf-sq8'`` finds ``refine_factor * k``
  candidates; each is re-scored exactly from its full vector in a float16
  :class:`~tbps_mm.index.vector_file.VectorFile` on disk (one vectorised
  gather and product per query batch). Recall near that of exact search
  for ``rank`` bytes per vector of memory plus ``2 * dim`` on disk.

``nprobe`` is not a fixed fraction of the cells: unless given, :meth:`train`
measures it (:meth:`calibrate`): a held-out sample of the training vectors is
searched in an index of the remaining ones, and ``nprobe`` is the smallest
that reaches ``target_recall`` (recall@10 against exact search). It is
stored in the index and may be overridden at any time.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import faiss
import numpy as np

from .backend import IndexBackend
from .search_filter import SearchFilter
from .vector_file import VectorFile

__all__ = [
    'FaissBackend',
    'FAISS_INDEX_TYPES',
    'HNSW_QUANTIZER_MIN_NLIST',
    'MIN_TRAIN_PER_LIST',
    'default_nlist',
    'default_rank',
]

#: The index types of :class:`FaissBackend`.
FAISS_INDEX_TYPES = ('flat', 'ivf-sq8', 'pca-ivf-sq8', 'two-stage')
#: ``'ivf-sq8'``: from this many cells on, cells are found through HNSW.
HNSW_QUANTIZER_MIN_NLIST = 4096
#: HNSW ``efSearch`` while adding: each vector wants its one nearest cell.
ADD_EF_SEARCH = 16
#: k-means wants at least this many training vectors per cell.
MIN_TRAIN_PER_LIST = 39
#: Queries held out of the training sample to measure nprobe.
CALIBRATION_QUERIES = 256
#: Calibration gallery: at most this many training vectors.
CALIBRATION_GALLERY = 100_000
#: Results per query whose recall :meth:`FaissBackend.calibrate` measures.
CALIBRATION_K = 10
#: Default recall@10 against exact search that nprobe is chosen for.
DEFAULT_TARGET_RECALL = 0.99
#: Default ``refine_factor`` of ``'two-stage'``.
DEFAULT_REFINE_FACTOR = 10


def default_nlist(size: int) -> int:
    """IVF cells for ``size`` vectors: ``sqrt(size)``, at most
    ``size / MIN_TRAIN_PER_LIST`` (every cell gets enough training vectors).

    Example:
        >>> default_nlist(1_000_000)
        1000
    """
    return max(1, min(int(math.sqrt(max(size, 1))), size // MIN_TRAIN_PER_LIST))


def default_rank(dim: int) -> int:
    """Projected dimensions of the PCA types: 256 (or ``dim`` if smaller).

    Example:
        >>> default_rank(1280)
        256
    """
    return min(256, int(dim))


def leading_directions(sample: np.ndarray, rank: int) -> faiss.LinearTransform:
    """A FAISS ``LinearTransform`` onto the top-``rank`` eigenvectors of the
    sample's uncentred second moment (no bias: centring would shift each
    item's inner products by its own amount and change rankings)."""
    moment = sample.T.astype(np.float64) @ sample.astype(np.float64)
    _, vecs = np.linalg.eigh(moment)
    proj = np.ascontiguousarray(vecs[:, ::-1][:, :rank].T, dtype=np.float32)
    transform = faiss.LinearTransform(sample.shape[1], rank, False)
    faiss.copy_array_to_vector(proj.ravel(), transform.A)
    transform.is_trained = True
    transform.set_is_orthonormal()
    return transform


def exact_topk(queries: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) row numbers of the exact top-k inner products."""
    scores = queries @ gallery.T
    k = min(k, gallery.shape[0])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind='stable')
    return np.take_along_axis(part, order, 1)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean ``|found ∩ truth| / |truth|`` over rows (-1 entries never match)."""
    hits = [
        len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(found, truth)
    ]
    return float(np.sum(hits) / truth.size)


class FaissBackend(IndexBackend):
    """In-process FAISS index over int64 ids (see the module docstring).

    Args:
        dim (int): Vector dimension.
        index_type (str): One of :data:`FAISS_INDEX_TYPES`.
        nlist (int, optional): IVF cells (default :func:`default_nlist` of
            ``expected_size`` or the training sample size).
        nprobe (int, optional): Cells visited per query; default: measured
            by :meth:`calibrate` when training.
        rank (int, optional): Projected dimensions of the PCA types
            (default :func:`default_rank`).
        refine_factor (int): ``'two-stage'`` candidates re-scored per result.
        target_recall (float): Recall@10 the measured nprobe reaches.
        expected_size (int, optional): Gallery size ``nlist`` is sized for.

    Example:
        >>> backend = FaissBackend(1280, 'two-stage', nlist=1024)
        >>> backend.train(sample)
        >>> backend.add(np.arange(len(vectors)), vectors, [{}] * len(vectors))
        >>> scores, ids = backend.search(queries, 10)
    """

    name = 'faiss'

    def __init__(
        self,
        dim: int,
        index_type: str = 'flat',
        nlist: Optional[int] = None,
        nprobe: Optional[int] = None,
        rank: Optional[int] = None,
        refine_factor: int = DEFAULT_REFINE_FACTOR,
        target_recall: float = DEFAULT_TARGET_RECALL,
        expected_size: Optional[int] = None,
    ) -> None:
        super().__init__(dim)
        if index_type not in FAISS_INDEX_TYPES:
            raise ValueError(
                f'unknown FAISS index type "{index_type}"; choose one of '
                f'{", ".join(FAISS_INDEX_TYPES)}'
            )
        for name, value in (
            ('nlist', nlist),
            ('nprobe', nprobe),
            ('rank', rank),
            ('refine_factor', refine_factor),
            ('expected_size', expected_size),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        if not 0 < float(target_recall) <= 1:
            raise ValueError(f'target_recall must be in (0, 1], got {target_recall}')
        if rank is not None and int(rank) > self.dim:
            raise ValueError(f'rank must be <= dim {self.dim}, got {rank}')
        self.index_type = index_type
        self._nlist = None if nlist is None else int(nlist)
        self._nprobe = None if nprobe is None else int(nprobe)
        self.rank = None
        if index_type in ('pca-ivf-sq8', 'two-stage'):
            self.rank = int(rank) if rank is not None else default_rank(self.dim)
        self.refine_factor = int(refine_factor)
        self.target_recall = float(target_recall)
        self.expected_size = None if expected_size is None else int(expected_size)
        #: What :meth:`calibrate` measured: ``nprobe``, ``recall``, sizes.
        self.calibration: Optional[Dict] = None
        self.index: Optional[faiss.Index] = None
        self.vectors: Optional[VectorFile] = None
        if index_type == 'flat':
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    # ------------------------------------------------------------------ #
    # State
    # ------------------------------------------------------------------ #
    def __len__(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return self.index is not None and bool(self.index.is_trained)

    def ivf(self) -> Optional[faiss.IndexIVF]:
        """The inverted file inside the index (None for ``'flat'``)."""
        if self.index is None or self.index_type == 'flat':
            return None
        return faiss.extract_index_ivf(self.index)

    @property
    def nlist(self) -> Optional[int]:
        ivf = self.ivf()
        return int(ivf.nlist) if ivf is not None else self._nlist

    @property
    def nprobe(self) -> Optional[int]:
        """Cells visited per query (None for ``'flat'``)."""
        if self.index_type == 'flat':
            return None
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f'nprobe must be >= 1, got {value}')
        self._nprobe = int(value)
        self._apply_nprobe()

    def _apply_nprobe(self) -> None:
        ivf = self.ivf()
        if ivf is None or self._nprobe is None:
            return
        ivf.nprobe = min(self._nprobe, int(ivf.nlist))
        self._set_ef(max(64, 2 * int(ivf.nprobe)))

    def _set_ef(self, ef: int) -> None:
        ivf = self.ivf()
        if ivf is None:
            return
        quantizer = faiss.downcast_index(ivf.quantizer)
        if isinstance(quantizer, faiss.IndexHNSW):
            quantizer.hnsw.efSearch = int(ef)

    def config(self) -> Dict:
        return dict(
            index_type=self.index_type,
            nlist=self._nlist,
            nprobe=self._nprobe,
            rank=self.rank,
            refine_factor=self.refine_factor,
            target_recall=self.target_recall,
            expected_size=self.expected_size,
            calibration=self.calibration,
        )

    def describe(self) -> str:
        if self.index_type == 'flat':
            return 'flat'
        knobs = [f'nlist {self.nlist}', f'nprobe {self.nprobe}']
        if self.rank is not None:
            knobs.append(f'rank {self.rank}')
        if self.index_type == 'two-stage':
            knobs.append(f're-scored x{self.refine_factor} from float16')
        return f'{self.index_type} ({", ".join(knobs)})'

    def memory_bytes(self) -> int:
        """Bytes of vector data held in memory: codes and ids of the inverted
        lists plus the coarse centroids (IVF), else the flat vectors and ids."""
        if self.index is None:
            return 0
        ivf = self.ivf()
        if ivf is None:
            return int(self.index.ntotal) * (4 * self.dim + 8)
        sizes = sum(ivf.invlists.list_size(i) for i in range(ivf.nlist))
        return int(sizes * (ivf.invlists.code_size + 8) + ivf.nlist * ivf.d * 4)

    def disk_bytes(self) -> int:
        """Bytes of the float16 vector file (``'two-stage'``; else 0)."""
        return self.vectors.disk_bytes if self.vectors is not None else 0

    # ------------------------------------------------------------------ #
    # Building
    # ------------------------------------------------------------------ #
    def _new_index(self, sample: np.ndarray, nlist: int) -> faiss.Index:
        metric = faiss.METRIC_INNER_PRODUCT
        if self.index_type == 'ivf-sq8':
            quantizer = '_HNSW32' if nlist >= HNSW_QUANTIZER_MIN_NLIST else ''
            return faiss.index_factory(self.dim, f'IVF{nlist}{quantizer},SQ8', metric)
        transform = leading_directions(sample, self.rank)
        inner = faiss.index_factory(self.rank, f'IVF{nlist},SQ8', metric)
        index = faiss.IndexPreTransform(transform, inner)
        # The C++ index owns (and deletes) its transform and inner index.
        index.own_fields = True
        inner.this.disown()
        transform.this.disown()
        return index

    def train(self, sample: np.ndarray) -> None:
        """Learn the cells, codes (and projection), then measure ``nprobe``
        unless it was given.

        Raises:
            ValueError: Fewer training vectors than cells, or an index that
                holds vectors already.
        """
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
        index = self._new_index(sample, nlist)
        index.train(sample)
        self.index = index
        if self.index_type == 'two-stage':
            self.vectors = VectorFile.create(self.dim)
        if self._nprobe is None:
            self.calibrate(sample)
        self._apply_nprobe()

    def calibrate(
        self,
        sample: np.ndarray,
        queries: Optional[np.ndarray] = None,
        target_recall: Optional[float] = None,
    ) -> int:
        """Set ``nprobe`` to the smallest that reaches the target recall@10.

        The gallery is ``sample`` (at most :data:`CALIBRATION_GALLERY` of
        it) in an empty copy of this trained index; the queries are
        ``queries`` or :data:`CALIBRATION_QUERIES` vectors held out of
        ``sample``. Recall is against exact inner-product search over that
        gallery, through this index type's whole search (re-scoring
        included).

        Args:
            sample (np.ndarray): (n, dim) float32 gallery-like vectors.
            queries (np.ndarray, optional): (Q, dim) queries.
            target_recall (float, optional): Defaults to ``target_recall``.

        When no nprobe reaches the target (the codes cap recall), the
        smallest one within 0.005 of the recall of probing every cell is
        chosen and ``calibration['reachable']`` is False.

        Returns:
            int: The nprobe chosen (also stored in :attr:`calibration`).
        """
        target = float(target_recall or self.target_recall)
        rng = np.random.default_rng(0)
        order = rng.permutation(len(sample))
        if queries is None:
            held = min(CALIBRATION_QUERIES, max(1, len(sample) // 10))
            queries = sample[order[:held]]
            order = order[held:]
        gallery = np.ascontiguousarray(sample[np.sort(order[:CALIBRATION_GALLERY])])
        probe = self.empty_like()
        probe.add(np.arange(len(gallery), dtype=np.int64), gallery, None)
        truth = exact_topk(queries, gallery, CALIBRATION_K)
        nlist = self.nlist

        def recall(nprobe: int) -> float:
            probe.nprobe = nprobe
            return recall_at(probe.search(queries, CALIBRATION_K)[1], truth)

        measured: Dict[int, float] = {}
        low, high = 0, 1
        while True:
            measured[high] = recall(high)
            if measured[high] >= target or high >= nlist:
                break
            low, high = high, min(2 * high, nlist)
        reachable = measured[high] >= target
        if not reachable:
            # The codes cap recall below the target: the smallest nprobe
            # within half a point of the best is as good as probing all.
            target = measured[high] - 0.005
            low = 0
        while high - low > max(1, high // 8):
            mid = (low + high) // 2
            measured[mid] = recall(mid)
            if measured[mid] >= target:
                high = mid
            else:
                low = mid
        probe.close()
        self.calibration = dict(
            nprobe=high,
            recall_at_10=measured[high],
            target_recall=float(target_recall or self.target_recall),
            reachable=reachable,
            queries=len(queries),
            gallery=len(gallery),
            measured={str(k): v for k, v in sorted(measured.items())},
        )
        self.nprobe = high
        return high

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        metadata: Optional[Sequence[dict]] = None,
    ) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not self.is_trained:
            raise ValueError('train the index before adding vectors')
        if self.vectors is not None:
            self.vectors.write(ids, vectors)
        self._set_ef(ADD_EF_SEARCH)
        try:
            self.index.add_with_ids(vectors, ids)
        finally:
            self._apply_nprobe()

    def remove(self, ids: np.ndarray) -> int:
        selector = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        return int(self.index.remove_ids(selector))

    def empty_like(self) -> 'FaissBackend':
        other = FaissBackend(
            self.dim,
            self.index_type,
            nlist=self._nlist,
            nprobe=self._nprobe,
            rank=self.rank,
            refine_factor=self.refine_factor,
            target_recall=self.target_recall,
            expected_size=self.expected_size,
        )
        other.calibration = self.calibration
        if self.index_type != 'flat' and self.index is not None:
            other.index = faiss.clone_index(self.index)
            other.index.reset()
            if self.vectors is not None:
                other.vectors = self.vectors.empty_like()
            other._apply_nprobe()
        return other

    # ------------------------------------------------------------------ #
    # Searching
    # ------------------------------------------------------------------ #
    def _params(self, allowed_ids: Optional[np.ndarray]):
        selector = None
        if allowed_ids is not None:
            selector = faiss.IDSelectorBatch(
                np.ascontiguousarray(allowed_ids, dtype=np.int64)
            )
        if self.index_type == 'flat':
            return None if selector is None else faiss.SearchParameters(
                sel=selector
            ), selector
        ivf = faiss.SearchParametersIVF(nprobe=int(self.ivf().nprobe))
        if selector is not None:
            ivf.sel = selector
        if self.index_type == 'ivf-sq8':
            return ivf, selector
        return faiss.SearchParametersPreTransform(index_params=ivf), (selector, ivf)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: Optional[np.ndarray] = None,
        spec: Optional[SearchFilter] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        params, _keep = self._params(allowed_ids)
        if self.index_type != 'two-stage':
            return self.index.search(queries, k, params=params)
        wanted = max(k, min(len(self), k * self.refine_factor))
        _, candidates = self.index.search(queries, wanted, params=params)
        return self._rescore(queries, candidates, k)

    def _rescore(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidates from the float16 vectors; top k."""
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        step = max(1, (1 << 22) // max(1, candidates.shape[1] * self.dim))
        for start in range(0, len(queries), step):
            cand = candidates[start : start + step]
            valid = cand >= 0
            rows = self.vectors.gather(cand[valid]).astype(np.float32)
            q = np.repeat(queries[start : start + step], valid.sum(1), axis=0)
            exact = np.full(cand.shape, -np.inf, np.float32)
            exact[valid] = np.einsum('ij,ij->i', rows, q)
            kk = min(k, cand.shape[1])
            part = np.argpartition(-exact, kk - 1, axis=1)[:, :kk]
            order = np.argsort(
                -np.take_along_axis(exact, part, 1), axis=1, kind='stable'
            )
            best = np.take_along_axis(part, order, 1)
            block_scores = np.take_along_axis(exact, best, 1)
            block_ids = np.take_along_axis(cand, best, 1)
            block_ids[~np.isfinite(block_scores)] = -1
            scores[start : start + step, :kk] = block_scores
            ids[start : start + step, :kk] = block_ids
        return scores, ids

    # ------------------------------------------------------------------ #
    # Persistence
    # ------------------------------------------------------------------ #
    def write_payload(
        self, write: Callable[[bytes], int], folder: str, stem: str
    ) -> Dict:
        writer = faiss.PyCallbackIOWriter(write)
        faiss.write_index(self.index, writer)
        del writer  # flushes its buffer through ``write``
        return {}

    def read_payload(self, read: Callable[[int], bytes]) -> None:
        """Read the FAISS index :meth:`write_payload` wrote.

        Raises:
            RuntimeError: FAISS cannot parse the bytes.
        """
        reader = faiss.PyCallbackIOReader(read)
        self.index = faiss.read_index(reader)
        del reader
        if self.index.d != self.dim:
            raise RuntimeError(
                f'the FAISS index has {self.index.d} dims, not {self.dim}'
            )
        self._apply_nprobe()

    def sidecar_files(self) -> List[str]:
        return [self.vectors.path] if self.vectors is not None else []

    def close(self) -> None:
        self.vectors = None
