"""``SearchFilter``: which gallery items a search may return.

One small spec, written as a dict by the API, the command line and a video
search alike, and translated by each place that applies it: to a SQLite
``WHERE`` clause (:class:`~tbps_mm.index.metadata_store.MetadataStore`, whose
matching ids become a FAISS id selector) and to a Milvus boolean expression
(:class:`~tbps_mm.index.milvus_backend.MilvusBackend`).

Spec keys (all optional; an empty spec matches everything):

* ``cameras``: camera ids; an item matches if its camera is one of them.
* ``sources``: sources (e.g. video files or folders); the same rule.
* ``time``: ``[t0, t1]``: the item's time lies in the closed window
  (``None`` on either side leaves it open). Items without a time never
  match a time window.
* ``min_score``: results scoring below it are dropped (after the search).

Example:
    >>> spec = SearchFilter.from_spec(dict(cameras=['cam1'], time=[0, 60]))
    >>> spec.to_sql()
    ('camera IN (?) AND time >= ? AND time <= ?', ['cam1', 0.0, 60.0])
    >>> spec.to_milvus()
    'camera in ["cam1"] and has_time == true and time >= 0.0 and time <= 60.0'
"""

import json
import math
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple, Union

__all__ = ['SearchFilter', 'FILTER_KEYS']

#: The keys a filter spec may hold.
FILTER_KEYS = ('cameras', 'sources', 'time', 'min_score')


def _strings(name: str, value: Any) -> Tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set)):
        raise ValueError(f'filter "{name}" must be a list of strings, got {value!r}')
    bad = [v for v in value if not isinstance(v, str)]
    if bad:
        raise ValueError(f'filter "{name}" holds non-strings: {bad[:5]!r}')
    return tuple(dict.fromkeys(value))


def _number(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'filter "{name}" must be a number, got {value!r}')
    if not math.isfinite(value):
        raise ValueError(f'filter "{name}" must be finite, got {value!r}')
    return float(value)


@dataclass(frozen=True)
class SearchFilter:
    """A parsed filter spec (see the module docstring).

    Args:
        cameras (tuple[str], optional): Allowed camera ids.
        sources (tuple[str], optional): Allowed sources.
        time_from (float, optional): Earliest time allowed.
        time_to (float, optional): Latest time allowed.
        min_score (float, optional): Lowest score returned.
    """

    cameras: Optional[Tuple[str, ...]] = None
    sources: Optional[Tuple[str, ...]] = None
    time_from: Optional[float] = None
    time_to: Optional[float] = None
    min_score: Optional[float] = None

    @classmethod
    def from_spec(
        cls, spec: Union[None, Mapping[str, Any], 'SearchFilter']
    ) -> 'SearchFilter':
        """Parse a spec dict (or pass a ``SearchFilter`` through).

        Args:
            spec (dict | SearchFilter | None): The spec; None matches all.

        Returns:
            SearchFilter: The parsed filter.

        Raises:
            ValueError: An unknown key, a value of the wrong type, or a time
                window whose start is after its end.
        """
        if spec is None:
            return cls()
        if isinstance(spec, SearchFilter):
            return spec
        if not isinstance(spec, Mapping):
            raise ValueError(f'a search filter must be a dict, got {spec!r}')
        unknown = sorted(set(spec) - set(FILTER_KEYS))
        if unknown:
            raise ValueError(
                f'unknown search filter key(s) {unknown}; known: '
                f'{", ".join(FILTER_KEYS)}'
            )
        cameras = spec.get('cameras')
        sources = spec.get('sources')
        time_from = time_to = None
        if spec.get('time') is not None:
            window = spec['time']
            if not isinstance(window, (list, tuple)) or len(window) != 2:
                raise ValueError(
                    f'filter "time" must be [t0, t1] (None for an open side), '
                    f'got {window!r}'
                )
            time_from = _number('time', window[0])
            time_to = _number('time', window[1])
            if time_from is not None and time_to is not None and time_from > time_to:
                raise ValueError(
                    f'filter "time" window starts after it ends: {list(window)}'
                )
        return cls(
            cameras=None if cameras is None else _strings('cameras', cameras),
            sources=None if sources is None else _strings('sources', sources),
            time_from=time_from,
            time_to=time_to,
            min_score=_number('min_score', spec.get('min_score')),
        )

    @property
    def selects_items(self) -> bool:
        """Whether the filter restricts which items are searched (the
        metadata conditions; ``min_score`` only trims results)."""
        return (
            self.cameras is not None
            or self.sources is not None
            or self.time_from is not None
            or self.time_to is not None
        )

    def to_sql(self) -> Tuple[str, List[Any]]:
        """A SQLite condition over the ``camera``, ``source`` and ``time``
        columns and its parameters (``'1'`` when nothing is selected)."""
        terms: List[str] = []
        params: List[Any] = []
        for column, values in (('camera', self.cameras), ('source', self.sources)):
            if values is not None:
                if not values:
                    terms.append('0')
                    continue
                terms.append(f'{column} IN ({",".join("?" * len(values))})')
                params.extend(values)
        if self.time_from is not None:
            terms.append('time >= ?')
            params.append(self.time_from)
        if self.time_to is not None:
            terms.append('time <= ?')
            params.append(self.time_to)
        return (' AND '.join(terms) or '1'), params

    def to_milvus(self) -> str:
        """The same condition as a Milvus boolean expression (``''`` when
        nothing is selected). Strings are JSON-quoted, so no value can
        change the expression's structure."""
        terms: List[str] = []
        for field, values in (('camera', self.cameras), ('source', self.sources)):
            if values is not None:
                quoted = ', '.join(json.dumps(v) for v in values)
                terms.append(f'{field} in [{quoted}]')
        if self.time_from is not None or self.time_to is not None:
            # Milvus scalar fields hold no NULL here: items without a time
            # carry has_time false (and time 0), so they never match.
            terms.append('has_time == true')
        if self.time_from is not None:
            terms.append(f'time >= {self.time_from!r}')
        if self.time_to is not None:
            terms.append(f'time <= {self.time_to!r}')
        return ' and '.join(terms)
