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
(an empty or overlong query, a bad page, an unknown id, an unknown route, a
method other than GET / HEAD) gets a 4xx status and a JSON ``detail``
sentence that the page shows; nothing is answered as text. Ids, offsets and
limits are whole numbers in ASCII digits only (``int()`` would also take
other scripts' digits) and bounded. A URL longer than :data:`MAX_URL_CHARS`
is answered 414 and a request with a body over :data:`MAX_BODY_BYTES` (no
route takes one) 413, before any route runs. The OpenAPI schema and docs
pages are off unless ``api_docs=True`` (``tools/serve.py --api-docs``).
"""

import base64
import io
import os.path as osp
import re
import threading
from importlib import resources
from typing import Optional, Tuple

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    'create_app',
    'guard_app',
    'json_error',
    'new_app',
    'page_html',
    'parse_query',
    'parse_whole_number',
    'SearchRequestError',
    'MAX_BODY_BYTES',
    'MAX_QUERY_CHARS',
    'MAX_URL_CHARS',
]

#: Longest query accepted, in characters (captions in the field run to ~100
#: words; far longer text is not a person description).
MAX_QUERY_CHARS = 500
#: Results per page, and the most one request may ask for.
PAGE_SIZE = 12
MAX_PAGE_SIZE = 100
#: Longest request target (path and query string) accepted, in bytes: a
#: query of MAX_QUERY_CHARS characters fits even fully percent-encoded.
MAX_URL_CHARS = 8192
#: Largest request body accepted (no route reads one).
MAX_BODY_BYTES = 1024
#: Most digits an id, offset or limit may have.
MAX_DIGITS = 9
_ASCII_DIGITS = re.compile(f'[0-9]{{1,{MAX_DIGITS}}}')
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


def parse_whole_number(text: Optional[str]) -> Optional[int]:
    """``text`` as a whole number, or None unless it is 1-9 ASCII digits.

    ``str.isdigit`` and ``int`` accept other scripts' digits (Arabic-Indic,
    full-width), and ``isdigit`` also superscripts, which ``int`` refuses;
    the page's numbers are ASCII only.

    Args:
        text (str, optional): The request's value.

    Returns:
        int | None: The number, or None for anything else.

    Example:
        >>> parse_whole_number('12'), parse_whole_number('-1')
        (12, None)
    """
    if text is None or not _ASCII_DIGITS.fullmatch(text):
        return None
    return int(text)


def parse_query(query: Optional[str], max_query_chars: int = MAX_QUERY_CHARS) -> str:
    """The request's query, stripped.

    Raises:
        SearchRequestError: 400 for an empty or overlong query.
    """
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


def json_error(status: int, detail: str) -> JSONResponse:
    """A JSON answer ``{"detail": detail}`` with ``status``."""
    return JSONResponse(status_code=status, content=dict(detail=detail))


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


def guard_app(app: FastAPI, routes: str) -> None:
    """Give ``app`` the answers every page of this package promises.

    A URL over :data:`MAX_URL_CHARS` is answered 414 and a body over
    :data:`MAX_BODY_BYTES` 413 before any route runs; a
    :class:`SearchRequestError` is answered with its status, a validation
    error 400, an unknown route 404 naming ``routes``, another method 405,
    and any other failure 500 without internals: each as JSON ``detail``.

    Args:
        app (FastAPI): The application.
        routes (str): The routes it serves, as a 404 names them.
    """

    @app.middleware('http')
    async def limit_request_size(request: Request, call_next):
        scope = request.scope
        target = len(scope.get('raw_path') or b'') + len(scope.get('query_string', b''))
        if target > MAX_URL_CHARS:
            return json_error(
                414,
                f'The URL is {target} bytes long; at most {MAX_URL_CHARS} are '
                'accepted.',
            )
        length = request.headers.get('content-length')
        chunked = 'chunked' in request.headers.get('transfer-encoding', '').lower()
        size = parse_whole_number(length) if length is not None else 0
        if chunked or size is None or size > MAX_BODY_BYTES:
            return json_error(
                413,
                f'The request body is too large: at most {MAX_BODY_BYTES} bytes '
                '(no route takes a body).',
            )
        return await call_next(request)

    @app.exception_handler(SearchRequestError)
    async def bad_request(request: Request, err: SearchRequestError):
        return json_error(err.status, err.message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        problems = '; '.join(
            '.'.join(str(p) for p in e.get('loc', ())) + ': ' + str(e.get('msg', ''))
            for e in err.errors()[:5]
        )
        return json_error(400, f'Bad request: {problems}.')

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        detail = str(err.detail)
        if err.status_code == 404:
            detail = (
                f'Nothing is served at {request.url.path[:200]}: this server '
                f'answers {routes} only.'
            )
        elif err.status_code == 405:
            detail = f'{request.method[:20]} is not allowed here: the page answers GET.'
        return json_error(err.status_code, detail)

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception):
        # A bug, not a bad request: still JSON, and no internals.
        return json_error(500, 'The server failed to answer this request.')


def page_html(name: str) -> str:
    """A page of ``static/``, with the style and script every page shares
    (``page_base.css``, ``page_base.js``) put in its ``{{BASE_STYLE}}`` and
    ``{{BASE_SCRIPT}}``."""
    static = resources.files('tbps_mm_serve').joinpath('static')
    page = static.joinpath(name).read_text(encoding='utf-8')
    page = page.replace(
        '{{BASE_STYLE}}', static.joinpath('page_base.css').read_text(encoding='utf-8')
    )
    return page.replace(
        '{{BASE_SCRIPT}}', static.joinpath('page_base.js').read_text(encoding='utf-8')
    )


def new_app(title: str, routes: str, api_docs: bool) -> FastAPI:
    """A guarded FastAPI application (:func:`guard_app`).

    Args:
        title (str): The application's title.
        routes (str): The routes it will serve, as a 404 names them.
        api_docs (bool): Serve the OpenAPI schema (``/openapi.json``) and
            ``/docs`` too.

    Returns:
        FastAPI: The application, without routes yet.
    """
    app = FastAPI(
        title=title,
        openapi_url='/openapi.json' if api_docs else None,
        docs_url='/docs' if api_docs else None,
        redoc_url=None,
    )
    if api_docs:
        routes += ', /docs, /openapi.json'
    guard_app(app, routes)
    return app


def create_app(
    inferencer,
    max_query_chars: int = MAX_QUERY_CHARS,
    page_size: int = PAGE_SIZE,
    title: Optional[str] = None,
    api_docs: bool = False,
) -> FastAPI:
    """Build the search application over an indexed inferencer.

    Args:
        inferencer (TBPSInferencer): An inferencer whose ``index`` has run.
        max_query_chars (int): Longest query accepted. Defaults to 500.
        page_size (int): Results per page the page asks for. Defaults to 12.
        title (str, optional): Shown in the page's heading.
        api_docs (bool): Also serve the OpenAPI schema (``/openapi.json``)
            and its ``/docs`` page. Defaults to False.

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
    app = new_app(
        'tbps_mm search',
        '/, /api/search, /api/explain, /api/image/<id> of indexed images',
        api_docs,
    )
    # The model and its tokenizer are not meant for concurrent calls.
    lock = threading.Lock()
    page = page_html('search_page.html').replace(
        '{{TITLE}}', title or 'tbps_mm person search'
    )
    page = page.replace('{{PAGE_SIZE}}', str(int(page_size)))

    def check_query(query: Optional[str]) -> str:
        return parse_query(query, max_query_chars)

    def check_id(image_id: str) -> Tuple[int, str]:
        # One lookup of this id in the index, whatever the gallery size.
        index = parse_whole_number(image_id)
        path = None if index is None else inferencer.gallery.key_of(index)
        if path is None:
            raise SearchRequestError(
                404,
                f'Unknown image id {image_id[:40]!r}: use an id the search '
                'results give.',
            )
        return index, path

    def result(index: int, path: str, score: float) -> dict:
        return dict(
            id=index,
            name=osp.basename(path),
            score=round(float(score), 6),
            image_url=f'/api/image/{index}',
        )

    @app.get('/', response_class=HTMLResponse)
    def index_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get('/api/search')
    def search(q: Optional[str] = None, offset: str = '0', limit: str = '') -> dict:
        query = check_query(q)
        start = parse_whole_number(offset)
        if start is None:
            raise SearchRequestError(
                400,
                f'offset must be a whole number from 0 to {10**MAX_DIGITS - 1} '
                f'in ASCII digits, got {offset[:40]!r}.',
            )
        count = parse_whole_number(limit or str(page_size))
        if count is None or not 1 <= count <= MAX_PAGE_SIZE:
            raise SearchRequestError(
                400,
                f'limit must be a whole number from 1 to {MAX_PAGE_SIZE} in '
                f'ASCII digits, got {limit[:40]!r}.',
            )
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
