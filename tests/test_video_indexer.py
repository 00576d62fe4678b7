"""Tests of video ingestion: VideoIndexer, TrackGallery and the two tools."""

import csv
import importlib.util
import json
import os.path as osp
import shutil
from datetime import datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_tbps import CAPTION_WORDS, make_tiny_tokenizer
from mmengine.config import Config
from PIL import Image
from search_fixtures import SEARCH_CONFIG

from tbps_mm.apis import (
    FusedEncoder,
    TrackGallery,
    TrackGalleryError,
    VideoIndexer,
    read_manifest,
    track_encoders,
)
from tbps_mm.apis.track_gallery import (
    covered_dates,
    insert_tracks,
    track_index_metadata,
)
from tbps_mm.datasets import SynthPedesVideos
from tbps_mm.index import GalleryIndex
from tbps_mm.registry import MODELS

REPO = Path(__file__).resolve().parents[1]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Tiny SynthPedes videos and a randomly initialised tiny model."""
    root = tmp_path_factory.mktemp('video_index')
    tokenizer = make_tiny_tokenizer(root / 'tokenizer')
    config = root / 'tiny.py'
    config.write_text(
        SEARCH_CONFIG.format(tokenizer=tokenizer, vocab=len(CAPTION_WORDS) + 5)
    )
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    checkpoint = root / 'tiny.pth'
    torch.save(
        {k: v for k, v in model.state_dict().items() if not k.startswith('losses.')},
        checkpoint,
    )
    dataset = SynthPedesVideos(str(root / 'videos'), size='tiny', seed=0)
    encoder = FusedEncoder.from_config(str(config), str(checkpoint), batch_size=4)
    return dict(
        root=root,
        config=str(config),
        checkpoint=str(checkpoint),
        dataset=dataset,
        encoder=encoder,
        encoders=track_encoders(encoder),
    )


def _ingest(setup, det_dir=None, **overrides):
    det_dir = det_dir or osp.join(setup['dataset'].data_root, 'gt')
    settings = dict(
        detector=dict(type='MOTDetectionsFile', det_dir=det_dir),
        tracker=dict(type='ByteTrackAdapter', minimum_consecutive_frames=1),
        sample_fps=5.0,
        crops_per_track=4,
        min_detections=3,
    )
    settings.update(overrides)
    return settings


def test_incremental_and_idempotent_indexing(setup, tmp_path):
    encode_crops, encode_text, fingerprint = setup['encoders']
    calls = []

    def counting(crops):
        calls.append(len(crops))
        return encode_crops(crops)

    index_file = str(tmp_path / 'footage.tracks')
    videos = setup['dataset'].manifest()
    indexer = VideoIndexer(_ingest(setup), counting, index_file, fingerprint)
    first = indexer.index_videos(videos[:1])
    assert first['added'] == [videos[0]['file']] and first['tracks_added'] > 0
    n_first = first['num_tracks']
    # a new video adds its tracks; the first one is not encoded again
    calls.clear()
    second = VideoIndexer(_ingest(setup), counting, index_file, fingerprint)
    summary = second.index_videos(videos)
    assert summary['skipped'] == [videos[0]['file']]
    assert summary['added'] == [videos[1]['file']]
    assert summary['num_tracks'] == n_first + summary['tracks_added']
    encoded = sum(calls)
    # re-indexing the same videos changes nothing and encodes nothing
    calls.clear()
    before = open(index_file, 'rb').read()
    again = VideoIndexer(_ingest(setup), counting, index_file, fingerprint)
    summary = again.index_videos(videos)
    assert summary['skipped'] == [v['file'] for v in videos] and not calls
    assert open(index_file, 'rb').read() == before
    # the same bytes under another name are the same video
    copy = tmp_path / 'copy_of_cam1.mp4'
    shutil.copyfile(videos[0]['file'], copy)
    dets = tmp_path / 'dets'
    shutil.copytree(osp.join(setup['dataset'].data_root, 'gt'), dets)
    shutil.copyfile(dets / 'cam1.txt', dets / 'copy_of_cam1.txt')
    summary = VideoIndexer(
        _ingest(setup, str(dets)), counting, index_file, fingerprint
    ).index_videos([dict(videos[0], file=str(copy))])
    assert summary['skipped'] == [str(copy)] and not calls
    # other settings replace the video's tracks instead of adding duplicates
    changed = VideoIndexer(
        _ingest(setup, min_detections=2), counting, index_file, fingerprint
    )
    summary = changed.index_videos(videos[:1])
    assert summary['replaced'] == [videos[0]['file']]
    gallery = TrackGallery.open(index_file, fingerprint)
    per_video = {}
    for record in gallery.records.values():
        per_video.setdefault(record['video_sha256'], []).append(record)
    assert len(per_video) == 2
    assert sum(len(v['tracks']) for v in gallery.videos.values()) == len(gallery)
    assert encoded > 0


def test_a_video_without_people_is_indexed_once(setup, tmp_path):
    encode_crops, _, fingerprint = setup['encoders']
    dets = tmp_path / 'dets'
    dets.mkdir()
    (dets / 'cam1.txt').write_text('# nobody detected\n')
    video = setup['dataset'].manifest()[0]
    index_file = str(tmp_path / 'empty.tracks')
    first = VideoIndexer(
        _ingest(setup, str(dets)), encode_crops, index_file, fingerprint
    ).index_videos([video])
    assert first['added'] == [video['file']] and first['num_tracks'] == 0
    again = VideoIndexer(
        _ingest(setup, str(dets)), encode_crops, index_file, fingerprint
    )
    assert again.index_videos([video])['skipped'] == [video['file']]
    assert again.search(np.ones(again.gallery.index.dim, np.float32)) == []


def test_track_records_and_filters(setup, tmp_path):
    encode_crops, encode_text, fingerprint = setup['encoders']
    dataset = setup['dataset']
    indexer = VideoIndexer(
        _ingest(setup), encode_crops, str(tmp_path / 'g.tracks'), fingerprint
    )
    indexer.index_videos(dataset.manifest())
    gallery = indexer.gallery
    assert len(gallery) >= 2
    videos = {v['file']: v for v in dataset.videos}
    for record in gallery.records.values():
        video = videos[record['video']]
        assert record['camera'] == video['camera']
        assert osp.isfile(osp.join(gallery.crop_dir, record['crop']))
        frames = [b[0] for b in record['boxes']]
        assert frames == sorted(frames) and len(frames) >= 3
        assert record['first_frame'] == frames[0] and record['last_frame'] == frames[-1]
        assert record['start'] == pytest.approx((frames[0] - 1) / video['fps'])
        start = datetime.fromisoformat(video['start_time'])
        got = datetime.fromisoformat(record['start_time'])
        assert (got - start).total_seconds() == pytest.approx(record['start'], abs=1e-3)
        assert datetime.fromisoformat(record['end_time']) >= got
        # every box of the track is a ground-truth box of that frame
        gt = dataset.load_gt(video)
        for frame, x, y, w, h, _ in record['boxes']:
            boxes = gt[frame][0]
            assert np.abs(boxes - [x, y, x + w, y + h]).sum(1).min() < 0.5
    query = encode_text('a woman in a red shirt')
    everything = gallery.search(query, topk=100)
    assert len(everything) == len(gallery)
    scores = [h['score'] for h in everything]
    assert scores == sorted(scores, reverse=True)
    cam2 = gallery.search(query, topk=100, cameras=['2'])
    assert cam2 and all(h['camera'] == '2' for h in cam2)
    assert [h['key'] for h in cam2] == [
        h['key'] for h in everything if h['camera'] == '2'
    ]
    threshold = scores[len(scores) // 2]
    assert all(
        h['score'] >= threshold for h in gallery.search(query, 100, min_score=threshold)
    )
    # time windows: the whole morning, then a window before everything
    assert len(
        gallery.search(query, 100, time_from=time(10, 0), time_to=time(10, 5))
    ) == len(gallery)
    assert gallery.search(query, 100, time_from=time(9, 0), time_to=time(9, 30)) == []
    # a camera that no track has: an empty result, not an error
    assert gallery.search(query, 100, cameras=['no-such-camera']) == []
    one = everything[0]
    start = datetime.fromisoformat(one['start_time'])
    hits = gallery.search(query, 100, time_from=start, time_to=start)
    assert one['key'] in [h['key'] for h in hits]
    with pytest.raises(ValueError, match='before it starts'):
        gallery.search(query, 5, time_from=time(10, 5), time_to=time(10, 0))
    # find similar: a track's own vector finds itself first
    vector = gallery.vectors([one['key']])[0]
    assert gallery.search(vector, 1)[0]['key'] == one['key']
    assert one['key'] not in [
        h['key'] for h in gallery.search(vector, 100, exclude=[one['key']])
    ]
    # another encoder's gallery is refused, naming the file
    with pytest.raises(TrackGalleryError, match='g.tracks.*another model'):
        TrackGallery.open(str(tmp_path / 'g.tracks'), 'other-fingerprint')


def test_manifest_errors_name_the_entry(tmp_path):
    path = tmp_path / 'cams.json'
    path.write_text(json.dumps([{'file': 'a.mp4', 'camera': 2, 'start_time': 'noon'}]))
    with pytest.raises(ValueError, match='entry 0, field "start_time"'):
        read_manifest(str(path))
    path.write_text(json.dumps({'videos': [{'camera': 2}]}))
    with pytest.raises(ValueError, match='entry 0: no "file"'):
        read_manifest(str(path))
    path.write_text(json.dumps([{'file': 'a.mp4', 'camera': 2}]))
    assert read_manifest(str(path)) == {
        str(tmp_path / 'a.mp4'): dict(camera='2', start_time=None)
    }


def test_index_and_search_tools(setup, tmp_path, capsys):
    index_video, search_video = _tool('index_video'), _tool('search_video')
    data_root = setup['dataset'].data_root
    index = str(tmp_path / 'f.tracks')
    common = [setup['config'], setup['checkpoint']]
    args = [
        *common, osp.join(data_root, 'videos'), '--index', index,
        '--manifest', osp.join(data_root, 'videos.json'),
        '--detections', osp.join(data_root, 'gt'),
    ]  # fmt: skip
    assert index_video.main(args) == 0
    out = capsys.readouterr().out
    assert out.count('added ') == 2 and 'tracks added' in out
    assert index_video.main(args) == 0
    assert capsys.readouterr().out.count('unchanged ') == 2
    export = tmp_path / 'hits.csv'
    crops = tmp_path / 'crops'
    assert search_video.main([
        *common, '--index', index, '--query', 'a man in a blue coat',
        '--camera', '2', '--time-from', '10:00', '--time-to', '10:05',
        '--export', str(export), '--export-crops', str(crops), '--topk', '3',
    ]) == 0  # fmt: skip
    out = capsys.readouterr().out
    rows = list(csv.DictReader(open(export)))
    assert 0 < len(rows) <= 3 and all(r['camera'] == '2' for r in rows)
    assert len(list(crops.iterdir())) == len(rows)
    key = rows[0]['key']
    assert (
        search_video.main(
            [
                *common,
                '--index',
                index,
                '--similar-to',
                key,
                '--export',
                str(tmp_path / 'h.json'),
            ]
        )
        == 0
    )
    similar = json.load(open(tmp_path / 'h.json'))
    assert similar and key not in [h['key'] for h in similar]
    capsys.readouterr()
    # user mistakes: error lines, exit code 2, no traceback
    for bad in (
        [*common, '--index', index, '--query', 'x', '--time-from', '25:99'],
        [*common, '--index', index, '--query', '  '],
        [*common, '--index', index, '--similar-to', 'nope/1'],
        [*common, '--index', str(tmp_path / 'none.tracks'), '--query', 'x'],
        [*common, '--index', index, '--query', 'x', '--export', 'out.txt'],
    ):
        assert search_video.main(bad) == 2
        assert capsys.readouterr().err.startswith('error: ')
    folder = osp.join(data_root, 'videos')
    for bad in (
        [*common, str(tmp_path / 'missing.mp4'), '--index', index],
        [*common, folder, '--index', index, '--start-time', 'noon'],
        [*common, folder, '--index', index, '--detections', str(tmp_path)],
    ):
        assert index_video.main(bad) == 2
        assert capsys.readouterr().err.startswith('error: ')


def test_track_records_map_to_index_metadata_columns():
    record = dict(
        video='/v/cam2.mp4', camera='2', start_time='2025-06-02T10:00:05.000',
        end_time='2025-06-02T10:00:09.000', boxes=[[1, 0, 0, 5, 5, 0.9]], crop='a.jpg',
    )  # fmt: skip
    row = track_index_metadata(record)
    assert row['camera'] == '2' and row['source'] == '/v/cam2.mp4'
    later = track_index_metadata(dict(record, start_time='2025-06-02T10:01:05'))
    assert later['time'] - row['time'] == pytest.approx(60.0)
    assert row['extra']['boxes'] == record['boxes'] and 'camera' not in row['extra']
    json.dumps(row)  # a JSON column
    assert track_index_metadata(dict(record, start_time=None))['time'] is None


def test_crops_encode_in_memory_as_image_files_do(setup, tmp_path):
    encoder = setup['encoder']
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in
             ((90, 40), (128, 48), (60, 30), (200, 70), (33, 17))]  # fmt: skip
    paths = []
    for i, crop in enumerate(crops):
        paths.append(str(tmp_path / f'{i}.png'))
        Image.fromarray(crop).save(paths[-1])
    from_files = encoder.encode_images(paths)['fused_embed']
    assert encoder._array_pipeline is not None  # the loader was taken out
    in_memory = encoder.encode_image_arrays(crops)['fused_embed']
    torch.testing.assert_close(in_memory, from_files)
    # a pipeline of transform objects cannot be edited: crops go through
    # lossless files, with the same result
    objects = FusedEncoder(encoder.model, pipeline=encoder.pipeline, batch_size=2)
    assert objects._array_pipeline is None
    torch.testing.assert_close(
        objects.encode_image_arrays(crops)['fused_embed'], from_files
    )
    encode_crops, _, _ = setup['encoders']
    np.testing.assert_allclose(encode_crops(crops), from_files.numpy(), rtol=1e-5)
    with pytest.raises(
        ValueError, match=r'track crop 1: expected an \(H, W, 3\) uint8'
    ):
        encoder.encode_image_arrays(
            [crops[0], crops[1].astype(np.float32)],
            names=['track crop 0', 'track crop 1'],
        )


def test_track_fingerprint_is_the_image_gallery_one(setup):
    from tbps_mm.apis import TBPSInferencer

    inferencer = TBPSInferencer(
        setup['config'], setup['checkpoint'], show_progress=False
    )
    assert setup['encoder'].fingerprints == inferencer.fingerprints
    other = FusedEncoder(setup['encoder'].model, pipeline=[])
    assert other.fingerprints['model'] == inferencer.fingerprints['model']
    assert other.fingerprints['pipeline'] != inferencer.fingerprints['pipeline']


def _synthetic_gallery(path, n=60, seed=0):
    """Tracks on 3 cameras over two dates, with random vectors."""
    rng = np.random.default_rng(seed)
    gallery = TrackGallery.open(str(path), 'fp')
    keys, records = [], []
    for i in range(n):
        day = datetime(2025, 6, 2 + i % 2, 9, 58)
        start = day + timedelta(seconds=float(rng.uniform(0, 600)))
        end = start + timedelta(seconds=float(rng.uniform(1, 90)))
        keys.append(f'v{i % 2}/{i}')
        records.append(
            dict(
                camera=str(i % 3),
                video=f'/v/cam{i % 3}.mp4',
                track_id=i,
                start_time=start.isoformat(),
                end_time=end.isoformat(),
                crop=f'{i}.jpg',
            )  # fmt: skip
        )
    no_time = dict(records[0], start_time=None, end_time=None, track_id=n)
    keys.append('v0/none')
    records.append(no_time)
    # a long track: a window's start bound goes down widened by 9 hours, so
    # the search must ask for more candidates than topk
    long = dict(records[1], start_time='2025-06-02T00:30:00', track_id=n + 1)
    keys.append('v1/long')
    records.append(dict(long, end_time='2025-06-02T09:50:00'))
    vectors = rng.standard_normal((len(keys), 16)).astype(np.float32)
    insert_tracks(gallery, keys, vectors, records)
    gallery.videos['v'] = dict(tracks=keys, dates=covered_dates(records))
    gallery.save()
    return gallery, keys, vectors, records


def _reference(keys, vectors, records, query, topk, cameras=None, window=None,
               time_of_day=None, min_score=None, exclude=()):  # fmt: skip
    """The filtered ranking, by brute force over every track."""
    scores = vectors @ query
    passed = []
    for i in np.argsort(-scores, kind='stable'):
        record = records[i]
        if keys[i] in exclude or (cameras and record['camera'] not in cameras):
            continue
        if min_score is not None and scores[i] < min_score:
            continue
        if window or time_of_day:
            if record['start_time'] is None:
                continue
            start = datetime.fromisoformat(record['start_time'])
            end = datetime.fromisoformat(record['end_time'])
            if window:
                lo, hi = window
            else:
                lo = datetime.combine(start.date(), time_of_day[0])
                hi = datetime.combine(start.date(), time_of_day[1])
            if (lo and end < lo) or (hi and start > hi):  # no overlap
                continue
        passed.append(keys[i])
    return passed[:topk]


def test_filtered_track_search_is_exact_and_pushed_down(tmp_path):
    path = tmp_path / 'synthetic.tracks'
    _, keys, vectors, records = _synthetic_gallery(path)
    gallery = TrackGallery.open(str(path), 'fp')  # as saved
    # the metadata columns the index filters on
    item = gallery.index.item(gallery.index.id_of(keys[5]))
    assert item['camera'] == records[5]['camera']
    assert item['source'] == records[5]['video']
    start = datetime.fromisoformat(records[5]['start_time'])
    assert item['time'] == pytest.approx((start - datetime(1970, 1, 1)).total_seconds())
    assert item['extra']['end_time'] == records[5]['end_time']
    filters = []
    search_ids = gallery.index.search_ids

    def recording(queries, topk, filter=None):
        filters.append(filter)
        return search_ids(queries, topk, filter=filter)

    gallery.index.search_ids = recording
    query = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    d2 = datetime(2025, 6, 2, 10)
    cases = [
        dict(),
        dict(cameras=['1']),
        dict(min_score=0.5),
        dict(window=(d2, d2.replace(minute=2))),
        dict(window=(d2.replace(minute=3), None)),
        dict(window=(None, d2.replace(hour=9, minute=59))),
        dict(cameras=['0', '2'], window=(d2, d2.replace(minute=4))),
        dict(time_of_day=(time(10, 0), time(10, 1))),
        dict(time_of_day=(time(10, 5), time(10, 6)), cameras=['2'], min_score=-1.0),
        dict(exclude={keys[0], keys[1]}),
    ]  # fmt: skip
    for case in cases:
        for topk in (1, 3, 100):
            filters.clear()
            window = case.get('window') or case.get('time_of_day') or (None, None)
            got = gallery.search(
                query, topk, cameras=case.get('cameras'), time_from=window[0],
                time_to=window[1], min_score=case.get('min_score'),
                exclude=case.get('exclude', ()),
            )  # fmt: skip
            want = _reference(keys, vectors, records, query, topk, **case)
            assert [h['key'] for h in got] == want, (case, topk)
            assert [h['rank'] for h in got] == list(range(1, len(got) + 1))
            # the filters went down into the index's filter spec
            for spec in filters:
                if case.get('cameras'):
                    assert spec['cameras'] == case['cameras']
                if case.get('min_score') is not None:
                    assert spec['min_score'] == case['min_score']
                assert ('time' in spec) == (window != (None, None))
    # a track that starts before the window and ends inside it overlaps it
    first = min((r for r in records if r['start_time']), key=lambda r: r['end_time'])
    end = datetime.fromisoformat(first['end_time'])
    hits = gallery.search(query, 100, time_from=end, time_to=end + timedelta(hours=1))
    assert first['track_id'] in [h['track_id'] for h in hits]
    after = gallery.search(query, 100, time_from=end + timedelta(seconds=1))
    assert first['track_id'] not in [h['track_id'] for h in after]
    with pytest.raises(ValueError, match='both be times of day'):
        gallery.search(query, 5, time_from=time(10), time_to=d2)


def test_track_gallery_file_is_a_gallery_index(setup, tmp_path):
    path = tmp_path / 'synthetic.tracks'
    _, keys, vectors, _ = _synthetic_gallery(path)
    gallery = TrackGallery.open(str(path), 'fp')
    np.testing.assert_array_equal(gallery.vectors(keys[:3]), vectors[:3])
    assert len(gallery.records) == len(keys) and keys[2] in gallery
    # an image gallery index is not a track gallery, even to rebuild
    images = GalleryIndex(16)
    images.add(['a.jpg'], vectors[:1])
    images.save(str(tmp_path / 'images.idx'), dict(model='m'))
    for rebuild in (False, True):
        with pytest.raises(TrackGalleryError, match='not a video track gallery'):
            TrackGallery.open(str(tmp_path / 'images.idx'), 'fp', rebuild=rebuild)
    # another encoder's tracks: refused, or replaced when rebuilding
    with pytest.raises(TrackGalleryError, match='another model'):
        TrackGallery.open(str(path), 'other')
    assert len(TrackGallery.open(str(path), 'other', rebuild=True)) == 0
