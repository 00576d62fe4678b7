"""``create_track_app``: the search page of a video track gallery.

A FastAPI application (``tools/serve.py --tracks FILE``) over a
:class:`~tbps_mm.apis.TrackGallery` that ``tools/index_video.py`` built,
with one HTML page and five JSON / file routes:

* ``GET /``: the page (``static/track_search_page.html``): a text box,
  camera check boxes, a time window, a minimum score, the ranked tracks
  (representative crop, score, camera, wall-clock interval, frames) with a
  "similar" button and a link to the track's best frame each, and CSV /
  JSON export of the current results;
* ``GET /api/cameras``: the gallery's cameras and track count;
* ``GET /api/tracks?q=...`` (or ``similar=KEY``) with ``camera`` (repeated),
  ``time_from`` / ``time_to`` (``HH:MM[:SS]`` or an ISO date and time),
  ``min_score`` and ``limit``: the ranked tracks that pass the filters
  (:meth:`~tbps_mm.apis.TrackGallery.search`, which pushes them down into
  the index);
* ``GET /api/export?format=csv|json`` with the same parameters: those
  results as a download (CSV: one row per track; JSON: every field, every
  box);
* ``GET /api/crop?key=KEY``: the representative crop of a track;
* ``GET /api/frame?key=KEY[&frame=N]``: frame ``N`` (from 1, one of the
  track's own frames; by default its best-scoring one) decoded from the
  track's video with :class:`~tbps_mm.video.VideoFrameReader`, the track's
  box drawn on it (Pillow), as a JPEG.

Crops and frames are served by track key only (the client never names a
file: the video comes from the gallery's record of the track), and
results name a track's video by its file name, not its path on the server.
Requests are guarded as the image search page's are
(:func:`~tbps_mm_serve.search_app.guard_app`): every bad request gets a 4xx
status and a JSON ``detail`` sentence the page shows.
"""

import io
import math
import os.path as osp
import threading
from typing import Annotated, Callable, List, Optional
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from PIL import Image, ImageDraw

from tbps_mm.apis.track_export import (
    TRACK_CSV_FIELDS,
    parse_time_bound,
    tracks_csv,
    tracks_json,
)
from tbps_mm.video import VideoDecodeError, VideoFrameReader

from .search_app import (
    MAX_PAGE_SIZE,
    MAX_QUERY_CHARS,
    PAGE_SIZE,
    SearchRequestError,
    new_app,
    page_html,
    parse_query,
    parse_whole_number,
)

__all__ = ['create_track_app', 'TrackRequest', 'MAX_CAMERAS', 'MAX_KEY_CHARS']

#: Most cameras one request may name, and the longest camera id or track key.
MAX_CAMERAS = 64
MAX_KEY_CHARS = 128
#: Most tracks one export holds.
MAX_EXPORT = 1000
# The CSV columns of an export: the crop by URL, not by server path.
_CSV_FIELDS = tuple(
    'crop_url' if name == 'crop_path' else name for name in TRACK_CSV_FIELDS
)


class TrackRequest:
    """The query and filters of a track search request (a FastAPI
    dependency: the parameters of ``/api/tracks`` and ``/api/export``).

    Args:
        q (str, optional): The description.
        similar (str, optional): A track key, for "find similar" instead.
        camera (list[str], optional): Cameras to keep.
        time_from (str): Window start (``HH:MM[:SS]`` or ISO), or ``''``.
        time_to (str): Window end, or ``''``.
        min_score (str): Lowest score kept, or ``''``.
        limit (str): Tracks wanted, or ``''`` for the page size.
    """

    def __init__(
        self,
        q: Optional[str] = None,
        similar: Optional[str] = None,
        camera: Annotated[Optional[List[str]], Query()] = None,
        time_from: str = '',
        time_to: str = '',
        min_score: str = '',
        limit: str = '',
    ) -> None:
        self.q = q
        self.similar = similar
        self.camera = camera or []
        self.time_from = time_from
        self.time_to = time_to
        self.min_score = min_score
        self.limit = limit


