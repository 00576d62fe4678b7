"""``MetadataStore``: the keys and per-item metadata of a gallery, in SQLite.

The vector backends hold integer ids only; this store maps each id to its
key (an image path or any unique name) and its metadata columns:
``camera``, ``time`` (seconds, any epoch), ``source`` and ``extra`` (a JSON
object for everything else), plus the caller's index-wide metadata (model
and pipeline fingerprints, folders, ...) as JSON values in a ``meta``
table. Every lookup a search needs touches only the rows it returns
(primary-key and unique-key B-trees), so a query costs the same at 10
thousand and at 10 million items; a filter (:class:`SearchFilter`) becomes
one indexed ``SELECT`` of the matching ids.

A store lives in memory until it is saved (:meth:`save_copy` writes a
consistent copy with SQLite's online backup); one opened from a saved file
reads that file and copies it into memory on its first change, so the file
of a saved index is never modified in place.

Example:
    >>> store = MetadataStore()
    >>> store.add([0, 1], ['a.jpg', 'b.jpg'], [dict(camera='c1'), {}])
    >>> store.keys_of([1, 0])
    ['b.jpg', 'a.jpg']
    >>> store.ids_matching(SearchFilter(cameras=('c1',)))
    array([0])
"""

import json
import math
import os
import sqlite3
import urllib.parse
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np

from .search_filter import SearchFilter

__all__ = ['MetadataStore', 'ITEM_FIELDS']

#: Per-item metadata fields a caller may give (``extra`` is a JSON object).
ITEM_FIELDS = ('camera', 'time', 'source', 'extra')
#: SQLite's limit on bound parameters per statement is 32766; stay below.
_MAX_PARAMS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    camera TEXT,
    time REAL,
    source TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS items_camera ON items(camera);
CREATE INDEX IF NOT EXISTS items_time ON items(time);
CREATE INDEX IF NOT EXISTS items_source ON items(source);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _row(item_id: int, key: str, meta: Optional[Mapping]) -> tuple:
    """One ``items`` row, the metadata checked."""
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(ITEM_FIELDS))
    if unknown:
        raise ValueError(
            f'item "{key}": unknown metadata field(s) {unknown}; known: '
            f'{", ".join(ITEM_FIELDS)} (put anything else in "extra")'
        )
    camera, source, when = meta.get('camera'), meta.get('source'), meta.get('time')
    for name, value in (('camera', camera), ('source', source)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f'item "{key}": {name} must be a string, got {value!r}')
    if when is not None:
        if isinstance(when, bool) or not isinstance(when, (int, float)):
            raise ValueError(f'item "{key}": time must be a number, got {when!r}')
        if not math.isfinite(when):
            raise ValueError(f'item "{key}": time must be finite, got {when!r}')
        when = float(when)
    extra = meta.get('extra')
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValueError(f'item "{key}": extra must be a dict, got {extra!r}')
        try:
            extra = json.dumps(extra, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f'item "{key}": extra is not JSON: {err}') from None
    return (item_id, key, camera, when, source, extra)


