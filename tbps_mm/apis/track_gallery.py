"""``TrackGallery``: the searchable person tracks of indexed videos.

One entry per track in a :class:`tbps_mm.index.GalleryIndex`: its pooled
fused vector in the vector backend, and its metadata in the index's SQLite
metadata store, in the columns the index filters on (``camera``; ``time``:
the track's wall-clock start in seconds; ``source``: its video file) and a
JSON ``extra`` holding the rest of the record (the video's content hash,
start / end time in the video and on the wall clock, frame numbers, every
box with its score, the representative crop) and the track's vector
(float32, base64), which "find similar" searches with. The fingerprint of
the encoder and of each indexed video are the index's own metadata, so the
gallery is the index file (written atomically and checksummed by the index
package) plus the crops beside it.

What this class adds to the index: track records in and out, the videos
indexed and under which settings, and the time filter of a video search.
:meth:`TrackGallery.search` ranks tracks by the model's fused score and
pushes the filters down into the index's filter spec
(:class:`tbps_mm.index.SearchFilter`): cameras and the minimum score as
they are; a time window as "the track overlaps the window" (it ends at or
after the window's start and starts at or before its end). The index
filters one time column, so the start-side bound goes down widened by the
longest track the gallery holds and the end side is checked on the rows it
returns; the search asks for more rows until ``topk`` pass or the
candidates run out, so the result is exactly the best tracks that pass
(with an exact index: ``'flat'``, what galleries below
``tbps_mm.index.AUTO_FLAT_MAX`` tracks are). A time-of-day window
(``datetime.time`` bounds) applies to every date the gallery's videos
cover.

:func:`insert_tracks` is the one function through which tracks enter a
gallery.

Example:
    >>> gallery = TrackGallery.open('footage.tracks', encoder='sha...')
    >>> insert_tracks(gallery, keys, vectors, records)
    >>> gallery.save()
    >>> hits = gallery.search(query_vector, topk=10, cameras=['2'],
    ...                       time_from=time(10, 0), time_to=time(10, 5))
"""

import base64
import os
import os.path as osp
from datetime import date, datetime, time, timedelta
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from tbps_mm.index import CorruptIndexError, GalleryIndex

__all__ = [
    'TrackGallery',
    'TrackGalleryError',
    'insert_tracks',
    'track_index_metadata',
    'wall_clock_seconds',
    'FORMAT',
]

#: The ``kind`` written in a track gallery's metadata.
FORMAT = 'tbps_mm.video_tracks/2'
#: ``extra`` fields that are the store's, not the record's.
_VECTOR_FIELD = 'vector'

TimeBound = Union[None, datetime, time]


class TrackGalleryError(ValueError):
    """A track gallery file that cannot be used as asked (named)."""


