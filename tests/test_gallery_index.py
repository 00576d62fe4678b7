"""GalleryIndex: exact and IVF search, incremental updates, the file format."""

import os

import faiss
import numpy as np
import pytest

import tbps_mm.apis.gallery_index as gallery_index
from tbps_mm.apis import (
    CorruptIndexError,
    GalleryIndex,
    IndexMismatchError,
    NotAnIndexError,
)
from tbps_mm.apis.gallery_index import default_nlist, default_nprobe, default_pq_m

DIM = 24


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def keys_of(count: int, start: int = 0):
    return [f'img_{i:05d}.jpg' for i in range(start, start + count)]


def test_flat_is_exact_inner_product_ranking():
    gallery, queries = unit_vectors(200), unit_vectors(7, seed=1)
    index = GalleryIndex(DIM, 'flat')
    index.add(keys_of(200), gallery)
    scores, keys = index.search(queries, topk=10)
    exact = queries @ gallery.T
    order = np.argsort(-exact, axis=1)[:, :10]
    assert keys == [[f'img_{i:05d}.jpg' for i in row] for row in order]
    np.testing.assert_allclose(
        scores, np.take_along_axis(exact, order, 1), rtol=1e-5, atol=1e-6
    )
    assert len(index) == 200 and index.keys == keys_of(200)
    assert 'img_00003.jpg' in index and index.bytes_per_vector == 4 * DIM
    # topk beyond the gallery is clipped; one vector is one query.
    scores, keys = index.search(queries[0], topk=500)
    assert scores.shape == (1, 200) and len(keys[0]) == 200


def test_flat_incremental_add_remove_equals_rebuild():
    vectors = unit_vectors(300)
    keys = keys_of(300)
    incremental = GalleryIndex(DIM, 'flat')
    incremental.add(keys[:100], vectors[:100])
    incremental.add(keys[100:300], vectors[100:300])  # a second folder
    gone = keys[10:40] + keys[250:260]
    assert incremental.remove(gone + ['unknown.jpg']) == 40
    kept = [i for i, k in enumerate(keys) if k not in set(gone)]
    rebuilt = GalleryIndex(DIM, 'flat')
    rebuilt.add([keys[i] for i in kept], vectors[kept])
    assert sorted(incremental.keys) == sorted(rebuilt.keys)
    queries = unit_vectors(9, seed=2)
    a_scores, a_keys = incremental.search(queries, 25)
    b_scores, b_keys = rebuilt.search(queries, 25)
    assert a_keys == b_keys
    np.testing.assert_array_equal(a_scores, b_scores)
    # A removed key can come back with a new vector.
    incremental.add([keys[10]], vectors[10:11])
    assert incremental.search(vectors[10], 1)[1] == [[keys[10]]]


@pytest.mark.parametrize('index_type', ['ivf-sq8', 'ivf-pq-refine'])
def test_ivf_incremental_equals_rebuild_with_the_same_training(index_type):
    vectors = unit_vectors(2000)
    keys = keys_of(2000)
    knobs = dict(pq_m=12) if index_type == 'ivf-pq-refine' else {}
    index = GalleryIndex(DIM, index_type, nlist=16, nprobe=4, **knobs)
    index.train(vectors[:1500])
    fresh = index.empty_like()  # same trained cells and quantiser ranges
    index.add(keys[:1200], vectors[:1200])
    index.add(keys[1200:], vectors[1200:])
    gone = keys[100:300]
    index.remove(gone)
    kept = [i for i in range(2000) if not 100 <= i < 300]
    fresh.add([keys[i] for i in kept], vectors[kept])
    if index_type == 'ivf-sq8':
        assert index.describe() == (
            'ivf-sq8 (nlist 16, nprobe 4), 1800 vectors of 24 dims'
        )
        assert index.bytes_per_vector == DIM  # one byte per dimension
    else:
        assert index.describe() == (
            'ivf-pq-refine (nlist 16, nprobe 4, pq_m 12, refine x10), 1800 '
            'vectors of 24 dims'
        )
        assert index.bytes_per_vector == DIM + 6  # SQ8 copy + 12 4-bit codes
    queries = unit_vectors(12, seed=3)
    a_scores, a_keys = index.search(queries, 10)
    b_scores, b_keys = fresh.search(queries, 10)
    assert a_keys == b_keys
    np.testing.assert_array_equal(a_scores, b_scores)
    assert not set(gone) & {k for row in a_keys for k in row}
    # Visiting every cell finds the exact top 10 up to 8-bit code error.
    index.nprobe = 16
    _, keys_all = index.search(queries, 10)
    exact = queries @ vectors[kept].T
    truth = [[keys[kept[i]] for i in row] for row in np.argsort(-exact, 1)[:, :10]]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(keys_all, truth)])
    assert recall >= 0.9


