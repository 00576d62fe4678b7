"""``TrackGallery``: the searchable person tracks of indexed videos.

One gallery entry per track: its pooled fused vector in an exact
:class:`~tbps_mm.apis.gallery_index.GalleryIndex` (and a copy, base64
float32, for "find similar": any index may search, not every index returns
its vectors), and a metadata record
(source video and its content hash, camera, start / end time in the video
and on the wall clock, frame numbers, every box with its score, the path of
the representative crop). The records, the fingerprint of the encoder and
of each indexed video ride in the index file's JSON header, so the gallery
is one file, written atomically and checksummed like an image gallery.

:meth:`TrackGallery.search` ranks tracks by the model's fused score and
applies metadata filters (cameras, a time window, a minimum score). The
index is exact and the filters are applied to the full ranking, so a
filtered search returns exactly the best tracks that pass the filters.

:func:`insert_tracks` is the one function through which tracks enter a
gallery, so that another store (a database-backed index) takes its place by
replacing that function and the class.

Example:
    >>> gallery = TrackGallery.open('footage.tracks', encoder='sha...')
    >>> insert_tracks(gallery, keys, vectors, records)
    >>> hits = gallery.search(query_vector, topk=10, cameras=['2'])
"""

import base64
import os
import os.path as osp
from datetime import datetime, time, timedelta
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .gallery_index import GalleryIndex

__all__ = [
    'TrackGallery',
    'TrackGalleryError',
    'insert_tracks',
    'track_index_metadata',
    'wall_clock_seconds',
    'FORMAT',
]

#: The ``kind`` written in a track gallery's metadata.
FORMAT = 'tbps_mm.video_tracks/1'

TimeBound = Union[None, datetime, time]


class TrackGalleryError(ValueError):
    """A track gallery file that cannot be used as asked (named)."""


def _overlaps(record: dict, time_from: TimeBound, time_to: TimeBound) -> bool:
    """Whether a track's wall-clock interval meets the window.

    Bounds are ``datetime`` (absolute) or ``time`` (time of day, any date).
    """
    if record.get('start_time') is None:
        return False
    start = datetime.fromisoformat(record['start_time'])
    end = datetime.fromisoformat(record['end_time'])
    if time_from is not None:
        if isinstance(time_from, datetime):
            if end < time_from:
                return False
        elif end.date() == start.date() and end.time() < time_from:
            return False
    if time_to is not None:
        if isinstance(time_to, datetime):
            if start > time_to:
                return False
        elif end.date() == start.date() and start.time() > time_to:
            return False
    return True


