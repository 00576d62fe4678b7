"""``VectorFile``: full-precision copies of gallery vectors, row = id, on disk.

The two-stage index (``'two-stage'``) finds candidates in compressed codes
and re-scores them from these vectors: float16 (half the bytes of float32,
scores within about 1e-3 of the exact ones), one row per id, in a plain
little-endian file read through a memory map, so only the rows a query
re-scores are read and the operating system caches what is hot. The file is
append-only: rows of removed ids stay until the index is rebuilt, and a row
once written never changes, so the checksums of complete blocks are computed
once (:meth:`block_checksums`). A file created without a path lives in the
temporary folder until :meth:`move_to` gives it its place next to an index
file.

Example:
    >>> vectors = VectorFile.create(4)
    >>> vectors.write(np.arange(2), np.eye(2, 4, dtype=np.float32))
    >>> vectors.gather(np.array([1, 0])).shape
    (2, 4)
"""

import os
import os.path as osp
import shutil
import tempfile
import weakref
import zlib
from typing import List, Optional

import numpy as np

__all__ = ['VectorFile', 'BLOCK_ROWS']

#: Rows per checksummed block.
BLOCK_ROWS = 1 << 14
DTYPE = np.dtype('<f2')


def _remove_if_exists(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class VectorFile:
    """float16 rows on disk, addressed by id.

    Use :meth:`create` (a new temporary file) or :meth:`open` (a saved one).

    Args:
        path (str): The file.
        dim (int): Values per row.
        rows (int): Rows that count (a longer file holds a stale tail).
        temporary (bool): Delete the file when this object goes away.
    """

    def __init__(self, path: str, dim: int, rows: int, temporary: bool) -> None:
        self.path = path
        self.dim = int(dim)
        self.rows = int(rows)
        self._map: Optional[np.memmap] = None
        self._fd: Optional[int] = None
        self._crcs: List[int] = []
        self._finalizer = (
            weakref.finalize(self, _remove_if_exists, path) if temporary else None
        )

    @classmethod
    def create(cls, dim: int, folder: Optional[str] = None) -> 'VectorFile':
        """A new, empty file in ``folder`` (default: the temporary folder),
        deleted with this object unless :meth:`move_to` places it."""
        fd, path = tempfile.mkstemp(
            prefix='tbps_mm_vectors_', suffix='.f16', dir=folder
        )
        os.close(fd)
        return cls(path, dim, 0, temporary=True)

    @classmethod
    def open(cls, path: str, dim: int, rows: int, crcs: List[int]) -> 'VectorFile':
        """A saved file holding at least ``rows`` rows.

        Raises:
            ValueError: The file is shorter than ``rows`` rows.
        """
        size = os.path.getsize(path)
        if size < rows * dim * DTYPE.itemsize:
            raise ValueError(
                f'vector file "{path}" holds {size} bytes, {rows} rows of {dim} '
                'float16 need more (truncated)'
            )
        out = cls(path, dim, rows, temporary=False)
        out._crcs = list(crcs)
        return out

    @property
    def row_bytes(self) -> int:
        return self.dim * DTYPE.itemsize

    def write(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Write the rows of ascending ``ids``, each past every row written
        before (ids only grow; gaps stay zero)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        if ids[0] < self.rows or np.any(np.diff(ids) <= 0):
            raise ValueError(
                f'vector rows are written once, in ascending id order: got ids '
                f'from {int(ids[0])} with {self.rows} rows written'
            )
        data = np.ascontiguousarray(vectors, dtype=DTYPE)
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        with open(self.path, 'r+b') as f:
            for run_ids, run in zip(np.split(ids, breaks), np.split(data, breaks)):
                f.seek(int(run_ids[0]) * self.row_bytes)
                f.write(run.tobytes())
        self.rows = int(ids[-1]) + 1
        self._unmap()

    def _mapped(self) -> np.ndarray:
        if self._map is None or len(self._map) < self.rows:
            self._map = np.memmap(
                self.path, dtype=DTYPE, mode='r', shape=(self.rows, self.dim)
            )
            if self._fd is not None:
                os.close(self._fd)
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._map

    def _prefetch(self, ids: np.ndarray) -> None:
        """Ask the kernel to start reading every row at once (rows not in the
        page cache then arrive in parallel instead of one page fault after
        another)."""
        if not hasattr(os, 'posix_fadvise') or len(ids) < 2:
            return
        for item in ids.tolist():
            os.posix_fadvise(
                self._fd, item * self.row_bytes, self.row_bytes, os.POSIX_FADV_WILLNEED
            )

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """float16 rows of ``ids`` (prefetched together, read in ascending
        order, returned in the order asked)."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.empty((0, self.dim), DTYPE)
        order = np.argsort(ids, kind='stable')
        rows = self._mapped()
        self._prefetch(ids[order])
        out = np.empty((len(ids), self.dim), DTYPE)
        out[order] = rows[ids[order]]
        return out

    def block_checksums(self) -> List[int]:
        """CRC-32 of each block of :data:`BLOCK_ROWS` rows (the last one
        partial); complete blocks are read once in the object's life."""
        complete = self.rows // BLOCK_ROWS
        crcs = self._crcs[:complete]
        block_bytes = BLOCK_ROWS * self.row_bytes
        with open(self.path, 'rb') as f:
            f.seek(len(crcs) * block_bytes)
            for block in range(len(crcs), -(-self.rows // BLOCK_ROWS)):
                size = min(self.rows - block * BLOCK_ROWS, BLOCK_ROWS) * self.row_bytes
                crcs.append(zlib.crc32(f.read(size)))
        self._crcs = crcs[:complete]
        return crcs

    def verify(self, crcs: List[int]) -> Optional[int]:
        """The first block whose checksum differs from ``crcs`` (None: all
        match). Reads the whole file."""
        saved, self._crcs = self._crcs, []
        try:
            mine = self.block_checksums()
        finally:
            if not self._crcs:
                self._crcs = saved
        for block, (a, b) in enumerate(zip(mine, crcs)):
            if a != b:
                return block
        return None if len(mine) == len(crcs) else min(len(mine), len(crcs))

    def move_to(self, path: str) -> None:
        """Give the file its lasting place (moved if it was temporary, else
        copied, so that a saved index keeps its own file)."""
        self._unmap()
        if self._finalizer is not None and self._finalizer.alive:
            try:
                os.replace(self.path, path)
            except OSError:  # another file system
                shutil.copyfile(self.path, path)
                os.remove(self.path)
            self._finalizer.detach()
        else:
            with open(self.path, 'rb') as src, open(path, 'wb') as dst:
                remaining = self.rows * self.row_bytes
                while remaining:
                    chunk = src.read(min(remaining, 1 << 26))
                    if not chunk:
                        raise ValueError(f'vector file "{self.path}" is truncated')
                    dst.write(chunk)
                    remaining -= len(chunk)
        self.path = path
        self._finalizer = None

    def _unmap(self) -> None:
        self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        if getattr(self, '_fd', None) is not None:
            os.close(self._fd)

    def fsync(self) -> None:
        """Flush the file to disk."""
        with open(self.path, 'r+b') as f:
            os.fsync(f.fileno())

    @property
    def disk_bytes(self) -> int:
        """Bytes the rows that count take on disk."""
        return self.rows * self.row_bytes

    def empty_like(self) -> 'VectorFile':
        """A new, empty temporary file in the temporary folder."""
        return VectorFile.create(self.dim)

    def __repr__(self) -> str:
        return f'VectorFile({osp.basename(self.path)!r}, {self.rows} x {self.dim})'
