"""Fixtures shared by several test files, built once per test run."""

import pytest
from search_fixtures import build_search_model, make_people


@pytest.fixture(scope='session')
def search_setup(tmp_path_factory):
    """A tiny model trained to find each generated person, and its gallery.

    Returns:
        dict: ``config``, ``checkpoint``, ``gallery`` (the image folder) and
        ``people`` (``make_people``'s records).
    """
    root = tmp_path_factory.mktemp('search_model')
    people = make_people(root / 'gallery')
    setup = build_search_model(root, people)
    return dict(setup, gallery=str(root / 'gallery'), people=people)


@pytest.fixture(scope='session')
def track_setup(search_setup, tmp_path_factory):
    """The tiny SynthPedes videos indexed as tracks with ``search_setup``'s
    model (ground-truth boxes as detections).

    Returns:
        dict: ``config``, ``checkpoint``, ``index`` (the track gallery file),
        ``encode_text``, ``fingerprint`` and ``dataset``.
    """
    import os.path as osp

    from tbps_mm.apis import FusedEncoder, VideoIndexer, track_encoders
    from tbps_mm.datasets import SynthPedesVideos

    root = tmp_path_factory.mktemp('track_gallery')
    dataset = SynthPedesVideos(str(root / 'videos'), size='tiny', seed=0)
    encoder = FusedEncoder.from_config(
        search_setup['config'], search_setup['checkpoint'], batch_size=8
    )
    encode_crops, encode_text, fingerprint = track_encoders(encoder)
    index = str(root / 'footage.tracks')
    ingest = dict(
        detector=dict(
            type='MOTDetectionsFile', det_dir=osp.join(dataset.data_root, 'gt')
        ),
        tracker=dict(type='ByteTrackAdapter', minimum_consecutive_frames=1),
        sample_fps=5.0,
        crops_per_track=4,
        min_detections=3,
    )
    VideoIndexer(ingest, encode_crops, index, fingerprint).index_videos(
        dataset.manifest()
    )
    return dict(
        config=search_setup['config'],
        checkpoint=search_setup['checkpoint'],
        index=index,
        encode_text=encode_text,
        fingerprint=fingerprint,
        dataset=dataset,
    )