class TrackGallery:
    """Tracks of indexed videos: vectors, records and video fingerprints.

    Args:
        path (str): The gallery file.
        encoder (str): Fingerprint of the encoder that made the vectors.

    Attributes:
        records (dict[str, dict]): Track key -> record.
        videos (dict[str, dict]): Video content SHA-256 -> what was indexed
            (path, camera, start time, settings fingerprint, track keys,
            counts, any decoding problem).

    Example:
        >>> gallery = TrackGallery.open('footage.tracks', encoder='abc')
    """

    def __init__(self, path: str, encoder: str) -> None:
        self.path = osp.abspath(path)
        self.encoder = encoder
        self.index: Optional[GalleryIndex] = None
        self.records: Dict[str, dict] = {}
        self.videos: Dict[str, dict] = {}
        # key -> base64 of the float32 vector (what "find similar" searches)
        self._vectors: Dict[str, str] = {}

    # ------------------------------------------------------------------ #
    @classmethod
    def open(cls, path: str, encoder: str, rebuild: bool = False) -> 'TrackGallery':
        """Load the gallery at ``path``, or start an empty one.

        Args:
            path (str): The gallery file (need not exist).
            encoder (str): The current encoder's fingerprint.
            rebuild (bool): Start empty even if the file exists (it is
                replaced on the next :meth:`save`). Defaults to False.

        Returns:
            TrackGallery: The gallery.

        Raises:
            TrackGalleryError: The file is not a track gallery, or its
                tracks were encoded by another model (use another file or
                ``rebuild``).
        """
        gallery = cls(path, encoder)
        if rebuild or not osp.isfile(path):
            return gallery
        index = GalleryIndex.load(path)
        meta = index.metadata
        if meta.get('kind') != FORMAT:
            raise TrackGalleryError(
                f'"{path}" is a gallery index but not a video track gallery '
                f'(kind {meta.get("kind")!r}); give another --index file'
            )
        if meta.get('encoder') != encoder:
            raise TrackGalleryError(
                f'the tracks in "{path}" were encoded by another model or '
                f'pipeline (fingerprint {str(meta.get("encoder"))[:12]}..., now '
                f'{encoder[:12]}...); index into a new file or rebuild it'
            )
        gallery.index = index
        gallery.records = dict(meta.get('tracks', {}))
        gallery.videos = dict(meta.get('videos', {}))
        gallery._vectors = dict(meta.get('vectors', {}))
        if set(gallery._vectors) != set(gallery.records) or len(index) != len(
            gallery.records
        ):
            raise TrackGalleryError(
                f'"{path}" is inconsistent: {len(index)} vectors, '
                f'{len(gallery.records)} track records and {len(gallery._vectors)} '
                'stored copies; rebuild it'
            )
        return gallery

    def __len__(self) -> int:
        return len(self.records)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    @property
    def crop_dir(self) -> str:
        """Where the representative crops are saved (beside the file)."""
        return self.path + '.crops'

    def save(self) -> None:
        """Write the gallery (atomically)."""
        if self.index is None:
            return
        os.makedirs(osp.dirname(self.path) or '.', exist_ok=True)
        self.index.save(
            self.path,
            dict(
                kind=FORMAT,
                encoder=self.encoder,
                tracks=self.records,
                videos=self.videos,
                vectors=self._vectors,
            ),
        )

    def remove_video(self, sha256: str) -> int:
        """Remove a video's tracks (and their crops).

        Args:
            sha256 (str): The video's content hash.

        Returns:
            int: Tracks removed.
        """
        entry = self.videos.pop(sha256, None)
        if entry is None:
            return 0
        keys = [k for k in entry.get('tracks', []) if k in self.records]
        if self.index is not None:
            self.index.remove(keys)
        for key in keys:
            self._vectors.pop(key, None)
            crop = self.records.pop(key).get('crop')
            if crop and osp.isfile(osp.join(self.crop_dir, crop)):
                os.remove(osp.join(self.crop_dir, crop))
        return len(keys)

    def record(self, key: str) -> Optional[dict]:
        """One track's record (None for a key the gallery does not hold)."""
        record = self.records.get(key)
        return None if record is None else dict(record)

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        """The vectors of tracks (for "find similar").

        Args:
            keys (Sequence[str]): Track keys.

        Returns:
            np.ndarray: (len(keys), D) float32, in the order of ``keys``.

        Raises:
            KeyError: A key the gallery does not hold.
        """
        missing = [k for k in keys if k not in self._vectors]
        if missing:
            raise KeyError(f'not in the gallery: {missing[:5]}')
        return np.stack(
            [
                np.frombuffer(base64.b64decode(self._vectors[k]), np.float32)
                for k in keys
            ]
        )

    # ------------------------------------------------------------------ #
    def search(
        self,
        query: np.ndarray,
        topk: int = 10,
        cameras: Optional[Sequence[str]] = None,
        time_from: TimeBound = None,
        time_to: TimeBound = None,
        min_score: Optional[float] = None,
        exclude: Sequence[str] = (),
    ) -> List[dict]:
        """The best tracks for a query vector that pass the filters.

        Args:
            query (np.ndarray): (D,) fused query vector.
            topk (int): Results wanted.
            cameras (Sequence[str], optional): Keep tracks of these cameras.
            time_from (datetime | time, optional): Keep tracks that end at or
                after this (a ``time`` compares the time of day).
            time_to (datetime | time, optional): Keep tracks that start at or
                before this.
            min_score (float, optional): Keep scores at or above this.
            exclude (Sequence[str]): Track keys left out (the query track of
                "find similar").

        Returns:
            list[dict]: The track records, best first, each with ``key``,
            ``score``, ``rank`` and ``crop_path`` (absolute) added. A time
            filter leaves out tracks of videos with no start time.

        Raises:
            ValueError: ``topk < 1`` or a reversed time window.
        """
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        if (
            time_from is not None
            and time_to is not None
            and isinstance(time_from, datetime) != isinstance(time_to, datetime)
        ):
            raise ValueError(
                'time_from and time_to must both be times of day or both full '
                f'dates and times, got {time_from!r} and {time_to!r}'
            )
        if (
            time_from is not None
            and time_to is not None
            and type(time_from) is type(time_to)
            and time_from > time_to
        ):
            raise ValueError(
                f'time window ends ({time_to}) before it starts ({time_from})'
            )
        if self.index is None or not len(self.index):
            return []
        wanted = None if cameras is None else {str(c) for c in cameras}
        excluded = set(exclude)
        scores, keys = self.index.search(np.asarray(query, np.float32), len(self.index))
        hits = []
        for score, key in zip(scores[0].tolist(), keys[0]):
            if min_score is not None and score < min_score:
                break  # scores are sorted: nothing further passes
            record = self.records[key]
            if key in excluded:
                continue
            if wanted is not None and record['camera'] not in wanted:
                continue
            if (time_from is not None or time_to is not None) and not _overlaps(
                record, time_from, time_to
            ):
                continue
            hit = dict(record, key=key, score=float(score), rank=len(hits) + 1)
            hit['crop_path'] = osp.join(self.crop_dir, record['crop'])
            hits.append(hit)
            if len(hits) == topk:
                break
        return hits


