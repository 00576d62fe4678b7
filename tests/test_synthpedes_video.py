"""Tests of the SynthPedes video generator and the SynthPedesVideos dataset."""

import hashlib
import json
import os.path as osp

import numpy as np
import pytest

from tbps_mm.datasets import SynthPedesVideos, read_mot_ground_truth
from tbps_mm.datasets.synthpedes import (
    generate_synthpedes_videos,
    read_synthpedes_videos_meta,
)
from tbps_mm.registry import DATASETS
from tbps_mm.video import VideoFrameReader, probe_video


def _sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module')
def tiny_videos(tmp_path_factory):
    return generate_synthpedes_videos(
        str(tmp_path_factory.mktemp('v') / 'tiny'), 'tiny', seed=3, progress=False
    )


def test_generation_is_deterministic(tiny_videos, tmp_path):
    again = generate_synthpedes_videos(
        str(tmp_path / 'again'), 'tiny', seed=3, progress=False
    )
    other = generate_synthpedes_videos(
        str(tmp_path / 'other'), 'tiny', seed=4, progress=False
    )
    for name in ('videos/cam1.mp4', 'videos/cam2.mp4', 'gt/cam1.txt', 'videos.json'):
        assert _sha(osp.join(tiny_videos, name)) == _sha(osp.join(again, name)), name
    assert _sha(osp.join(tiny_videos, 'gt/cam1.txt')) != _sha(
        osp.join(other, 'gt/cam1.txt')
    )
    # an existing identical set is returned untouched; another one is refused
    assert generate_synthpedes_videos(tiny_videos, 'tiny', seed=3, progress=False)
    with pytest.raises(ValueError, match='different SynthPedes video set'):
        generate_synthpedes_videos(tiny_videos, 'tiny', seed=5, progress=False)


def test_ground_truth_matches_the_video(tiny_videos):
    meta = read_synthpedes_videos_meta(tiny_videos)
    with open(osp.join(tiny_videos, 'videos.json')) as f:
        content = json.load(f)
    assert meta['num_videos'] == len(content['videos']) == 2
    ids = {p['id'] for p in content['identities']}
    for person in content['identities']:
        assert len(person['captions']) == 2 and all(person['captions'])
    for video in content['videos']:
        path = osp.join(tiny_videos, video['file'])
        info = probe_video(path)
        assert (info['width'], info['height']) == (video['width'], video['height'])
        frames = list(VideoFrameReader(path))
        assert len(frames) == video['num_frames'] == meta['num_frames']
        gt = read_mot_ground_truth(osp.join(tiny_videos, video['gt']))
        assert gt, 'every tiny camera has people'
        background = np.median(np.stack([f.image for f in frames]), axis=0)
        for frame, (boxes, pids, vis) in gt.items():
            assert 1 <= frame <= video['num_frames']
            assert set(pids.tolist()) <= ids
            assert len(set(pids.tolist())) == len(pids)  # one box per person
            assert np.all((vis > 0) & (vis <= 1))
            assert np.all(boxes[:, :2] >= 0)
            assert np.all(boxes[:, 2] <= video['width'])
            assert np.all(boxes[:, 3] <= video['height'])
            image = frames[frame - 1].image.astype(np.int16)
            for (x1, y1, x2, y2), v in zip(boxes.astype(int), vis):
                if v < 0.5 or (y2 - y1) < 20:
                    continue
                # a visible person differs from the static background inside
                # the box, by more than codec noise does
                diff = np.abs(image[y1:y2, x1:x2] - background[y1:y2, x1:x2])
                assert diff.mean() > 8, (video['file'], frame)
        spans = {p['id']: p for p in video['people']}
        seen = {int(i) for _, (_, pids, _) in gt.items() for i in pids}
        assert seen == set(spans)


def test_dataset_is_registered_and_lists_videos(tiny_videos):
    dataset = DATASETS.build(
        dict(type='SynthPedesVideos', data_root=tiny_videos, size='tiny', seed=3)
    )
    assert isinstance(dataset, SynthPedesVideos)
    assert [v['camera'] for v in dataset.videos] == ['1', '2']
    assert all(osp.isfile(v['file']) for v in dataset.videos)
    assert dataset.manifest()[0]['start_time'].startswith('2025-06-02T10:')
    with pytest.raises(FileNotFoundError, match='no SynthPedes video set'):
        SynthPedesVideos(osp.join(tiny_videos, 'nothing'), generate=False)