def wall_clock_seconds(moment: Union[None, str, datetime]) -> Optional[float]:
    """An ISO wall-clock time as seconds since 1970-01-01 (the clock's own
    zone: times are compared with each other, never converted).

    Example:
        >>> wall_clock_seconds('1970-01-01T00:01:00')
        60.0
    """
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return (moment.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()


def track_index_metadata(record: dict, vector: Optional[np.ndarray] = None) -> dict:
    """A track record as the metadata columns of a gallery index item.

    ``camera`` is the track's camera, ``time`` its wall-clock start in
    seconds (:func:`wall_clock_seconds`; None without a start time, and then
    no time window matches it), ``source`` its video file, and ``extra``
    the rest of the record (end time, frames, boxes, crop...), plus the
    vector (float32, base64) when given.

    Args:
        record (dict): A track record (see :class:`TrackGallery`).
        vector (np.ndarray, optional): The track's (D,) vector.

    Returns:
        dict: ``camera``, ``time``, ``source`` and ``extra``.

    Example:
        >>> track_index_metadata(dict(camera='2', video='cam2.mp4',
        ...     start_time='1970-01-01T00:00:05', end_time=None))['time']
        5.0
    """
    extra = {k: v for k, v in record.items() if k not in ('camera', 'video')}
    if vector is not None:
        vector = np.ascontiguousarray(vector, dtype=np.float32)
        extra[_VECTOR_FIELD] = base64.b64encode(vector.tobytes()).decode('ascii')
    return dict(
        camera=str(record['camera']),
        time=wall_clock_seconds(record.get('start_time')),
        source=record['video'],
        extra=extra,
    )


def _record(meta: dict) -> dict:
    """A track record from an index item's metadata columns."""
    extra = dict(meta.get('extra') or {})
    extra.pop(_VECTOR_FIELD, None)
    return dict(extra, camera=meta['camera'], video=meta['source'])


def _dates(start_time: Optional[str], end_time: Optional[str]) -> List[str]:
    """The dates (ISO) an interval of wall-clock times covers."""
    if start_time is None:
        return []
    first = datetime.fromisoformat(start_time).date()
    last = datetime.fromisoformat(end_time or start_time).date()
    return [
        (first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)
    ]


def _check_window(time_from: TimeBound, time_to: TimeBound) -> None:
    for name, bound in (('time_from', time_from), ('time_to', time_to)):
        if bound is not None and not isinstance(bound, (datetime, time)):
            raise ValueError(
                f'{name} must be a datetime or a time of day, got {bound!r}'
            )
    if time_from is None or time_to is None:
        return
    if isinstance(time_from, datetime) != isinstance(time_to, datetime):
        raise ValueError(
            'time_from and time_to must both be times of day or both full '
            f'dates and times, got {time_from!r} and {time_to!r}'
        )
    if time_from > time_to:
        raise ValueError(f'time window ends ({time_to}) before it starts ({time_from})')


class TrackGallery:
    """Tracks of indexed videos in a gallery index, and the videos indexed.

    Args:
        path (str): The gallery (index) file.
        encoder (str): Fingerprint of the encoder that made the vectors.

    Attributes:
        index (GalleryIndex | None): The tracks (None until the first video
            is indexed).
        videos (dict[str, dict]): Video content SHA-256 -> what was indexed
            (path, camera, start time, settings fingerprint, track keys,
            counts, any decoding problem, the dates it covers).

    Example:
        >>> gallery = TrackGallery.open('footage.tracks', encoder='abc')
    """

    def __init__(self, path: str, encoder: str) -> None:
        self.path = osp.abspath(path)
        self.encoder = encoder
        self.index: Optional[GalleryIndex] = None
        self.videos: Dict[str, dict] = {}
        #: The longest track (wall-clock seconds) ever added: how far before
        #: a window's start a track that overlaps it may start.
        self.max_track_seconds = 0.0

    # ------------------------------------------------------------------ #
    @classmethod
    def open(cls, path: str, encoder: str, rebuild: bool = False) -> 'TrackGallery':
        """Load the gallery at ``path``, or start an empty one.

        Args:
            path (str): The gallery file (need not exist).
            encoder (str): The current encoder's fingerprint.
            rebuild (bool): Start empty even if the file holds a track
                gallery, of any encoder, or is damaged (it is replaced on
                the next :meth:`save`). Defaults to False.

        Returns:
            TrackGallery: The gallery.

        Raises:
            NotAnIndexError: The file is not a gallery index (never
                overwritten).
            CorruptIndexError: The file is damaged.
            TrackGalleryError: The file is a gallery index but not of video
                tracks, or its tracks were encoded by another model (use
                another file or ``rebuild``).
        """
        gallery = cls(path, encoder)
        if not osp.isfile(path):
            return gallery
        index = None
        if rebuild:
            try:
                meta = GalleryIndex.read_header(path)['metadata']
            except CorruptIndexError:
                return gallery  # a damaged file is replaced
        else:
            index = GalleryIndex.load(path)
            meta = index.metadata
        if meta.get('kind') != FORMAT:
            raise TrackGalleryError(
                f'"{path}" is a gallery index but not a video track gallery '
                f'(kind {meta.get("kind")!r}, expected {FORMAT!r}); give another '
                '--index file'
            )
        if rebuild:
            return gallery
        if meta.get('encoder') != encoder:
            raise TrackGalleryError(
                f'the tracks in "{path}" were encoded by another model or '
                f'pipeline (fingerprint {str(meta.get("encoder"))[:12]}..., now '
                f'{encoder[:12]}...); index into a new file or rebuild it'
            )
        gallery.index = index
        gallery.videos = dict(meta.get('videos', {}))
        gallery.max_track_seconds = float(meta.get('max_track_seconds', 0.0))
        listed = sum(len(v.get('tracks', [])) for v in gallery.videos.values())
        if listed != len(index):
            raise TrackGalleryError(
                f'"{path}" is inconsistent: {len(index)} tracks in the index, '
                f'{listed} listed under its videos; rebuild it'
            )
        return gallery

    def __len__(self) -> int:
        return 0 if self.index is None else len(self.index)

    def __contains__(self, key: str) -> bool:
        return self.index is not None and key in self.index

    @property
    def crop_dir(self) -> str:
        """Where the representative crops are saved (beside the file)."""
        return self.path + '.crops'

    @property
    def records(self) -> Dict[str, dict]:
        """Every track's record by key, in the order added (reads every
        row: for listing and evaluation, not for search)."""
        if self.index is None or not len(self.index):
            return {}
        ids = self.index.store.all_ids().tolist()
        keys = self.index.store.keys_of(ids)
        metas = self.index.store.metadata_of(ids)
        return {key: _record(meta) for key, meta in zip(keys, metas)}

    def save(self) -> None:
        """Write the gallery (atomically, through the index)."""
        if self.index is None:
            return
        self.index.save(
            self.path,
            dict(
                kind=FORMAT,
                encoder=self.encoder,
                videos=self.videos,
                max_track_seconds=self.max_track_seconds,
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
        if entry is None or self.index is None:
            return 0
        keys = [k for k in entry.get('tracks', []) if k in self.index]
        ids = self.index.store.ids_of(keys)
        for meta in self.index.store.metadata_of(ids):
            crop = (meta.get('extra') or {}).get('crop')
            if crop and osp.isfile(osp.join(self.crop_dir, crop)):
                os.remove(osp.join(self.crop_dir, crop))
        return self.index.remove(keys)

    def record(self, key: str) -> Optional[dict]:
        """One track's record (None for a key the gallery does not hold):
        one lookup in the metadata store."""
        if key not in self:
            return None
        item = self.index.item(self.index.id_of(key))
        return _record(item)

    def vectors(self, keys: Sequence[str]) -> np.ndarray:
        """The stored vectors of tracks (for "find similar").

        Args:
            keys (Sequence[str]): Track keys.

        Returns:
            np.ndarray: (len(keys), D) float32, in the order of ``keys``.

        Raises:
            KeyError: A key the gallery does not hold.
        """
        missing = [k for k in keys if k not in self]
        if missing:
            raise KeyError(f'not in the gallery: {missing[:5]}')
        metas = self.index.store.metadata_of(self.index.store.ids_of(list(keys)))
        return np.stack(
            [
                np.frombuffer(base64.b64decode(m['extra'][_VECTOR_FIELD]), np.float32)
                for m in metas
            ]
        )

    # ------------------------------------------------------------------ #
    def _windows(
        self, time_from: TimeBound, time_to: TimeBound
    ) -> List[Tuple[Optional[float], Optional[float]]]:
        """The absolute windows (seconds; None: open) a time filter means."""
        if time_from is None and time_to is None:
            return [(None, None)]
        if isinstance(time_from, datetime) or isinstance(time_to, datetime):
            return [(wall_clock_seconds(time_from), wall_clock_seconds(time_to))]
        dates = sorted({d for v in self.videos.values() for d in v.get('dates', [])})
        windows = []
        for day in dates:
            midnight = datetime.combine(date.fromisoformat(day), time(0))
            lo = datetime.combine(midnight, time_from or time.min)
            hi = datetime.combine(midnight, time_to or time.max)
            windows.append((wall_clock_seconds(lo), wall_clock_seconds(hi)))
        return windows

    def _search_window(
        self,
        query: np.ndarray,
        topk: int,
        spec: dict,
        window: Tuple[Optional[float], Optional[float]],
        excluded: set,
    ) -> List[Tuple[float, str, dict]]:
        """The best ``topk`` (score, key, metadata) in one window."""
        lo, hi = window
        spec = dict(spec)
        if lo is not None or hi is not None:
            widened = None if lo is None else lo - self.max_track_seconds
            spec['time'] = [widened, hi]
        found: List[Tuple[float, str, dict]] = []
        k = topk + len(excluded)
        while True:
            k = min(k, len(self.index))
            scores, ids = self.index.search_ids(query[None], k, filter=spec)
            valid = ids[0] >= 0
            row_ids = ids[0][valid].tolist()
            row_scores = scores[0][valid].tolist()
            keys = self.index.store.keys_of(row_ids)
            metas = self.index.store.metadata_of(row_ids)
            found = []
            for score, key, meta in zip(row_scores, keys, metas):
                if key in excluded:
                    continue
                if lo is not None:
                    end = wall_clock_seconds((meta.get('extra') or {}).get('end_time'))
                    if end is None or end < lo:
                        continue
                found.append((float(score), key, meta))
                if len(found) == topk:
                    return found
            if len(row_ids) < k or k == len(self.index):
                return found  # every candidate seen
            k *= 4

    def search(
        self,
        query: np.ndarray,
        topk: int = 10,
        cameras: Optional[Sequence[str]] = None,
        time_from: TimeBound = None,
        time_to: TimeBound = None,
        min_score: Optional[float] = None,
        exclude: Iterable[str] = (),
    ) -> List[dict]:
        """The best tracks for a query vector that pass the filters.

        Args:
            query (np.ndarray): (D,) fused query vector.
            topk (int): Results wanted.
            cameras (Sequence[str], optional): Keep tracks of these cameras.
            time_from (datetime | time, optional): Keep tracks that end at or
                after this.
            time_to (datetime | time, optional): Keep tracks that start at or
                before this. ``time`` bounds compare the time of day, on
                every date the gallery's videos cover; both bounds must be
                of one kind.
            min_score (float, optional): Keep scores at or above this.
            exclude (Iterable[str]): Track keys left out (the query track of
                "find similar").

        Returns:
            list[dict]: The track records, best first, each with ``key``,
            ``score``, ``rank`` and ``crop_path`` (absolute) added. A time
            filter leaves out tracks of videos with no start time.

        Raises:
            ValueError: ``topk < 1``, a reversed time window, or bounds of
                two kinds.
        """
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        _check_window(time_from, time_to)
        if self.index is None or not len(self.index):
            return []
        spec: dict = {}
        if cameras is not None:
            spec['cameras'] = [str(c) for c in cameras]
        if min_score is not None:
            spec['min_score'] = float(min_score)
        query = np.asarray(query, np.float32).reshape(-1)
        excluded = set(exclude)
        best: Dict[str, Tuple[float, dict]] = {}
        for window in self._windows(time_from, time_to):
            for score, key, meta in self._search_window(
                query, topk, spec, window, excluded
            ):
                best[key] = (score, meta)
        ranked = sorted(best.items(), key=lambda kv: -kv[1][0])[:topk]
        hits = []
        for rank, (key, (score, meta)) in enumerate(ranked, start=1):
            hit = dict(_record(meta), key=key, score=score, rank=rank)
            hit['crop_path'] = osp.join(self.crop_dir, hit['crop'])
            hits.append(hit)
        return hits


def insert_tracks(
    gallery: TrackGallery,
    keys: Sequence[str],
    vectors: np.ndarray,
    records: Sequence[dict],
) -> None:
    """Add tracks to a gallery: the one way tracks enter a store.

    Args:
        gallery (TrackGallery): The gallery (its index is created, exact
            while small, on the first tracks).
        keys (Sequence[str]): One unique key per track.
        vectors (np.ndarray): (N, D) pooled fused vectors.
        records (Sequence[dict]): One metadata record per track (``camera``,
            ``video``, ``start_time`` / ``end_time`` ISO or None, frames,
            boxes, ``crop``...).

    Raises:
        ValueError: Lengths that differ, keys already present, or metadata
            the index refuses (named).
    """
    if not len(keys) == len(vectors) == len(records):
        raise ValueError(
            f'{len(keys)} keys, {len(vectors)} vectors and {len(records)} records'
        )
    if not len(keys):
        return
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if gallery.index is None:
        gallery.index = GalleryIndex(int(vectors.shape[1]))
    gallery.index.add(
        list(keys),
        vectors,
        [track_index_metadata(r, v) for r, v in zip(records, vectors)],
    )
    for record in records:
        start = wall_clock_seconds(record.get('start_time'))
        end = wall_clock_seconds(record.get('end_time'))
        if start is not None and end is not None:
            gallery.max_track_seconds = max(gallery.max_track_seconds, end - start)


def wall_clock(start_time: Optional[str], seconds: float) -> Optional[str]:
    """``start_time`` (ISO) plus ``seconds``, as ISO (None if no start)."""
    if start_time is None:
        return None
    moment = datetime.fromisoformat(start_time) + timedelta(seconds=float(seconds))
    return moment.isoformat(timespec='milliseconds')


def covered_dates(records: Sequence[dict]) -> List[str]:
    """The dates (ISO) the wall-clock intervals of track records cover."""
    dates = set()
    for record in records:
        dates.update(_dates(record.get('start_time'), record.get('end_time')))
    return sorted(dates)
