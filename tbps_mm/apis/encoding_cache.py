"""``EncodingCache``: encoded vectors kept on disk until the index holds them.

Encoding a large gallery takes hours; an index is written only at the end.
So that a killed build loses at most one chunk of work, the vectors are
written chunk by chunk into a folder next to the index
(``<index file>.encoding/``) and found again by the next run:

* ``chunk_<n>.npz``: one chunk's ``keys`` (image paths), ``stats``
  (``[size, mtime_ns]`` of each file when it was encoded) and ``vectors``
  (float32); written to a temporary name, then renamed;
* ``manifest.json``: the chunk files that are complete and the fingerprint
  (model and pipeline) their vectors were made with; rewritten atomically
  (temporary file + rename) after each chunk, so it never names a partial
  chunk.

On opening, files the manifest does not name (a chunk or manifest cut short
by a kill, ``*.tmp`` orphans) are removed; a cache made with another model or
pipeline is emptied. A vector is reused only for a file whose size and
modification time are unchanged. The index builder removes the folder once
the index is written. A folder that cannot be written only costs the
resumability: the chunks stay in memory.

Example:
    >>> cache = EncodingCache('gallery.idx.encoding', fingerprint)
    >>> cache.add(['a.jpg'], vectors, [[1234, 1700000000000000000]])
    >>> [keys for keys, _ in cache.chunks()]
    [['a.jpg']]
"""

import json
import os
import os.path as osp
import shutil
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from mmengine.logging import print_log

__all__ = ['EncodingCache', 'CACHE_SUFFIX']

#: Appended to the index file's name to name the cache folder.
CACHE_SUFFIX = '.encoding'
_FORMAT = 'tbps_mm-encoding-cache'
_VERSION = 1
_MANIFEST = 'manifest.json'