class MetadataStore:
    """Keys and metadata of gallery items by integer id, in SQLite.

    Args:
        path (str, optional): A saved store to open (read until changed,
            then copied into memory). None: a new, empty store in memory.

    Example:
        >>> store = MetadataStore()
        >>> store.add([7], ['x.jpg'], [dict(time=12.5, extra=dict(frame=3))])
        >>> store.item(7)['extra']
        {'frame': 3}
    """

    def __init__(self, path: Optional[str] = None) -> None:
        self._readonly = path is not None
        if path is None:
            self._db = sqlite3.connect(':memory:', check_same_thread=False)
            self._db.executescript(_SCHEMA)
        else:
            # Read-only: a saved store is never changed in place.
            uri = f'file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro'
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            try:
                self._db.execute(
                    'SELECT id, key, camera, time, source, extra FROM items LIMIT 1'
                )
                self._db.execute('SELECT name, value FROM meta LIMIT 1')
            except sqlite3.DatabaseError as err:
                self._db.close()
                raise ValueError(
                    f'"{path}" is not a gallery metadata store ({err})'
                ) from None
        self._count = self._db.execute('SELECT COUNT(*) FROM items').fetchone()[0]

    def _writable(self) -> sqlite3.Connection:
        """Copy a store opened from a file into memory before its first change."""
        if self._readonly:
            memory = sqlite3.connect(':memory:', check_same_thread=False)
            self._db.backup(memory)
            self._db.close()
            self._db, self._readonly = memory, False
        return self._db

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    # ------------------------------------------------------------------ #
    # Items
    # ------------------------------------------------------------------ #
    def add(
        self,
        ids: Sequence[int],
        keys: Sequence[str],
        metadata: Optional[Sequence[Optional[Mapping]]] = None,
    ) -> None:
        """Add items; all or none (one transaction).

        Args:
            ids (Sequence[int]): New ids.
            keys (Sequence[str]): One unique key per id.
            metadata (Sequence[dict], optional): Per item, any of
                :data:`ITEM_FIELDS`.

        Raises:
            ValueError: A key already stored (named), a bad metadata field,
                or lengths that differ.
        """
        if metadata is None:
            metadata = [None] * len(keys)
        if not len(ids) == len(keys) == len(metadata):
            raise ValueError(
                f'{len(ids)} ids, {len(keys)} keys and {len(metadata)} metadata '
                'entries: one of each per item'
            )
        rows = [_row(int(i), k, m) for i, k, m in zip(ids, keys, metadata)]
        db = self._writable()
        try:
            with db:
                db.executemany('INSERT INTO items VALUES (?, ?, ?, ?, ?, ?)', rows)
        except sqlite3.IntegrityError:
            present = self.ids_of(keys)
            taken = [k for k, i in zip(keys, present) if i is not None]
            raise ValueError(
                f'{len(taken)} key(s) already in the index (remove them first): '
                f'{taken[:5]}'
            ) from None
        self._count += len(rows)

    def remove(self, ids: Sequence[int]) -> int:
        """Delete the items of these ids (unknown ids are ignored).

        Returns:
            int: How many were deleted.
        """
        db = self._writable()
        removed = 0
        with db:
            for chunk in _chunks([int(i) for i in ids]):
                cur = db.execute(
                    f'DELETE FROM items WHERE id IN ({",".join("?" * len(chunk))})',
                    chunk,
                )
                removed += cur.rowcount
        self._count -= removed
        return removed

    def ids_of(self, keys: Sequence[str]) -> List[Optional[int]]:
        """The id of each key (None where unknown), in order."""
        found: Dict[str, int] = {}
        for chunk in _chunks(list(keys)):
            found.update(
                self._db.execute(
                    'SELECT key, id FROM items WHERE key IN '
                    f'({",".join("?" * len(chunk))})',
                    chunk,
                ).fetchall()
            )
        return [found.get(k) for k in keys]

    def keys_of(self, ids: Sequence[int]) -> List[Optional[str]]:
        """The key of each id (None where unknown), in order: one primary-key
        lookup per distinct id."""
        found: Dict[int, str] = {}
        for chunk in _chunks(sorted({int(i) for i in ids})):
            found.update(
                self._db.execute(
                    'SELECT id, key FROM items WHERE id IN '
                    f'({",".join("?" * len(chunk))})',
                    chunk,
                ).fetchall()
            )
        return [found.get(int(i)) for i in ids]

    def item(self, item_id: int) -> Optional[dict]:
        """The key and metadata of one id (None if unknown)."""
        row = self._db.execute(
            'SELECT id, key, camera, time, source, extra FROM items WHERE id = ?',
            (int(item_id),),
        ).fetchone()
        if row is None:
            return None
        out = dict(zip(('id', 'key', 'camera', 'time', 'source', 'extra'), row))
        out['extra'] = json.loads(out['extra']) if out['extra'] is not None else None
        return out

    def metadata_of(self, ids: Sequence[int]) -> List[dict]:
        """The metadata fields (:data:`ITEM_FIELDS`) of each id, in order."""
        rows = {}
        for chunk in _chunks(sorted({int(i) for i in ids})):
            for row in self._db.execute(
                'SELECT id, camera, time, source, extra FROM items WHERE id IN '
                f'({",".join("?" * len(chunk))})',
                chunk,
            ):
                rows[row[0]] = dict(
                    camera=row[1],
                    time=row[2],
                    source=row[3],
                    extra=json.loads(row[4]) if row[4] is not None else None,
                )
        return [rows[int(i)] for i in ids]

    def iter_keys(self) -> Iterator[str]:
        """Every key, in id order (the order they were added)."""
        for (key,) in self._db.execute('SELECT key FROM items ORDER BY id'):
            yield key

    def all_ids(self) -> np.ndarray:
        """Every id, ascending."""
        return np.fromiter(
            (i for (i,) in self._db.execute('SELECT id FROM items ORDER BY id')),
            dtype=np.int64,
            count=self._count,
        )

    def ids_matching(self, spec: SearchFilter) -> np.ndarray:
        """The ids whose metadata pass ``spec`` (ascending int64)."""
        where, params = spec.to_sql()
        rows = self._db.execute(
            f'SELECT id FROM items WHERE {where} ORDER BY id', params
        )
        return np.fromiter((i for (i,) in rows), dtype=np.int64)

    # ------------------------------------------------------------------ #
    # Index-wide metadata
    # ------------------------------------------------------------------ #
    def get_meta(self) -> dict:
        """The caller's index-wide metadata dict."""
        return {
            name: json.loads(value)
            for name, value in self._db.execute('SELECT name, value FROM meta')
        }

    def set_meta(self, metadata: Mapping) -> None:
        """Replace the index-wide metadata (JSON-serialisable values).

        Raises:
            ValueError: A value JSON cannot hold.
        """
        try:
            rows = [(str(k), json.dumps(v)) for k, v in dict(metadata).items()]
        except (TypeError, ValueError) as err:
            raise ValueError(
                f'index metadata is not JSON-serialisable: {err}'
            ) from None
        db = self._writable()
        with db:
            db.execute('DELETE FROM meta')
            db.executemany('INSERT INTO meta VALUES (?, ?)', rows)

    # ------------------------------------------------------------------ #
    # Persistence
    # ------------------------------------------------------------------ #
    def save_copy(self, path: str) -> None:
        """Write a consistent copy of the store to ``path`` (a new file)."""
        target = sqlite3.connect(path)
        try:
            self._db.backup(target)
            target.execute('PRAGMA journal_mode = DELETE')
        finally:
            target.close()


def _chunks(values: list) -> Iterator[list]:
    for start in range(0, len(values), _MAX_PARAMS):
        yield values[start : start + _MAX_PARAMS]
