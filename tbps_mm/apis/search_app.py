"""``create_app``: the search page and its JSON API over a ``TBPSInferencer``.

A FastAPI application (served by uvicorn, see ``tools/serve.py``) with one
HTML page and four JSON / image routes:

* ``GET /``: the page (``static/search_page.html``): a text box, the ranked
  crops with their scores, a button for more, and the part-level
  explanation of a clicked result;
* ``GET /api/search?q=...&offset=0&limit=12``: one page of ranked results,
  each with the image's index ``id``, its file name and its score;
* ``GET /api/explain?q=...&id=N``: the explanation of image N for the query:
  the figure ``draw_explanation`` draws (heat maps of every part query over
  the image, its words) as a PNG data URL, and each part's word weights;
* ``GET /api/image/{id}``: the indexed image with that id.

Only the inferencer's public entry points are used (``gallery``, ``search``,
``explain``, ``draw_explanation``), so any index behind them serves the page;
a request looks up only the ids and paths of the results it returns, so its
cost does not grow with the gallery.
Images are served by their index id only: the client never names a file, so
no request can reach a file that is not an indexed image. Every bad request
(an empty or overlong query, a bad page, an unknown id, an unknown route)
gets a 4xx status and a JSON ``detail`` sentence that the page shows.
"""

import base64
import io
import os.path as osp
import threading
from importlib import resources
from typing import Optional, Tuple

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ['create_app', 'SearchRequestError', 'MAX_QUERY_CHARS']

#: Longest query accepted, in characters (captions in the field run to ~100
#: words; far longer text is not a person description).
MAX_QUERY_CHARS = 500
#: Results per page, and the most one request may ask for.
PAGE_SIZE = 12
MAX_PAGE_SIZE = 100
IMAGE_MEDIA_TYPES = {
    '.jpg': 'image/jpeg',
    '.jpeg': 'image/jpeg',
    '.png': 'image/png',
    '.bmp': 'image/bmp',
    '.webp': 'image/webp',
    '.tif': 'image/tiff',
    '.tiff': 'image/tiff',
    '.ppm': 'image/x-portable-pixmap',
}


