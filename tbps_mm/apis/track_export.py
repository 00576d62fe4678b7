"""Track search results as CSV or JSON, and the time bounds searches take.

One place for what ``tools/search_video.py`` writes with ``--export`` and
what the track search page downloads, and for how both read a time bound
typed by a person (``HH:MM[:SS]`` for a time of day, or an ISO date and
time).

Example:
    >>> hits = gallery.search(query, topk=10)
    >>> text = tracks_csv(hits)          # one row per track
    >>> parse_time_bound('10:05', '--time-to')
    datetime.time(10, 5)
"""

import csv
import io
import json
from datetime import datetime, time
from typing import Sequence, Union

__all__ = ['TRACK_CSV_FIELDS', 'parse_time_bound', 'tracks_csv', 'tracks_json']

#: The columns of a CSV export (a JSON export holds every record field).
TRACK_CSV_FIELDS = (
    'rank', 'score', 'key', 'camera', 'start_time', 'end_time', 'start', 'end',
    'first_frame', 'last_frame', 'best_frame', 'max_score', 'video', 'crop_path',
)  # fmt: skip


def parse_time_bound(text: str, name: str = 'time') -> Union[time, datetime]:
    """A time bound as typed: ``HH:MM[:SS]`` or an ISO date and time.

    Args:
        text (str): The bound.
        name (str): What errors call it (e.g. ``'--time-from'``).

    Returns:
        time | datetime: A time of day, or an absolute time.

    Raises:
        ValueError: Neither (the text and ``name`` quoted).

    Example:
        >>> parse_time_bound('2025-06-02T10:00:00')
        datetime.datetime(2025, 6, 2, 10, 0)
    """
    text = text.strip()
    for fmt in ('%H:%M', '%H:%M:%S'):
        try:
            return datetime.strptime(text, fmt).time()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f'{name} must be HH:MM, HH:MM:SS or an ISO date and time '
            f'(2025-06-02T10:00:00), got {text[:40]!r}'
        ) from None


def tracks_csv(hits: Sequence[dict], fields: Sequence[str] = TRACK_CSV_FIELDS) -> str:
    """One CSV row per track, with a header.

    Args:
        hits (Sequence[dict]): Track search results.
        fields (Sequence[str]): The columns. Defaults to
            :data:`TRACK_CSV_FIELDS`.

    Returns:
        str: The CSV text.
    """
    out = io.StringIO(newline='')
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction='ignore')
    writer.writeheader()
    for hit in hits:
        writer.writerow(hit)
    return out.getvalue()


def tracks_json(hits: Sequence[dict]) -> str:
    """The track records, every field (boxes included), as a JSON list."""
    return json.dumps(list(hits), indent=1) + '\n'
