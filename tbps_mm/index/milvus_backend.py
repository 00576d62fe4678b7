"""``MilvusBackend``: a ``GalleryIndex`` whose vectors live in Milvus.

The same index, served by Milvus instead of in-process FAISS: a Milvus Lite
file (``uri='gallery.db'``, embedded, for one machine) or a Milvus
Standalone / cluster server (``uri='http://host:19530'``, with ``token``).
One collection holds, per item, its int64 id (the primary key), its vector
and the scalar fields filters use (``camera``, ``source``, ``time``,
``has_time``); a :class:`SearchFilter` becomes a Milvus boolean expression
evaluated by Milvus (``pushes_down_filters``). Keys and the rest of the
metadata stay in the index's SQLite store, as with FAISS.

Milvus persists the collection itself; the index file records the URI and
collection name (never the token: pass it again, or set ``MILVUS_TOKEN``).
A new index takes its collection over: a collection of that name is
dropped first. Needs the ``milvus`` extra (``pymilvus``, ``milvus-lite``).

Example:
    >>> index = GalleryIndex(1280, backend='milvus',
    ...                      backend_options=dict(uri='gallery.db'))
    >>> index.add(keys, vectors, metadata=[dict(camera='cam1')] * len(keys))
    >>> index.search(query, 10, filter=dict(cameras=['cam1']))
"""

import os
import os.path as osp
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .backend import IndexBackend
from .search_filter import SearchFilter

__all__ = ['MilvusBackend', 'DEFAULT_COLLECTION']

DEFAULT_COLLECTION = 'tbps_mm_gallery'
#: Exact inner-product search (what Milvus Lite supports best); a server may
#: be given e.g. ``dict(index_type='HNSW', params=dict(M=16, efConstruction=200))``.
DEFAULT_INDEX_PARAMS = dict(index_type='FLAT', params={})
_MAX_STRING = 65_535
#: Rows per insert request (Milvus limits a request's size).
_INSERT_ROWS = 2_000


def _client(uri: str, token: Optional[str]):
    try:
        from pymilvus import MilvusClient
    except ImportError as err:
        raise ImportError(
            'the Milvus backend needs the "milvus" extra: pip install "tbps_mm[milvus]"'
        ) from err
    return MilvusClient(uri, token=token or os.environ.get('MILVUS_TOKEN', ''))