def insert_tracks(
    gallery: TrackGallery,
    keys: Sequence[str],
    vectors: np.ndarray,
    records: Sequence[dict],
) -> None:
    """Add tracks to a gallery: the one way tracks enter a store.

    Args:
        gallery (TrackGallery): The gallery.
        keys (Sequence[str]): One unique key per track.
        vectors (np.ndarray): (N, D) pooled fused vectors.
        records (Sequence[dict]): One metadata record per track (``camera``,
            ``start_time`` / ``end_time`` ISO or None, ``video``, frames,
            boxes, ``crop``...).

    Raises:
        ValueError: Lengths that differ, or keys already present.
    """
    if not len(keys) == len(vectors) == len(records):
        raise ValueError(
            f'{len(keys)} keys, {len(vectors)} vectors and {len(records)} records'
        )
    if not len(keys):
        return
    if gallery.index is None:
        gallery.index = GalleryIndex(int(np.asarray(vectors).shape[1]), 'flat')
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    gallery.index.add(list(keys), vectors)
    for key, record, vector in zip(keys, records, vectors):
        gallery.records[key] = dict(record)
        gallery._vectors[key] = base64.b64encode(vector.tobytes()).decode('ascii')


def wall_clock_seconds(moment: Optional[str]) -> Optional[float]:
    """An ISO wall-clock time as seconds since 1970-01-01 (the clock's own
    zone: times are compared with each other, never converted).

    Example:
        >>> wall_clock_seconds('1970-01-01T00:01:00')
        60.0
    """
    if moment is None:
        return None
    parsed = datetime.fromisoformat(moment).replace(tzinfo=None)
    return (parsed - datetime(1970, 1, 1)).total_seconds()


def track_index_metadata(record: dict) -> dict:
    """A track record as a gallery index's per-item metadata columns.

    For stores with metadata columns and filters (camera, time, source) and
    a JSON ``extra``: ``camera`` is the track's camera, ``time`` its
    wall-clock start in seconds (:func:`wall_clock_seconds`; None without a
    start time), ``source`` its video file, and ``extra`` the rest of the
    record (end time, frames, boxes, crop...).

    Args:
        record (dict): A track record (see :class:`TrackGallery`).

    Returns:
        dict: ``camera``, ``time``, ``source`` and ``extra``.

    Example:
        >>> track_index_metadata(dict(camera='2', video='cam2.mp4',
        ...     start_time='1970-01-01T00:00:05', end_time=None))['time']
        5.0
    """
    extra = {k: v for k, v in record.items() if k not in ('camera', 'video')}
    return dict(
        camera=str(record['camera']),
        time=wall_clock_seconds(record.get('start_time')),
        source=record['video'],
        extra=extra,
    )


def wall_clock(start_time: Optional[str], seconds: float) -> Optional[str]:
    """``start_time`` (ISO) plus ``seconds``, as ISO (None if no start)."""
    if start_time is None:
        return None
    moment = datetime.fromisoformat(start_time) + timedelta(seconds=float(seconds))
    return moment.isoformat(timespec='milliseconds')
