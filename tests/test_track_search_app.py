"""The track search page's API (FastAPI TestClient) over tiny SynthPedes
videos: filters, find similar, CSV / JSON export, crops by key only, and a
JSON 4xx for every bad request; tools/serve.py --tracks."""

import csv
import importlib.util
import io
import json
from pathlib import Path

import pytest

pytest.importorskip('fastapi')
pytest.importorskip('httpx')

from fastapi.testclient import TestClient  # noqa: E402

from tbps_mm.apis import TrackGallery  # noqa: E402
from tbps_mm_serve import create_track_app  # noqa: E402

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'serve.py'
QUERY = 'a woman wearing black pants with a red shirt .'


@pytest.fixture(scope='module')
def app_setup(track_setup):
    gallery = TrackGallery.open(track_setup['index'], track_setup['fingerprint'])
    app = create_track_app(gallery, track_setup['encode_text'], page_size=4)
    return dict(track_setup, gallery=gallery, client=TestClient(app))


def _keys(hits):
    return [h['key'] for h in hits]


def test_search_with_filters_matches_the_gallery(app_setup):
    client, gallery = app_setup['client'], app_setup['gallery']
    page = client.get('/')
    assert page.status_code == 200 and 'id="cameras"' in page.text
    cameras = client.get('/api/cameras').json()
    assert cameras == dict(cameras=['1', '2'], tracks=len(gallery))
    vector = app_setup['encode_text'](QUERY)
    data = client.get('/api/tracks', params=dict(q=QUERY)).json()
    assert data['total'] == len(gallery) and len(data['results']) == 4  # page size
    assert _keys(data['results']) == _keys(gallery.search(vector, 4))
    cases = [
        (dict(camera='2'), dict(cameras=['2'])),
        (dict(camera=['1', '2']), dict(cameras=['1', '2'])),
        (
            dict(time_from='10:00:46', time_to='10:00:47'),
            dict(time_from=_time('10:00:46'), time_to=_time('10:00:47')),
        ),
        (
            dict(time_from='2025-06-02T10:00:48'),
            dict(time_from=_time('2025-06-02T10:00:48')),
        ),
        (dict(min_score='0'), dict(min_score=0.0)),
    ]
    for params, filters in cases:
        got = client.get('/api/tracks', params=dict(params, q=QUERY, limit=50)).json()
        want = gallery.search(vector, 50, **filters)
        assert _keys(got['results']) == _keys(want), params
        assert [h['score'] for h in got['results']] == pytest.approx(
            [h['score'] for h in want]
        )
    only_two = client.get('/api/tracks', params=dict(q=QUERY, camera='2', limit=50))
    assert {h['camera'] for h in only_two.json()['results']} == {'2'}
    # find similar: the track's stored vector, the track itself left out
    key = data['results'][0]['key']
    similar = client.get('/api/tracks', params=dict(similar=key, limit=50)).json()
    want = gallery.search(gallery.vectors([key])[0], 50, exclude=[key])
    assert _keys(similar['results']) == _keys(want) and key not in _keys(want)
    assert similar['query'] == f'similar to {key}'


def _time(text):
    from tbps_mm.apis.track_export import parse_time_bound

    return parse_time_bound(text)


def test_export_and_crops(app_setup, track_setup):
    client, gallery = app_setup['client'], app_setup['gallery']
    params = dict(q=QUERY, camera='1', limit=50)
    shown = client.get('/api/tracks', params=params).json()['results']
    response = client.get('/api/export', params=dict(params, format='csv'))
    assert response.status_code == 200
    assert response.headers['content-type'].startswith('text/csv')
    assert (
        'attachment; filename="tracks.csv"' in response.headers['content-disposition']
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r['key'] for r in rows] == _keys(shown) and rows
    assert all(r['camera'] == '1' for r in rows)
    assert rows[0]['video'] == 'cam1.mp4' and 'crop_path' not in rows[0]
    assert rows[0]['crop_url'] == shown[0]['crop_url']
    exported = client.get('/api/export', params=dict(params, format='json')).json()
    assert _keys(exported) == _keys(shown)
    assert exported[0]['boxes'] == gallery.record(exported[0]['key'])['boxes']
    # nothing names a path on the server
    assert str(Path(track_setup['index']).parent) not in response.text + json.dumps(
        exported
    )
    crop = client.get(shown[0]['crop_url'])
    assert crop.status_code == 200 and crop.headers['content-type'] == 'image/jpeg'
    path = Path(gallery.crop_dir) / gallery.record(shown[0]['key'])['crop']
    assert crop.content == path.read_bytes()