def _public(hit: dict) -> dict:
    """A search hit as the page shows and exports it: the video by file
    name, the crop by URL (no server path)."""
    out = {k: v for k, v in hit.items() if k != 'crop_path'}
    out['video'] = osp.basename(hit['video'])
    out['crop_url'] = '/api/crop?key=' + quote(hit['key'], safe='')
    out['frame_url'] = '/api/frame?key=' + quote(hit['key'], safe='')
    return out


def _decode_frame(path: str, frame: int) -> np.ndarray:
    """Frame ``frame`` (from 1, as track records number them) of a video,
    decoded in order from the start (frames are numbered by decoding order,
    so this is the frame the track's box was found in).

    Raises:
        FileNotFoundError: No such file.
        VideoDecodeError: The video cannot be decoded up to that frame.
    """
    reader = VideoFrameReader(path, strict=True)
    for decoded in reader:
        if decoded.index == frame - 1:
            return decoded.image
    raise VideoDecodeError(f'"{path}" has no frame {frame}')


def _draw_box(image: np.ndarray, box) -> bytes:
    """A frame as JPEG bytes with an ``x, y, w, h`` box drawn on it."""
    picture = Image.fromarray(image)
    x, y, w, h = (float(v) for v in box)
    width = max(2, round(min(picture.size) / 120))
    ImageDraw.Draw(picture).rectangle(
        (x, y, x + w, y + h), outline=(255, 40, 40), width=width
    )
    buffer = io.BytesIO()
    picture.save(buffer, format='JPEG', quality=90)
    return buffer.getvalue()


