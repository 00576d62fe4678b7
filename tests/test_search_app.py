"""The search page's API (FastAPI TestClient): results, paging, explanations,
images by id only, and a 4xx with a clear message for every bad request."""

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip('fastapi')
pytest.importorskip('httpx')

from fastapi.testclient import TestClient  # noqa: E402

from tbps_mm.apis import TBPSInferencer  # noqa: E402
from tbps_mm_serve import create_app  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'serve.py'


@pytest.fixture(scope='module')
def client(search_setup, tmp_path_factory):
    inferencer = TBPSInferencer(
        search_setup['config'], search_setup['checkpoint'], show_progress=False
    )
    index = tmp_path_factory.mktemp('app_index') / 'index.npz'
    inferencer.index(search_setup['gallery'], index_file=str(index))
    return TestClient(create_app(inferencer, max_query_chars=120, page_size=5))


def test_page_search_paging_and_images(client, search_setup):
    page = client.get('/')
    assert page.status_code == 200 and 'id="query"' in page.text
    person = search_setup['people'][5]
    query = person['captions'][0]
    first = client.get('/api/search', params=dict(q=query)).json()
    assert first['total'] == 16 and first['offset'] == 0
    assert len(first['results']) == 5  # the app's page size
    assert first['results'][0]['name'].startswith(f'person_{person["pid"]}_')
    scores = [r['score'] for r in first['results']]
    assert scores == sorted(scores, reverse=True)
    rest = client.get('/api/search', params=dict(q=query, offset=5, limit=20)).json()
    assert len(rest['results']) == 11
    ids = [r['id'] for r in first['results'] + rest['results']]
    assert sorted(ids) == list(range(16))  # every image exactly once
    assert rest['results'][0]['score'] <= scores[-1]
    beyond = client.get('/api/search', params=dict(q=query, offset=16)).json()
    assert beyond['results'] == []

    top = first['results'][0]
    image = client.get(top['image_url'])
    assert image.status_code == 200 and image.headers['content-type'] == 'image/png'
    assert image.content == Path(search_setup['gallery'], top['name']).read_bytes()


def test_explanation(client, search_setup):
    query = search_setup['people'][2]['captions'][0]
    data = client.get('/api/explain', params=dict(q=query, id=3)).json()
    assert data['result']['id'] == 3
    assert data['words'] == query.split()
    assert len(data['parts']) == 3  # one entry per part query
    assert all(len(part) == len(data['words']) for part in data['parts'])
    assert data['figure'].startswith('data:image/png;base64,')


@pytest.mark.parametrize(
    'url, params, status, message',
    [
        ('/api/search', dict(q=''), 400, 'query is empty'),
        ('/api/search', dict(q='   '), 400, 'query is empty'),
        ('/api/search', {}, 400, 'query is empty'),
        ('/api/search', dict(q='a red coat ' * 20), 400, 'at most 120 are accepted'),
        ('/api/search', dict(q='a red coat', offset=-1), 400, 'offset must be'),
        ('/api/search', dict(q='a red coat', limit=0), 400, 'limit must be'),
        ('/api/search', dict(q='a red coat', limit='x'), 400, 'limit must be'),
        ('/api/explain', dict(q='a red coat', id=16), 404, "Unknown image id '16'"),
        ('/api/explain', dict(q='a red coat', id='-1'), 404, 'Unknown image id'),
        ('/api/explain', dict(q='a red coat'), 404, 'Unknown image id'),
        ('/api/explain', dict(q='', id=0), 400, 'query is empty'),
        ('/api/image/16', {}, 404, "Unknown image id '16'"),
        ('/api/image/abc', {}, 404, 'Unknown image id'),
        ('/api/image/..%2F..%2Fetc%2Fpasswd', {}, 404, ''),
        ('/api/image/../../etc/passwd', {}, 404, ''),
        ('/etc/passwd', {}, 404, 'indexed images only'),
        ('/static/search_page.html', {}, 404, 'indexed images only'),
        ('/api/search_app.py', {}, 404, 'indexed images only'),
    ],
)
def test_bad_requests_get_4xx_and_a_message(client, url, params, status, message):
    response = client.get(url, params=params)
    assert response.status_code == status, response.text
    assert response.headers['content-type'] == 'application/json'
    detail = response.json()['detail']
    assert isinstance(detail, str) and message in detail
    assert 'root:' not in response.text  # no file content leaks


def test_serve_tool_builds_app_and_rejects_bad_input(search_setup, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('serve_tool', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args(
        [search_setup['config'], search_setup['checkpoint']]
        + ['--images', search_setup['gallery'], '--index', str(tmp_path / 'i.npz')]
    )
    assert (args.host, args.port) == ('127.0.0.1', 8000)
    app = tool.build_app(args)
    assert 'index built: 16 images' in capsys.readouterr().out
    assert TestClient(app).get('/api/image/0').status_code == 200
    empty = tmp_path / 'empty'
    empty.mkdir()
    code = tool.main(
        [search_setup['config'], search_setup['checkpoint'], '--images', str(empty)]
    )
    assert code == 2 and 'holds no images' in capsys.readouterr().err
    code = tool.main(
        [search_setup['config'], search_setup['checkpoint']]
        + ['--images', str(empty), '--port', '0']
    )
    assert code == 2 and '--port' in capsys.readouterr().err
