"""Hostile requests to the search page: fuzzed ids, offsets, limits, paths,
methods, long URLs and bodies, each answered 2xx or 4xx with JSON; a real
uvicorn server that keeps answering afterwards; and a bounded concurrent load.
"""

import http.client
import itertools
import json
import random
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip('fastapi')
pytest.importorskip('httpx')
pytest.importorskip('uvicorn')

from fastapi.testclient import TestClient  # noqa: E402

from tbps_mm.apis import TBPSInferencer  # noqa: E402
from tbps_mm_serve.local_server import MAX_HEAD_BYTES, LocalServer  # noqa: E402
from tbps_mm_serve.search_app import (  # noqa: E402
    MAX_BODY_BYTES,
    MAX_URL_CHARS,
    create_app,
)

# Numbers as a client might send them: other scripts' digits, signs,
# exponents, spaces, huge values, encodings of traversal.
HOSTILE_NUMBERS = [
    '0', '3', '15', '16', '99', '00', '007', '²', '١', '１', '٣', '߀', '𝟙', '¹⁶',
    '-1', '-0', '+1', '1e3', '1.0', ' 1', '1 ', '1\n', '0x1', 'NaN', 'inf', 'null',
    '', ' ', '9' * 9, '9' * 10, '9' * 400, '1,2', '1;2', '%00', '\x00', '..',
    '../etc/passwd', '..%2f..%2fetc%2fpasswd', '%2e%2e', '/', '\\', '[]', '{}',
    'ⅷ', '٣٣', '三',
]  # fmt: skip
PATHS = [
    '/', '/api/search', '/api/explain', '/api/image/', '/api/image', '/openapi.json',
    '/docs', '/redoc', '/docs/oauth2-redirect', '/static/search_page.html',
    '/etc/passwd', '/api/image/../../../etc/passwd', '/api//search', '/API/search',
    '/api/search/', '/%2e%2e/%2e%2e/etc/passwd', '/api/image/0/..', '/favicon.ico',
]  # fmt: skip
METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']
QUERY = 'a man in a red shirt'


@pytest.fixture(scope='module')
def app(search_setup, tmp_path_factory):
    inferencer = TBPSInferencer(
        search_setup['config'], search_setup['checkpoint'], show_progress=False
    )
    index = tmp_path_factory.mktemp('hostile_index') / 'index.idx'
    inferencer.index(search_setup['gallery'], index_file=str(index))
    return create_app(inferencer, page_size=5)


def fuzz_requests(seed=0, count=600):
    """(method, url) pairs: every hostile number in every slot, then random mixes."""
    cases = []
    for value in HOSTILE_NUMBERS:
        quoted = urllib.parse.quote(value, safe='')
        cases.append(('GET', f'/api/image/{quoted}'))
        cases.append(('GET', f'/api/explain?q=red&id={quoted}'))
        cases.append(('GET', f'/api/search?q=red&offset={quoted}'))
        cases.append(('GET', f'/api/search?q=red&limit={quoted}'))
    for method, path in itertools.product(METHODS, PATHS):
        cases.append((method, path))
    rng = random.Random(seed)
    while len(cases) < count:
        slot = rng.choice(['offset', 'limit', 'id'])
        value = urllib.parse.quote(rng.choice(HOSTILE_NUMBERS), safe='')
        query = urllib.parse.quote(rng.choice(['', QUERY, 'x' * 600, '\u202e☃']))
        route = '/api/explain' if slot == 'id' else '/api/search'
        cases.append((rng.choice(METHODS), f'{route}?q={query}&{slot}={value}'))
    return cases


def check_answer(method, url, response):
    """2xx or 4xx, and JSON unless it is the page or an image."""
    status = response.status_code
    assert 200 <= status < 300 or 400 <= status < 500, (method, url, status)
    kind = response.headers.get('content-type', '')
    if status >= 400 or url.startswith(('/api/search', '/api/explain')):
        assert kind == 'application/json', (method, url, status, kind)
        if method != 'HEAD':
            assert isinstance(
                response.json()['detail' if status >= 400 else 'query'], str
            )
    return status


