"""``IndexBackend``: what a vector store must do to serve a ``GalleryIndex``.

A backend holds vectors under integer ids and finds the ids of largest inner
product with a query; keys and metadata live in the
:class:`~tbps_mm.index.metadata_store.MetadataStore`. Two backends exist:
:class:`~tbps_mm.index.faiss_backend.FaissBackend` (in-process FAISS, saved
inside the index file) and :class:`~tbps_mm.index.milvus_backend.MilvusBackend`
(a Milvus Lite file or a Milvus server, which persists on its own).

A backend that cannot evaluate a :class:`SearchFilter` itself
(``pushes_down_filters`` False) is given the matching ids instead
(``allowed_ids``); one that can is given the filter.
"""

from abc import ABCMeta, abstractmethod
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .search_filter import SearchFilter

__all__ = ['IndexBackend']


class IndexBackend(metaclass=ABCMeta):
    """A vector store searched by inner product.

    Attributes:
        name (str): ``'faiss'`` or ``'milvus'`` (recorded in the index file).
        dim (int): Vector dimension.
        pushes_down_filters (bool): Whether :meth:`search` evaluates a
            :class:`SearchFilter` itself.
    """

    name: str = ''
    pushes_down_filters: bool = False

    def __init__(self, dim: int) -> None:
        self.dim = int(dim)

    @abstractmethod
    def __len__(self) -> int:
        """Vectors held."""

    @property
    @abstractmethod
    def is_trained(self) -> bool:
        """Whether vectors can be added without training first."""

    @abstractmethod
    def train(self, sample: np.ndarray) -> None:
        """Learn what the backend needs from vectors drawn like the gallery's."""

    @abstractmethod
    def add(
        self, ids: np.ndarray, vectors: np.ndarray, metadata: Sequence[dict]
    ) -> None:
        """Store (N, dim) float32 ``vectors`` under int64 ``ids`` with their
        metadata fields (``camera``, ``time``, ``source``)."""

    @abstractmethod
    def remove(self, ids: np.ndarray) -> int:
        """Delete these ids; returns how many were held."""

    @abstractmethod
    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: Optional[np.ndarray] = None,
        spec: Optional[SearchFilter] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        """(Q, k) float32 scores, best first, and int64 ids (-1 where fewer
        than ``k`` were found), searching only ``allowed_ids`` (when given) or
        the items ``spec`` selects (backends that push filters down)."""

    @abstractmethod
    def config(self) -> Dict:
        """The JSON facts (type, knobs) that rebuild an equivalent backend."""

    @abstractmethod
    def describe(self) -> str:
        """One line, e.g. ``'ivf-sq8 (nlist 4096, nprobe 48)'``."""

    @abstractmethod
    def empty_like(self) -> 'IndexBackend':
        """A new, empty backend with this one's trained state."""

    # Optional capabilities, with the behaviour of a backend that lacks them.

    def sidecar_files(self) -> List[str]:
        """Files next to the index file that this backend reads."""
        return []

    def write_payload(
        self, write: Callable[[bytes], int], folder: str, stem: str
    ) -> Dict:
        """Stream what the index file must hold through ``write``; place any
        sidecar file in ``folder`` under a name starting with ``stem``.
        Returns JSON facts :meth:`read_payload` needs (sizes, checksums)."""
        return {}

    @abstractmethod
    def close(self) -> None:
        """Release files and connections."""
