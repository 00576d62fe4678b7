"""MilvusBackend on Milvus Lite: add, remove, filters pushed down, persistence,
and the same rankings as exact FAISS search."""

import numpy as np
import pytest

from tbps_mm.index import GalleryIndex, SearchFilter

DIM = 16
COUNT = 300


def vectors_of(count: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def metadata_of(count: int):
    return [
        dict(camera=f'cam{i % 3}', time=float(i), source='a' if i < 150 else 'b')
        if i % 10
        else dict(camera=f'cam{i % 3}')  # every tenth item has no time
        for i in range(count)
    ]


def test_filter_becomes_a_milvus_expression():
    spec = SearchFilter.from_spec(dict(cameras=['c"1', 'c2'], time=[1.5, None]))
    assert spec.to_milvus() == (
        'camera in ["c\\"1", "c2"] and has_time == true and time >= 1.5'
    )
    assert SearchFilter.from_spec(None).to_milvus() == ''


def test_milvus_lite_matches_exact_faiss_and_persists(tmp_path):
    keys = [f'img_{i:04d}.jpg' for i in range(COUNT)]
    vectors, queries = vectors_of(COUNT, 0), vectors_of(5, 1)
    metadata = metadata_of(COUNT)
    milvus = GalleryIndex(
        DIM,
        backend='milvus',
        backend_options=dict(uri=str(tmp_path / 'milvus.db'), collection='gallery'),
    )
    exact = GalleryIndex(DIM, 'flat')
    for index in (milvus, exact):
        index.add(keys[:200], vectors[:200], metadata[:200])
        index.add(keys[200:], vectors[200:], metadata[200:])
        assert index.remove(keys[40:60] + ['unknown.jpg']) == 20
    assert len(milvus) == len(exact) == 280

    def same_results(a, b, **kwargs):
        a_scores, a_keys = a.search(queries, 10, **kwargs)
        b_scores, b_keys = b.search(queries, 10, **kwargs)
        assert a_keys == b_keys
        np.testing.assert_allclose(a_scores, b_scores, atol=1e-5)
        return a_keys

    found = same_results(milvus, exact)
    assert not {k for row in found for k in row} & set(keys[40:60])
    spec = dict(cameras=['cam1', 'cam2'], time=[30, 250], sources=['b'])
    filtered = same_results(milvus, exact, filter=spec)
    for row in filtered:
        for key in row:
            i = int(key[4:8])
            assert i % 3 in (1, 2) and 150 <= i <= 250 and i % 10
    same_results(milvus, exact, filter=dict(min_score=0.3))
    assert milvus.search(queries, 3, filter=dict(cameras=['none']))[1] == [[]] * 5

    path = tmp_path / 'gallery.idx'
    milvus.save(str(path), metadata=dict(model='m1'))
    milvus.backend.close()
    reopened = GalleryIndex.load(str(path), expected_metadata=dict(model='m1'))
    assert reopened.describe().startswith('milvus (FLAT, collection "gallery"')
    assert len(reopened) == 280 and reopened.metadata == dict(model='m1')
    same_results(reopened, exact, filter=spec)
    # Incremental changes after reopening keep matching exact search.
    for index in (reopened, exact):
        index.remove(keys[:30])
        index.add(['new.jpg'], vectors_of(1, 7), [dict(camera='cam9', time=5.0)])
    same_results(reopened, exact)
    same_results(reopened, exact, filter=dict(cameras=['cam9']))
    with pytest.raises(ValueError, match='a Milvus index takes its index type'):
        GalleryIndex(DIM, 'ivf-sq8', backend='milvus')