def test_untrained_ivf_trains_on_its_first_add_and_reports_too_few():
    index = GalleryIndex(DIM, 'ivf-sq8', nlist=32)
    with pytest.raises(ValueError, match='10 training vectors for 32 IVF cells'):
        index.add(keys_of(10), unit_vectors(10))
    assert len(index) == 0 and not index.is_trained
    index.add(keys_of(400), unit_vectors(400))
    assert index.is_trained and index.nlist == 32
    assert index.nprobe == default_nprobe(32)


def test_auto_becomes_ivf_past_the_threshold(monkeypatch):
    monkeypatch.setattr(gallery_index, 'AUTO_FLAT_MAX', 500)
    vectors = unit_vectors(800)
    index = GalleryIndex(DIM)
    index.add(keys_of(400), vectors[:400])
    assert index.index_type == 'flat'
    index.add(keys_of(400, start=400), vectors[400:])
    assert index.index_type == 'ivf-sq8' and len(index) == 800
    assert index.nlist == default_nlist(800)
    # Every key kept its vector through the conversion.
    index.nprobe = index.nlist
    _, keys = index.search(vectors[[3, 450]], 1)
    assert keys == [['img_00003.jpg'], ['img_00450.jpg']]
    assert GalleryIndex(DIM, expected_size=10**6).index_type == 'ivf-sq8'
    assert default_nlist(10**6) == 1000 and default_nlist(100) == 2
    assert default_pq_m(1280) == 64 and default_pq_m(24) == 2


def test_pq_refine_scores_candidates_from_the_sq8_copy():
    vectors, queries = unit_vectors(3000), unit_vectors(20, seed=6)
    exact = queries @ vectors.T
    truth = np.argsort(-exact, 1)[:, :10]
    recalls = {}
    for refine_factor in (1, 10):
        index = GalleryIndex(
            DIM,
            'ivf-pq-refine',
            nlist=8,
            nprobe=8,
            pq_m=12,
            refine_factor=refine_factor,
        )
        index.add(keys_of(3000), vectors)
        scores, keys = index.search(queries, 10)
        found = [[int(k[4:9]) for k in row] for row in keys]
        recalls[refine_factor] = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]
        )
    # 4-bit codes of random vectors are coarse; re-scoring 10x the candidates
    # from the 8-bit copy recovers the true top 10.
    assert recalls[10] >= 0.9 and recalls[10] > recalls[1] + 0.2
    # The scores are the SQ8 copy's: within 8-bit error of the exact ones.
    np.testing.assert_allclose(
        scores, np.take_along_axis(exact, np.array(found), 1), atol=0.02
    )
    assert (np.diff(scores, axis=1) <= 0).all()
    with pytest.raises(ValueError, match='pq_m must divide dim 24'):
        GalleryIndex(DIM, 'ivf-pq-refine', pq_m=5)
    small = GalleryIndex(DIM, 'ivf-pq-refine', nlist=2)
    with pytest.raises(ValueError, match='10 training vectors for 4-bit'):
        small.add(keys_of(10), unit_vectors(10))


def test_bad_input_is_named():
    index = GalleryIndex(DIM, 'flat')
    with pytest.raises(ValueError, match='unknown index type "hnsw"'):
        GalleryIndex(DIM, 'hnsw')
    with pytest.raises(ValueError, match=r'\(N, 24\) array, got shape \(3, 5\)'):
        index.add(keys_of(3), np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match='2 keys for 3 vectors'):
        index.add(keys_of(2), unit_vectors(3))
    with pytest.raises(ValueError, match='keys given twice'):
        index.add(['a', 'a'], unit_vectors(2))
    bad = unit_vectors(2)
    bad[1, 0] = np.nan
    with pytest.raises(ValueError, match=r'NaN or infinite values \(rows \[1\]\)'):
        index.add(['a', 'b'], bad)
    with pytest.raises(ValueError, match='the index is empty'):
        index.search(unit_vectors(1), 1)
    index.add(['a'], unit_vectors(1))
    with pytest.raises(ValueError, match='already in the index'):
        index.add(['a'], unit_vectors(1))
    with pytest.raises(ValueError, match='topk must be >= 1'):
        index.search(unit_vectors(1), 0)