def test_fuzzed_requests_get_json_answers_and_no_500(app):
    client = TestClient(app, raise_server_exceptions=False)
    cases = fuzz_requests()
    statuses = {}
    for method, url in cases:
        status = check_answer(method, url, client.request(method, url))
        statuses[status] = statuses.get(status, 0) + 1
    assert len(cases) == 600
    assert statuses.get(200, 0) > 10 and statuses.get(404, 0) > 10
    assert statuses.get(400, 0) > 10 and statuses.get(405, 0) > 10
    # Unicode digits are not ids: '١' and '１' do not serve image 1.
    for digit in ('١', '１', '²'):
        response = client.get('/api/image/' + urllib.parse.quote(digit))
        assert response.status_code == 404, digit
    assert client.get('/openapi.json').status_code == 404
    assert client.get('/docs').status_code == 404
    # Still right after all that.
    first = client.get('/api/search', params=dict(q=QUERY)).json()
    assert len(first['results']) == 5


def test_api_docs_only_when_asked(search_setup, app, tmp_path):
    inferencer = TBPSInferencer(
        search_setup['config'], search_setup['checkpoint'], show_progress=False
    )
    inferencer.index(search_setup['gallery'], index_file=str(tmp_path / 'i.idx'))
    client = TestClient(create_app(inferencer, api_docs=True))
    assert client.get('/openapi.json').status_code == 200
    assert client.get('/docs').status_code == 200


def raw_request(url, method, target, body=b'', headers=None):
    """One request over a fresh connection: (status, content type, body)."""
    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body or method in ('POST', 'PUT'):
            connection.putheader('Content-Length', str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, response.getheader('content-type'), response.read()
    finally:
        connection.close()


def search_ok(url, query=QUERY):
    status, kind, body = raw_request(
        url, 'GET', '/api/search?' + urllib.parse.urlencode(dict(q=query, limit=5))
    )
    assert status == 200 and kind == 'application/json'
    return json.loads(body)


def test_real_server_answers_hostile_requests_and_keeps_answering(app):
    long_query = '/api/search?q=' + 'a' * (MAX_URL_CHARS + 10)
    with LocalServer(app) as url:
        before = search_ok(url)
        hostile = [
            ('GET', long_query, b'', None, 414),
            ('POST', '/api/search?q=red', b'x' * (MAX_BODY_BYTES * 8), None, 413),
            ('GET', '/api/search?q=red', b'x' * (MAX_BODY_BYTES + 1), None, 413),
            ('GET', '/api/search?q=red', b'', {'Content-Length': '-5'}, 400),
            ('GET', '/api/image/%C2%B2', b'', None, 404),
            ('GET', '/api/search?q=red&offset=%C2%B2', b'', None, 400),
            ('GET', '/api/search?q=red&limit=%C2%B2', b'', None, 400),
            ('GET', '/api/explain?q=red&id=%C2%B2', b'', None, 404),
            ('GET', '/api/image/%D9%A1', b'', None, 404),
            ('GET', '/api/image/%EF%BC%91', b'', None, 404),
            ('DELETE', '/api/image/1', b'', None, 405),
            ('GET', '/openapi.json', b'', None, 404),
            ('GET', '/api/image/..%2F..%2Fetc%2Fpasswd', b'', None, 404),
        ]
        for method, target, body, headers, expected in hostile:
            status, kind, text = raw_request(url, method, target, body, headers)
            assert status == expected, (method, target[:60], status, text[:200])
            if status != 400 or headers is None:  # h11 answers bad framing itself
                assert kind == 'application/json', (target[:60], kind)
        # A head over the parser's limit: refused, no reset of the server.
        status, _, _ = raw_request(
            url, 'GET', '/api/search?q=' + 'a' * (MAX_HEAD_BYTES + 100)
        )
        assert 400 <= status < 500
        assert search_ok(url) == before


def test_bounded_concurrent_load_has_no_error(app, search_setup):
    """50 clients x 4 queries against a real server, within a time bound."""
    people = search_setup['people']
    with LocalServer(app) as url:

        def client(k):
            answers = []
            for j in range(4):
                person = people[(k + j) % len(people)]
                answers.append((person, search_ok(url, person['captions'][0])))
            return answers

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=50) as pool:
            results = [a for answers in pool.map(client, range(50)) for a in answers]
        elapsed = time.monotonic() - start
    assert len(results) == 200
    for person, answer in results:
        assert answer['results'][0]['name'].startswith(f'person_{person["pid"]}_')
    assert elapsed < 120, f'200 queries took {elapsed:.1f} s'
