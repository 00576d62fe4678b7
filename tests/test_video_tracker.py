"""Tests of the ByteTrack adapter, the track accumulator and pooling."""

import numpy as np
import pytest

from tbps_mm.registry import TASK_UTILS
from tbps_mm.video import (
    ByteTrackAdapter,
    TrackAccumulator,
    VideoFrame,
    person_crop,
    pool_track_vectors,
)


def test_bytetrack_keeps_identities_of_two_walkers():
    tracker = TASK_UTILS.build(
        dict(type='ByteTrackAdapter', minimum_consecutive_frames=1)
    )
    assert isinstance(tracker, ByteTrackAdapter)
    with pytest.raises(RuntimeError, match='reset'):
        ByteTrackAdapter().update(np.zeros((0, 4)), np.zeros(0))
    tracker.reset(frame_rate=5)
    history = []
    for t in range(12):
        a = [10 + 6 * t, 20, 40 + 6 * t, 100]  # walks right
        b = [200 - 6 * t, 30, 230 - 6 * t, 110]  # walks left, they cross
        order = [b, a] if t % 2 else [a, b]  # detector output order varies
        ids = tracker.update(np.array(order, float), np.array([0.9, 0.8]))
        history.append(ids[::-1] if t % 2 else ids)
    confirmed = np.array(history[2:])
    assert np.all(confirmed >= 0)
    # each walker keeps one id, the two ids differ
    assert len(set(confirmed[:, 0])) == 1 and len(set(confirmed[:, 1])) == 1
    assert confirmed[0, 0] != confirmed[0, 1]
    assert tracker.update(np.zeros((0, 4)), np.zeros(0)).shape == (0,)


def test_accumulator_keeps_best_crops_and_drops_short_tracks():
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :100] = 255
    acc = TrackAccumulator(crops_per_track=2)
    for t in range(4):
        frame = VideoFrame(t, t / 5, image)
        boxes = np.array([[20, 10, 40, 70], [120, 10, 140, 40 + 10 * t]], float)
        acc.add(frame, boxes, np.array([0.5 + 0.1 * t, 0.9]), np.array([3, 7]))
    acc.add(VideoFrame(4, 0.8, image), np.array([[5, 5, 9, 15]]), [0.9], [9])
    acc.add(VideoFrame(4, 0.8, image), np.array([[5, 5, 9, 15]]), [0.9], [-1])
    tracks = acc.finish(min_detections=3)
    assert [t.track_id for t in tracks] == [3, 7] and acc.num_tracks == 3
    three, seven = tracks
    assert three.frames == [0, 1, 2, 3] and three.times[-1] == pytest.approx(0.6)
    assert len(three.crops) == 2 and three.crops[0].shape == (128, 48, 3)
    # best = highest score x height: the last two frames of track 3, best first
    assert three.crop_quality == sorted(three.crop_quality, reverse=True)
    assert three.crop_quality[0] == pytest.approx(0.8 * 60)
    assert seven.crop_quality[0] == pytest.approx(0.9 * 60)


def test_person_crop_frames_like_synthpedes_and_pads_at_edges():
    image = np.zeros((180, 320, 3), np.uint8)
    image[40:152, 100:140] = 200  # a 112-pixel-tall person
    crop = person_crop(image, (100, 40, 140, 152))
    assert crop.shape == (128, 48, 3)
    rows = np.where(crop.mean((1, 2)) > 50)[0]
    # the person fills about 87.5 % of the crop height, centred
    assert abs((rows[-1] - rows[0] + 1) / 128 - 0.875) < 0.03
    edge = person_crop(image, (-10, 150, 20, 200))
    assert edge.shape == (128, 48, 3)


def test_pooling_is_a_rescaled_mean():
    vectors = np.array([[3.0, 0.0], [0.0, 3.0]], np.float32)
    pooled = pool_track_vectors(vectors)
    np.testing.assert_allclose(pooled, [3 / np.sqrt(2)] * 2, rtol=1e-6)
    with pytest.raises(ValueError, match='cancel out'):
        pool_track_vectors(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match='N >= 1'):
        pool_track_vectors(np.zeros((0, 2)))