class MilvusBackend(IndexBackend):
    """Vectors and filterable metadata in a Milvus collection.

    Args:
        dim (int): Vector dimension.
        uri (str): A Milvus Lite file (``*.db``, made absolute) or a server
            URI.
        collection (str): The collection name.
        token (str, optional): Server credentials (not saved).
        index_params (dict, optional): ``index_type`` and ``params`` of the
            vector index (default exact ``FLAT``).
        search_params (dict, optional): Search ``params`` (e.g. ``ef``).
    """

    name = 'milvus'
    pushes_down_filters = True

    def __init__(
        self,
        dim: int,
        uri: str = 'tbps_mm_gallery.db',
        collection: str = DEFAULT_COLLECTION,
        token: Optional[str] = None,
        index_params: Optional[Dict] = None,
        search_params: Optional[Dict] = None,
        _create: bool = True,
    ) -> None:
        super().__init__(dim)
        if '://' not in uri:
            uri = osp.abspath(uri)
            os.makedirs(osp.dirname(uri), exist_ok=True)
        self.uri, self.collection = uri, str(collection)
        self.index_params = dict(index_params or DEFAULT_INDEX_PARAMS)
        self.search_params = dict(search_params or {})
        self.client = _client(uri, token)
        if _create:
            self._create_collection()
        elif not self.client.has_collection(self.collection):
            raise ValueError(f'Milvus at "{uri}" has no collection "{self.collection}"')
        else:
            self.client.load_collection(self.collection)
        self._count = self._query_count()

    @classmethod
    def reopen(
        cls, dim: int, config: Dict, token: Optional[str] = None
    ) -> 'MilvusBackend':
        """The backend a saved index recorded (its collection must exist).

        Raises:
            ValueError: The collection is gone.
        """
        return cls(
            dim,
            uri=config['uri'],
            collection=config['collection'],
            token=token,
            index_params=config.get('index_params'),
            search_params=config.get('search_params'),
            _create=False,
        )

    def _create_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field('id', DataType.INT64, is_primary=True)
        schema.add_field('vector', DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field('camera', DataType.VARCHAR, max_length=_MAX_STRING)
        schema.add_field('source', DataType.VARCHAR, max_length=_MAX_STRING)
        schema.add_field('time', DataType.DOUBLE)
        schema.add_field('has_time', DataType.BOOL)
        params = self.client.prepare_index_params()
        params.add_index(
            field_name='vector',
            index_type=self.index_params.get('index_type', 'FLAT'),
            metric_type='IP',
            params=self.index_params.get('params', {}),
        )
        self.client.create_collection(
            self.collection, schema=schema, index_params=params
        )

    def _query_count(self) -> int:
        rows = self.client.query(self.collection, filter='', output_fields=['count(*)'])
        return int(rows[0]['count(*)'])

    def __len__(self) -> int:
        return self._count

    @property
    def is_trained(self) -> bool:
        return True

    def train(self, sample: np.ndarray) -> None:
        """Nothing to learn: Milvus builds its index as data arrives."""

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        metadata: Optional[Sequence[dict]] = None,
    ) -> None:
        metadata = metadata if metadata is not None else [{}] * len(ids)
        rows = []
        for item_id, vector, meta in zip(ids.tolist(), vectors, metadata):
            meta = meta or {}
            when = meta.get('time')
            rows.append(
                dict(
                    id=item_id,
                    vector=vector.tolist(),
                    camera=meta.get('camera') or '',
                    source=meta.get('source') or '',
                    time=float(when) if when is not None else 0.0,
                    has_time=when is not None,
                )
            )
        for start in range(0, len(rows), _INSERT_ROWS):
            self.client.insert(self.collection, rows[start : start + _INSERT_ROWS])
        self._count += len(rows)

    def remove(self, ids: np.ndarray) -> int:
        ids = [int(i) for i in ids]
        held = self.client.query(
            self.collection, filter=f'id in {ids}', output_fields=['id']
        )
        held_ids = [row['id'] for row in held]
        if held_ids:
            self.client.delete(self.collection, ids=held_ids)
        self._count -= len(held_ids)
        return len(held_ids)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed_ids: Optional[np.ndarray] = None,
        spec: Optional[SearchFilter] = None,
    ) -> Tuple[np.ndarray, np.ndarray]:
        expr = spec.to_milvus() if spec is not None else ''
        if allowed_ids is not None:
            ids = ', '.join(str(int(i)) for i in allowed_ids)
            expr = f'({expr}) and id in [{ids}]' if expr else f'id in [{ids}]'
        hits = self.client.search(
            self.collection,
            data=[q.tolist() for q in queries],
            limit=int(k),
            filter=expr,
            output_fields=['id'],
            search_params=dict(metric_type='IP', params=self.search_params),
        )
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for row, found in enumerate(hits):
            for col, hit in enumerate(list(found)[:k]):
                scores[row, col] = hit['distance']
                ids[row, col] = hit['id']
        return scores, ids

    def empty_like(self) -> 'MilvusBackend':
        """Refused: a Milvus collection lives on its server and holds no
        trained state, so it is emptied in place (:meth:`remove`) or a new
        collection is created by name, never cloned."""
        raise ValueError(
            f'the Milvus collection {self.collection!r} cannot be cloned: '
            'remove its items, or open a new collection by name'
        )

    def config(self) -> Dict:
        return dict(
            uri=self.uri,
            collection=self.collection,
            index_params=self.index_params,
            search_params=self.search_params,
        )

    def describe(self) -> str:
        return (
            f'milvus ({self.index_params.get("index_type", "FLAT")}, collection '
            f'"{self.collection}" at {self.uri})'
        )

    def write_payload(
        self, write: Callable[[bytes], int], folder: str, stem: str
    ) -> Dict:
        # Milvus holds the vectors; make what was inserted durable.
        self.client.flush(self.collection)
        return {}

    def close(self) -> None:
        self.client.close()