def test_frame_of_a_track(app_setup, tmp_path):
    import numpy as np
    from PIL import Image

    from tbps_mm.video import VideoFrameReader, probe_video

    client, gallery = app_setup['client'], app_setup['gallery']
    hit = client.get('/api/tracks', params=dict(q=QUERY, limit=1)).json()['results'][0]
    record = gallery.record(hit['key'])
    assert hit['frame_url'] == '/api/frame?key=' + hit['key'].replace('/', '%2F')
    info = probe_video(record['video'])
    frames = {f.index + 1: f.image for f in VideoFrameReader(record['video'])}
    boxes = {int(b[0]): b[1:5] for b in record['boxes']}
    # the default is the best frame; another of the track's frames on request
    for url, number in (
        (hit['frame_url'], record['best_frame']),
        (hit['frame_url'] + f'&frame={record["last_frame"]}', record['last_frame']),
    ):
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers['content-type'] == 'image/jpeg'
        image = np.asarray(Image.open(io.BytesIO(response.content)).convert('RGB'))
        assert image.shape == (info['height'], info['width'], 3)
        raw = frames[number].astype(int)
        # the box edge is drawn red; away from the box the frame is the raw one
        x, y, w, h = (int(round(v)) for v in boxes[number])
        top = image[y, x : x + w].astype(int)
        assert np.abs(top - raw[y, x : x + w]).mean() > 40
        assert (top[:, 0] - top[:, 1:].mean(1)).mean() > 100
        mask = np.ones(image.shape[:2], bool)
        mask[max(0, y - 8) : y + h + 8, max(0, x - 8) : x + w + 8] = False
        assert np.abs(image.astype(int) - raw)[mask].mean() < 6
        # and it is not some other frame of the video
        other = frames[number + 6 if number + 6 in frames else number - 6]
        assert (
            np.abs(image.astype(int) - raw)[mask].mean()
            < np.abs(image.astype(int) - other.astype(int))[mask].mean()
        )
    missing = next(f for f in range(record['first_frame'], 10**4) if f not in boxes)
    for frame in (str(missing), '0', 'x', '-1', '9' * 12):
        response = client.get(hit['frame_url'] + '&frame=' + frame)
        assert response.status_code == 400, frame
        assert 'one of the frames of track' in response.json()['detail']
    response = client.get('/api/frame', params=dict(key='nope/1'))
    assert response.status_code == 404 and 'Unknown track' in response.json()['detail']


def test_frame_of_a_track_whose_video_is_gone(app_setup, tmp_path):
    import shutil

    gallery = app_setup['gallery']
    key = next(iter(gallery.records))
    video = Path(gallery.record(key)['video'])
    moved = tmp_path / video.name
    shutil.move(str(video), str(moved))
    try:
        response = app_setup['client'].get('/api/frame', params=dict(key=key))
        assert response.status_code == 404
        assert 'no longer readable' in response.json()['detail']
        assert str(video.parent) not in response.text  # no server path
        video.write_bytes(b'not a video')
        response = app_setup['client'].get('/api/frame', params=dict(key=key))
        assert response.status_code == 404
        assert 'no longer readable' in response.json()['detail']
    finally:
        shutil.move(str(moved), str(video))


@pytest.mark.parametrize(
    'url, params, status, words',
    [
        ('/api/tracks', dict(q='  '), 400, 'empty'),
        ('/api/tracks', dict(q='x' * 600), 400, 'at most 500'),
        ('/api/tracks', dict(similar='nope/1'), 404, 'Unknown track'),
        ('/api/tracks', dict(q=QUERY, time_from='25:99'), 400, 'time_from must be'),
        (
            '/api/tracks',
            dict(q=QUERY, time_from='10:05', time_to='10:00'),
            400,
            'before it starts',
        ),
        (
            '/api/tracks',
            dict(q=QUERY, time_from='10:00', time_to='2025-06-02T10:05:00'),
            400,
            'both be times of day',
        ),
        ('/api/tracks', dict(q=QUERY, min_score='nan'), 400, 'min_score'),
        ('/api/tracks', dict(q=QUERY, limit='0'), 400, 'limit'),
        ('/api/tracks', dict(q=QUERY, limit='101'), 400, 'limit'),
        ('/api/tracks', dict(q=QUERY, camera=['c'] * 65), 400, 'cameras'),
        ('/api/export', dict(q=QUERY, format='xml'), 400, 'csv or json'),
        ('/api/crop', dict(key='../../etc/passwd'), 404, 'Unknown track'),
        ('/api/crop', dict(), 404, 'Unknown track'),
        ('/api/image/0', dict(), 404, 'answers /, /api/cameras'),
    ],
)
def test_bad_requests_get_json_4xx(app_setup, url, params, status, words):
    response = app_setup['client'].get(url, params=params)
    assert response.status_code == status
    assert words in response.json()['detail']


def test_post_and_empty_gallery(app_setup, tmp_path):
    response = app_setup['client'].post('/api/tracks', params=dict(q=QUERY))
    assert response.status_code == 405 and 'GET' in response.json()['detail']
    empty = TrackGallery.open(str(tmp_path / 'none.tracks'), 'fp')
    with pytest.raises(ValueError, match='holds no track'):
        create_track_app(empty, app_setup['encode_text'])


def test_serve_tool_builds_the_track_page(track_setup, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('serve_tool', TOOL)
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    common = [track_setup['config'], track_setup['checkpoint']]
    args = serve.parse_args([*common, '--tracks', track_setup['index']])
    client = TestClient(serve.build_app(args))
    assert 'tracks of 2 videos' in capsys.readouterr().out
    assert client.get('/api/cameras').json()['cameras'] == ['1', '2']
    missing = [*common, '--tracks', str(tmp_path / 'none.tracks')]
    assert serve.main(missing) == 2
    assert 'does not exist' in capsys.readouterr().err
