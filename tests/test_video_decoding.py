"""Tests of video decoding: sampling and the errors for bad files."""

import av
import numpy as np
import pytest

from tbps_mm.video import VideoDecodeError, VideoFrameReader, probe_video


def _write(path, frames=20, fps=10, faststart=False):
    options = {'movflags': 'faststart'} if faststart else {}
    container = av.open(str(path), 'w', format='mp4', options=options)
    stream = container.add_stream('mpeg4', rate=fps)
    stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
    rng = np.random.default_rng(0)
    for _ in range(frames):
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format='rgb24')):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return str(path)


def test_sampling_by_time(tmp_path):
    path = _write(tmp_path / 'a.mp4')
    assert probe_video(path)['num_frames'] == 20
    every = list(VideoFrameReader(path))
    assert [f.index for f in every] == list(range(20))
    assert every[0].image.shape == (48, 64, 3) and every[0].image.dtype == np.uint8
    sampled = list(VideoFrameReader(path, sample_fps=3))
    assert [f.index for f in sampled] == [0, 4, 7, 10, 14, 17]
    assert [round(f.time, 2) for f in sampled] == [0.0, 0.4, 0.7, 1.0, 1.4, 1.7]
    assert [f.index for f in VideoFrameReader(path, sample_fps=100)] == list(range(20))
    with pytest.raises(ValueError, match='sample_fps'):
        VideoFrameReader(path, sample_fps=0)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.mp4'):
        VideoFrameReader(str(tmp_path / 'nope.mp4'))
    junk = tmp_path / 'junk.mp4'
    junk.write_bytes(b'this is not a video' * 50)
    with pytest.raises(VideoDecodeError, match='junk.mp4.*not a readable video'):
        VideoFrameReader(str(junk))
    # an MP4 cut before its index (written at the end) cannot be opened
    data = open(_write(tmp_path / 'b.mp4'), 'rb').read()
    cut = tmp_path / 'cut.mp4'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoDecodeError, match='cut.mp4'):
        VideoFrameReader(str(cut))


def test_truncated_video_keeps_readable_frames_and_warns(tmp_path):
    data = open(_write(tmp_path / 'c.mp4', faststart=True), 'rb').read()
    cut = tmp_path / 'cut_fast.mp4'
    cut.write_bytes(data[: len(data) // 2])
    reader = VideoFrameReader(str(cut))
    frames = list(reader)
    assert 0 < len(frames) < 20
    assert reader.problem is not None
    assert 'cut_fast.mp4' in reader.problem and f'{len(frames)} of 20' in reader.problem
    with pytest.raises(VideoDecodeError, match='cut_fast.mp4'):
        list(VideoFrameReader(str(cut), strict=True))