def _write_atomically(path: str, write) -> None:
    """Write ``path`` through ``write(file)`` to a temporary name, then rename."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


class EncodingCache:
    """Chunks of encoded vectors in a folder, resumable after a kill.

    Args:
        folder (str): The cache folder (created at the first chunk).
        fingerprint (dict): What the vectors depend on (model, pipeline);
            a cache made with another one is emptied.

    Example:
        >>> cache = EncodingCache(index_file + CACHE_SUFFIX, fingerprints)
        >>> reusable = cache.reusable(listing)  # path -> stats still valid
    """

    def __init__(self, folder: str, fingerprint: Mapping) -> None:
        self.folder = folder
        self.fingerprint = json.loads(json.dumps(fingerprint, default=str))
        self.files: List[str] = []
        self._memory: Dict[str, Dict[str, np.ndarray]] = {}
        self._on_disk = True
        self._open()

    # ------------------------------------------------------------------ #
    def _open(self) -> None:
        if not osp.isdir(self.folder):
            return
        manifest = self._read_manifest()
        if manifest is None:
            self.files = []
        elif manifest.get('fingerprint') != self.fingerprint:
            print_log(
                f'The encoding cache "{self.folder}" was made with another model '
                'or pipeline: emptied',
                logger='current',
            )
            self.files = []
        else:
            self.files = list(manifest['chunks'])
        try:
            for name in os.listdir(self.folder):
                if name != _MANIFEST and name not in self.files:
                    # A chunk cut short by a kill, or a temporary file.
                    os.remove(osp.join(self.folder, name))
            if not self.files and osp.exists(osp.join(self.folder, _MANIFEST)):
                os.remove(osp.join(self.folder, _MANIFEST))
        except OSError as err:
            print_log(
                f'Cannot tidy the encoding cache "{self.folder}" ({err}): it is '
                'not used; encoded vectors are kept in memory',
                logger='current',
                level=30,
            )
            self.files, self._on_disk = [], False

    def _read_manifest(self) -> Optional[dict]:
        path = osp.join(self.folder, _MANIFEST)
        if not osp.isfile(path):
            return None
        try:
            with open(path, encoding='utf-8') as f:
                manifest = json.load(f)
        except (OSError, ValueError) as err:
            print_log(
                f'The encoding cache manifest "{path}" cannot be read ({err}): '
                'the cache is emptied',
                logger='current',
                level=30,
            )
            return None
        if (
            not isinstance(manifest, dict)
            or manifest.get('format') != _FORMAT
            or manifest.get('version') != _VERSION
            or not isinstance(manifest.get('chunks'), list)
        ):
            return None
        return manifest

    def _load(self, name: str) -> Dict[str, np.ndarray]:
        if name in self._memory:
            return self._memory[name]
        with np.load(osp.join(self.folder, name), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    # ------------------------------------------------------------------ #
    def __len__(self) -> int:
        """The chunks held."""
        return len(self.files)

    def reusable(self, listing: Mapping[str, Sequence[int]]) -> Dict[str, int]:
        """Paths whose cached vector is still valid, with their chunk number.

        Args:
            listing (Mapping[str, Sequence[int]]): Path -> current
                ``[size, mtime_ns]``.

        Returns:
            dict[str, int]: Path -> index of the chunk that holds it.
        """
        found: Dict[str, int] = {}
        for number, name in enumerate(self.files):
            chunk = self._load(name)
            for key, stat in zip(chunk['keys'].tolist(), chunk['stats'].tolist()):
                if list(listing.get(key, ())) == stat:
                    found[key] = number
        return found

    def add(
        self, keys: Sequence[str], vectors: np.ndarray, stats: Sequence[Sequence[int]]
    ) -> None:
        """Keep one chunk (on disk when the folder can be written).

        Args:
            keys (Sequence[str]): Image paths.
            vectors (np.ndarray): (len(keys), F) float32.
            stats (Sequence[Sequence[int]]): ``[size, mtime_ns]`` per key.
        """
        chunk = dict(
            keys=np.asarray(list(keys), dtype=str),
            stats=np.asarray(stats, dtype=np.int64).reshape(len(keys), 2),
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
        )
        name = f'chunk_{len(self.files):06d}.npz'
        if self._on_disk:
            try:
                os.makedirs(self.folder, exist_ok=True)
                _write_atomically(
                    osp.join(self.folder, name), lambda f: np.savez(f, **chunk)
                )
                manifest = dict(
                    format=_FORMAT,
                    version=_VERSION,
                    fingerprint=self.fingerprint,
                    chunks=self.files + [name],
                )
                _write_atomically(
                    osp.join(self.folder, _MANIFEST),
                    lambda f: f.write(json.dumps(manifest).encode()),
                )
            except PermissionError as err:
                print_log(
                    f'Cannot write the encoding cache "{self.folder}" ({err}): '
                    'encoded vectors are kept in memory (an interrupted build '
                    'will start again)',
                    logger='current',
                    level=30,
                )
                self._on_disk = False
        if not self._on_disk:
            self._memory[name] = chunk
        self.files.append(name)

    def chunks(
        self, wanted: Optional[Mapping[str, Sequence[int]]] = None
    ) -> Iterator[Tuple[List[str], np.ndarray]]:
        """The chunks in the order written, as ``(keys, vectors)``.

        Args:
            wanted (Mapping[str, Sequence[int]], optional): Path -> current
                ``[size, mtime_ns]``; when given, only the rows of those
                paths with unchanged stats are yielded (first copy only).

        Yields:
            tuple[list[str], np.ndarray]: Keys and their (n, F) vectors;
            chunks left with no row are not yielded.
        """
        seen = set()
        for name in self.files:
            chunk = self._load(name)
            keys = chunk['keys'].tolist()
            rows = list(range(len(keys)))
            if wanted is not None:
                stats = chunk['stats'].tolist()
                rows = [
                    i
                    for i in rows
                    if keys[i] not in seen and list(wanted.get(keys[i], ())) == stats[i]
                ]
            seen.update(keys[i] for i in rows)
            if rows:
                yield [keys[i] for i in rows], chunk['vectors'][rows]

    def remove(self) -> None:
        """Delete the cache (after the index that holds its vectors is saved)."""
        self.files, self._memory = [], {}
        if osp.isdir(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)