@pytest.mark.parametrize('index_type', ['flat', 'ivf-sq8', 'ivf-pq-refine'])
def test_save_load_round_trip(tmp_path, index_type):
    index = GalleryIndex(DIM, index_type, nlist=8, nprobe=3)
    index.add(keys_of(500), unit_vectors(500))
    index.remove(keys_of(5))
    path = tmp_path / 'sub' / 'gallery.idx'
    index.save(str(path), metadata=dict(model='m1', pipeline='p1', folders=['a']))
    loaded = GalleryIndex.load(str(path), expected_metadata=dict(model='m1'))
    assert loaded.keys == index.keys and loaded.index_type == index_type
    assert loaded.metadata['folders'] == ['a']
    assert loaded.nprobe == index.nprobe
    queries = unit_vectors(4, seed=5)
    assert loaded.search(queries, 7)[1] == index.search(queries, 7)[1]
    # New ids continue after the old ones: no clash after removals.
    loaded.add(['new.jpg'], unit_vectors(1, seed=9))
    assert len(loaded) == 496 and loaded.search(unit_vectors(1, seed=9), 1)[1] == [
        ['new.jpg']
    ]
    assert GalleryIndex.read_header(str(path))['index_type'] == index_type
    assert [p.name for p in path.parent.iterdir()] == ['gallery.idx']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_other_model_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    index = GalleryIndex(DIM, 'flat')
    index.add(keys_of(50), unit_vectors(50))
    path = tmp_path / 'gallery.idx'
    index.save(str(path), metadata=dict(model='m1', pipeline='p1'))
    good = path.read_bytes()

    with pytest.raises(IndexMismatchError) as err:
        GalleryIndex.load(str(path), expected_metadata=dict(model='m2', pipeline='p1'))
    assert str(path) in str(err.value)
    assert 'model: index has "m1", expected "m2"' in str(err.value)
    assert 'pipeline' not in str(err.value)

    path.write_bytes(good[:-10])  # truncated
    with pytest.raises(CorruptIndexError, match='truncated or appended'):
        GalleryIndex.load(str(path))
    damaged = bytearray(good)
    damaged[-200] ^= 0xFF  # one flipped byte in the FAISS payload
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptIndexError, match='payload does not match'):
        GalleryIndex.load(str(path))
    damaged = bytearray(good)
    damaged[40] ^= 0xFF  # in the JSON header
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptIndexError, match='header does not match'):
        GalleryIndex.load(str(path))

    path.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))  # somebody's image
    with pytest.raises(NotAnIndexError, match='is not a tbps_mm gallery index'):
        GalleryIndex.load(str(path))
    npz = tmp_path / 'old.npz'
    np.savez(npz, embed=np.zeros(3))
    with pytest.raises(NotAnIndexError, match=str(npz)):
        GalleryIndex.load(str(npz))
    with pytest.raises(FileNotFoundError, match='missing.idx'):
        GalleryIndex.load(str(tmp_path / 'missing.idx'))
    for error in (CorruptIndexError, IndexMismatchError, NotAnIndexError):
        assert issubclass(error, ValueError)


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    index = GalleryIndex(DIM, 'flat')
    index.add(keys_of(50), unit_vectors(50))
    path = tmp_path / 'gallery.idx'
    index.save(str(path), metadata=dict(model='m1'))
    good = path.read_bytes()
    index.add(keys_of(10, start=50), unit_vectors(10, seed=4))

    def write_half_then_fail(faiss_index, writer):
        writer(b'x' * 1000)  # part of the payload reaches the file
        raise OSError('disk full')

    monkeypatch.setattr(faiss, 'write_index', write_half_then_fail)
    monkeypatch.setattr(faiss, 'PyCallbackIOWriter', lambda write: write)
    with pytest.raises(OSError, match='disk full'):
        index.save(str(path), metadata=dict(model='m1'))
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ['gallery.idx']
    assert len(GalleryIndex.load(str(path))) == 50