class SearchRequestError(Exception):
    """A bad request: answered with ``status`` and ``message`` as JSON.

    Args:
        status (int): The HTTP status (4xx).
        message (str): What is wrong, in a sentence the page shows.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _page_html() -> str:
    return (
        resources.files('tbps_mm.apis')
        .joinpath('static', 'search_page.html')
        .read_text(encoding='utf-8')
    )


def create_app(
    inferencer,
    max_query_chars: int = MAX_QUERY_CHARS,
    page_size: int = PAGE_SIZE,
    title: Optional[str] = None,
) -> FastAPI:
    """Build the search application over an indexed inferencer.

    Args:
        inferencer (TBPSInferencer): An inferencer whose ``index`` has run.
        max_query_chars (int): Longest query accepted. Defaults to 500.
        page_size (int): Results per page the page asks for. Defaults to 12.
        title (str, optional): Shown in the page's heading.

    Returns:
        FastAPI: The application (run it with ``uvicorn.run(app, ...)``).

    Raises:
        ValueError: The inferencer has no indexed image.

    Example:
        >>> inferencer = TBPSInferencer('configs/tbps_synth.py', 'model.pth')
        >>> inferencer.index('crops/')
        >>> app = create_app(inferencer)
        >>> # uvicorn.run(app, host='127.0.0.1', port=8000)
    """
    if inferencer.gallery is None or not len(inferencer.gallery):
        raise ValueError('the inferencer has no indexed image: call index(dir) first')
    app = FastAPI(title='tbps_mm search', docs_url=None, redoc_url=None)
    # The model and its tokenizer are not meant for concurrent calls.
    lock = threading.Lock()
    page = _page_html().replace('{{TITLE}}', title or 'tbps_mm person search')
    page = page.replace('{{PAGE_SIZE}}', str(int(page_size)))

    def check_query(query: Optional[str]) -> str:
        query = (query or '').strip()
        if not query:
            raise SearchRequestError(
                400, 'The query is empty: describe the person to find.'
            )
        if len(query) > max_query_chars:
            raise SearchRequestError(
                400,
                f'The query is {len(query)} characters long; at most '
                f'{max_query_chars} are accepted.',
            )
        return query

    def check_id(image_id: str) -> Tuple[int, str]:
        # One lookup of this id in the index, whatever the gallery size.
        path = inferencer.gallery.key_of(int(image_id)) if image_id.isdigit() else None
        if path is None:
            raise SearchRequestError(
                404,
                f'Unknown image id {image_id!r}: use an id the search results give.',
            )
        return int(image_id), path

    def result(index: int, path: str, score: float) -> dict:
        return dict(
            id=index,
            name=osp.basename(path),
            score=round(float(score), 6),
            image_url=f'/api/image/{index}',
        )

    @app.exception_handler(SearchRequestError)
    async def bad_request(request: Request, err: SearchRequestError):
        return JSONResponse(status_code=err.status, content=dict(detail=err.message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        detail = err.detail
        if err.status_code == 404:
            detail = (
                f'Nothing is served at {request.url.path}: this server answers '
                '/, /api/search, /api/explain and /api/image/<id> of indexed '
                'images only.'
            )
        return JSONResponse(status_code=err.status_code, content=dict(detail=detail))

    @app.get('/', response_class=HTMLResponse)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get('/api/search')
    def search(q: Optional[str] = None, offset: str = '0', limit: str = '') -> dict:
        query = check_query(q)
        if not offset.isdigit():
            raise SearchRequestError(
                400, f'offset must be a whole number >= 0, got {offset!r}.'
            )
        limit = limit or str(page_size)
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE_SIZE:
            raise SearchRequestError(
                400, f'limit must be a whole number from 1 to {MAX_PAGE_SIZE}.'
            )
        start, count = int(offset), int(limit)
        total = len(inferencer.gallery)
        ranked = []
        if start < total:
            with lock:
                ranked = inferencer.search(query, topk=min(start + count, total))
        # The ids of this page's results only (k lookups, not an N-entry map).
        page = ranked[start:]
        ids = [inferencer.gallery.id_of(path) for path, _ in page]
        return dict(
            query=query,
            total=total,
            offset=start,
            results=[result(i, path, score) for i, (path, score) in zip(ids, page)],
        )

    @app.get('/api/explain')
    def explain(q: Optional[str] = None, image_id: str = Query('', alias='id')) -> dict:
        query = check_query(q)
        index, path = check_id(image_id)
        with lock:
            try:
                explanation = inferencer.explain(query, path)
            except ValueError as err:
                raise SearchRequestError(422, f'Cannot explain: {err}') from err
            figure = inferencer.draw_explanation(explanation)
        buffer = io.BytesIO()
        figure.save(buffer, format='PNG')
        words = explanation['words']
        parts = []
        for weights in explanation['word_weights']:
            order = sorted(range(len(words)), key=lambda i: -float(weights[i]))
            parts.append(
                [dict(word=words[i], weight=round(float(weights[i]), 4)) for i in order]
            )
        return dict(
            query=query,
            result=result(index, path, explanation['score']),
            words=words,
            parts=parts,
            figure='data:image/png;base64,'
            + base64.b64encode(buffer.getvalue()).decode('ascii'),
        )

    @app.get('/api/image/{image_id}')
    def image(image_id: str) -> FileResponse:
        _, path = check_id(image_id)
        if not osp.isfile(path):
            raise SearchRequestError(
                404, f'Image {image_id} is indexed but its file is gone.'
            )
        media = IMAGE_MEDIA_TYPES.get(osp.splitext(path)[1].lower())
        return FileResponse(path, media_type=media)

    return app