def create_track_app(
    gallery,
    encode_text: Callable[[str], np.ndarray],
    max_query_chars: int = MAX_QUERY_CHARS,
    page_size: int = PAGE_SIZE,
    title: Optional[str] = None,
    api_docs: bool = False,
) -> FastAPI:
    """Build the track search application over a track gallery.

    Args:
        gallery (TrackGallery): The tracks (``TrackGallery.open``).
        encode_text (Callable): caption -> (D,) fused query vector (see
            :func:`tbps_mm.apis.track_encoders`).
        max_query_chars (int): Longest query accepted. Defaults to 500.
        page_size (int): Tracks the page asks for. Defaults to 12.
        title (str, optional): Shown in the page's heading.
        api_docs (bool): Also serve the OpenAPI schema and ``/docs``.
            Defaults to False.

    Returns:
        FastAPI: The application (run it with uvicorn).

    Raises:
        ValueError: The gallery holds no track.

    Example:
        >>> encoder = FusedEncoder.from_config(cfg, 'model.safetensors')
        >>> encode_crops, encode_text, fingerprint = track_encoders(encoder)
        >>> app = create_track_app(
        ...     TrackGallery.open('footage.tracks', fingerprint), encode_text)
    """
    if not len(gallery):
        raise ValueError(
            f'the track gallery "{gallery.path}" holds no track: index videos '
            'with tools/index_video.py first'
        )
    app = new_app(
        'tbps_mm track search',
        '/, /api/cameras, /api/tracks, /api/export, /api/crop, /api/frame',
        api_docs,
    )
    # The model and its tokenizer are not meant for concurrent calls.
    lock = threading.Lock()
    cameras = sorted({str(v['camera']) for v in gallery.videos.values() if v['tracks']})
    page = page_html('track_search_page.html').replace(
        '{{TITLE}}', title or 'tbps_mm video track search'
    )
    page = page.replace('{{PAGE_SIZE}}', str(int(page_size)))

    def check_key(key: Optional[str]) -> str:
        if not key or len(key) > MAX_KEY_CHARS or key not in gallery:
            raise SearchRequestError(
                404,
                f'Unknown track {(key or "")[:40]!r}: use a key the search '
                'results give.',
            )
        return key

    def check_limit(limit: str, most: int) -> int:
        count = parse_whole_number(limit) if limit else page_size
        if count is None or not 1 <= count <= most:
            raise SearchRequestError(
                400, f'limit must be a whole number from 1 to {most}.'
            )
        return count

    def ranked(request: TrackRequest, most: int) -> dict:
        topk = check_limit(request.limit, most)
        similar, camera = request.similar, request.camera
        time_from, time_to = request.time_from, request.time_to
        min_score = request.min_score
        if similar:
            key = check_key(similar)
            query, exclude = f'similar to {key}', [key]
        else:
            query, exclude = parse_query(request.q, max_query_chars), []
        if len(camera) > MAX_CAMERAS or any(len(c) > MAX_KEY_CHARS for c in camera):
            raise SearchRequestError(
                400,
                f'At most {MAX_CAMERAS} cameras of at most {MAX_KEY_CHARS} '
                'characters each.',
            )
        bounds = []
        for name, text in (('time_from', time_from), ('time_to', time_to)):
            try:
                bounds.append(parse_time_bound(text, name) if text.strip() else None)
            except ValueError as err:
                raise SearchRequestError(400, f'{err}.') from None
        score = None
        if min_score.strip():
            try:
                score = float(min_score)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise SearchRequestError(
                    400, f'min_score must be a number, got {min_score[:40]!r}.'
                )
        with lock:
            if similar:
                vector = gallery.vectors([key])[0]
            else:
                vector = encode_text(query)
            try:
                hits = gallery.search(
                    vector,
                    topk,
                    cameras=camera or None,
                    time_from=bounds[0],
                    time_to=bounds[1],
                    min_score=score,
                    exclude=exclude,
                )
            except ValueError as err:  # a reversed window, bounds of two kinds
                raise SearchRequestError(400, f'{err}.') from None
        return dict(query=query, total=len(gallery), results=[_public(h) for h in hits])

    @app.get('/', response_class=HTMLResponse)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get('/api/cameras')
    def camera_list() -> dict:
        return dict(cameras=cameras, tracks=len(gallery))

    @app.get('/api/tracks')
    def tracks(request: Annotated[TrackRequest, Depends()]) -> dict:
        return ranked(request, MAX_PAGE_SIZE)

    @app.get('/api/export')
    def export(
        request: Annotated[TrackRequest, Depends()], format: str = 'csv'
    ) -> Response:
        if format not in ('csv', 'json'):
            raise SearchRequestError(
                400, f'format must be csv or json, got {format[:20]!r}.'
            )
        results = ranked(request, MAX_EXPORT)['results']
        if format == 'csv':
            body, media = tracks_csv(results, _CSV_FIELDS), 'text/csv; charset=utf-8'
        else:
            body, media = tracks_json(results), 'application/json'
        return Response(
            body,
            media_type=media,
            headers={'Content-Disposition': f'attachment; filename="tracks.{format}"'},
        )

    @app.get('/api/crop')
    def crop(key: Optional[str] = None) -> FileResponse:
        record = gallery.record(check_key(key))
        path = osp.join(gallery.crop_dir, record['crop'])
        if not osp.isfile(path):
            raise SearchRequestError(404, f'The crop of track {key} is gone.')
        return FileResponse(path, media_type='image/jpeg')

    @app.get('/api/frame')
    def frame(key: Optional[str] = None, frame: str = '') -> Response:
        record = gallery.record(check_key(key))
        boxes = {int(b[0]): b[1:5] for b in record['boxes']}
        number = parse_whole_number(frame) if frame else record['best_frame']
        if number not in boxes:
            raise SearchRequestError(
                400,
                f'frame must be one of the frames of track {key} '
                f'({record["first_frame"]} to {record["last_frame"]}, '
                f'{len(boxes)} frames), got {frame[:20]!r}.',
            )
        try:
            image = _decode_frame(record['video'], number)
        except (FileNotFoundError, VideoDecodeError):
            raise SearchRequestError(
                404,
                f'The video of track {key} ({osp.basename(record["video"])}) is '
                f'no longer readable on the server: frame {number} cannot be shown.',
            ) from None
        return Response(_draw_box(image, boxes[number]), media_type='image/jpeg')

    return app
