"""GalleryIndex: exact and IVF search, filters, incremental updates, the file
format."""

import os
import struct
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

import tbps_mm.index.gallery_index as gallery_index
from tbps_mm.index import (
    CorruptIndexError,
    GalleryIndex,
    IndexMismatchError,
    MetadataStore,
    NotAnIndexError,
    default_nlist,
    default_rank,
)

DIM = 24
ROOT = Path(__file__).resolve().parents[1]


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(count: int, seed: int = 0, centres: int = 40) -> np.ndarray:
    """Unit vectors drawn like embeddings: identities around ``centres``
    means (fixed whatever ``seed``), with a spread that decays over the
    dimensions, so that cells and leading directions mean something."""
    means = np.random.default_rng(123).standard_normal((centres, DIM))
    scale = 0.6 ** np.arange(DIM)  # most variance in the first dimensions
    rng = np.random.default_rng(seed)
    x = means[rng.integers(0, centres, count)] * scale
    x = x + 0.3 * scale * rng.standard_normal((count, DIM))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def keys_of(count: int, start: int = 0):
    return [f'img_{i:05d}.jpg' for i in range(start, start + count)]


def recall(found, truth) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def exact_keys(queries, vectors, keys, k):
    order = np.argsort(-(queries @ vectors.T), axis=1, kind='stable')[:, :k]
    return [[keys[i] for i in row] for row in order]


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
    assert 'img_00003.jpg' in index and index.bytes_per_vector == 4 * DIM + 8
    assert index.key_of(3) == 'img_00003.jpg' and index.id_of('img_00003.jpg') == 3
    # topk beyond the gallery is clipped; one vector is one query.
    scores, keys = index.search(queries[0], topk=500)
    assert scores.shape == (1, 200) and len(keys[0]) == 200


def test_search_reads_only_the_result_rows(monkeypatch):
    index = GalleryIndex(DIM, 'flat')
    index.add(keys_of(300), unit_vectors(300))
    asked = []
    keys_of_ids = MetadataStore.keys_of

    def spy(store, ids):
        asked.append(len(ids))
        return keys_of_ids(store, ids)

    def whole_store(store):
        raise AssertionError('a search read every key')

    monkeypatch.setattr(MetadataStore, 'iter_keys', whole_store)
    monkeypatch.setattr(MetadataStore, 'keys_of', spy)
    _, keys = index.search(unit_vectors(2, seed=3), 5)
    assert asked == [10] and len(keys[0]) == 5


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


@pytest.mark.parametrize('index_type', ['ivf-sq8', 'pca-ivf-sq8', 'two-stage'])
def test_ivf_incremental_equals_rebuild_with_the_same_training(index_type):
    vectors, keys = clustered(2000), keys_of(2000)
    index = GalleryIndex(DIM, index_type, nlist=16, nprobe=4, rank=12)
    index.train(vectors[:1500])
    fresh = index.empty_like()  # same projection, cells and quantiser ranges
    index.add(keys[:1200], vectors[:1200])
    index.add(keys[1200:], vectors[1200:])
    gone = keys[100:300]
    assert index.remove(gone) == 200
    kept = [i for i in range(2000) if not 100 <= i < 300]
    fresh.add([keys[i] for i in kept], vectors[kept])
    described = {
        'ivf-sq8': 'ivf-sq8 (nlist 16, nprobe 4)',
        'pca-ivf-sq8': 'pca-ivf-sq8 (nlist 16, nprobe 4, rank 12)',
        'two-stage': 'two-stage (nlist 16, nprobe 4, rank 12, re-scored x10 '
        'from float16)',
    }[index_type]
    assert index.describe() == f'{described}, 1800 vectors of 24 dims'
    queries = clustered(12, seed=3)
    a_scores, a_keys = index.search(queries, 10)
    b_scores, b_keys = fresh.search(queries, 10)
    assert a_keys == b_keys
    np.testing.assert_array_equal(a_scores, b_scores)
    assert not set(gone) & {k for row in a_keys for k in row}
    if index_type == 'pca-ivf-sq8':
        return  # half the dimensions rank coarsely (see the two-stage test)
    # Visiting every cell finds (nearly) the exact top 10.
    index.nprobe = 16
    _, found = index.search(queries, 10)
    truth = exact_keys(queries, vectors[kept], [keys[i] for i in kept], 10)
    assert recall(found, truth) >= 0.9


def test_two_stage_rescores_candidates_exactly_from_float16():
    vectors, queries = clustered(3000), clustered(20, seed=6)
    exact = queries @ vectors.T
    truth = np.argsort(-exact, 1)[:, :10]
    recalls = {}
    for index_type in ('pca-ivf-sq8', 'two-stage'):
        index = GalleryIndex(DIM, index_type, nlist=8, nprobe=8, rank=4)
        index.add(keys_of(3000), vectors)
        scores, ids = index.search_ids(queries, 10)
        recalls[index_type] = recall(ids, truth)
    # Four projected dimensions of 24 rank poorly; re-scoring 100 candidates
    # from the full vectors recovers the true top 10.
    assert recalls['two-stage'] >= 0.9
    assert recalls['two-stage'] > recalls['pca-ivf-sq8'] + 0.2
    # The scores are the float16 vectors' inner products.
    np.testing.assert_allclose(scores, np.take_along_axis(exact, ids, 1), atol=2e-3)
    assert (np.diff(scores, axis=1) <= 0).all()
    assert index.backend.disk_bytes() == 3000 * DIM * 2


def test_nprobe_is_measured_for_the_target_recall_and_overridable():
    vectors = clustered(6200, centres=60)
    vectors, queries = vectors[:6000], vectors[6000:]
    index = GalleryIndex(DIM, 'two-stage', nlist=32, rank=12, target_recall=0.95)
    index.train(vectors)
    calibration = index.calibration
    assert index.nprobe == calibration['nprobe'] and calibration['reachable']
    assert calibration['recall_at_10'] >= 0.95
    below = [int(n) for n, r in calibration['measured'].items() if r < 0.95]
    assert below and all(n < index.nprobe for n in below)
    # On other gallery-like queries the chosen nprobe reaches the target too.
    index.add(keys_of(6000), vectors)
    truth = exact_keys(queries, vectors, keys_of(6000), 10)
    assert recall(index.search(queries, 10)[1], truth) >= 0.93
    loose = GalleryIndex(DIM, 'two-stage', nlist=32, rank=12, target_recall=0.5)
    loose.train(vectors)
    assert loose.nprobe < index.nprobe
    index.nprobe = 3
    assert index.nprobe == 3 and GalleryIndex(DIM, 'flat').nprobe is None
    # Given explicitly, nothing is measured.
    given = GalleryIndex(DIM, 'ivf-sq8', nlist=32, nprobe=5)
    given.train(vectors)
    assert given.nprobe == 5 and given.calibration is None
    # 8-bit codes of near-equal scores cap recall below the target: the
    # smallest nprobe within half a point of probing every cell is chosen.
    capped = GalleryIndex(DIM, 'ivf-sq8', nlist=32, target_recall=0.999)
    capped.train(vectors)
    measured = capped.calibration['measured']
    assert not capped.calibration['reachable'] and capped.nprobe < 32
    assert measured[str(capped.nprobe)] >= measured['32'] - 0.005


def test_untrained_ivf_trains_on_its_first_add_and_reports_too_few():
    index = GalleryIndex(DIM, 'ivf-sq8', nlist=32)
    with pytest.raises(ValueError, match='10 training vectors for 32 IVF cells'):
        index.add(keys_of(10), unit_vectors(10))
    assert len(index) == 0 and not index.is_trained
    index.add(keys_of(400), unit_vectors(400))
    assert index.is_trained and index.nlist == 32 and 1 <= index.nprobe <= 32


def test_auto_becomes_two_stage_past_the_threshold(monkeypatch):
    monkeypatch.setattr(gallery_index, 'AUTO_FLAT_MAX', 500)
    vectors = clustered(800)
    index = GalleryIndex(DIM)
    index.add(keys_of(400), vectors[:400])
    index.remove(keys_of(2))  # ids with a hole survive the conversion
    assert index.index_type == 'flat'
    index.add(keys_of(400, start=400), vectors[400:])
    assert index.index_type == 'two-stage' and len(index) == 798
    assert index.nlist == default_nlist(800) and index.rank == default_rank(DIM)
    # Every key kept its vector through the conversion.
    index.nprobe = index.nlist
    _, keys = index.search(vectors[[3, 450]], 1)
    assert keys == [['img_00003.jpg'], ['img_00450.jpg']]
    assert GalleryIndex(DIM, expected_size=10**6).index_type == 'two-stage'
    assert default_nlist(10**6) == 1000 and default_nlist(100) == 2


@pytest.mark.parametrize('index_type', ['flat', 'ivf-sq8', 'two-stage'])
def test_filters_search_only_the_matching_items(index_type):
    vectors, queries = clustered(1200), clustered(6, seed=4)
    keys = keys_of(1200)
    metadata = [
        dict(camera=f'cam{i % 4}', time=float(i), source='day1' if i < 600 else 'day2')
        for i in range(1200)
    ]
    metadata[7] = dict(camera='cam3')  # no time: never in a time window
    index = GalleryIndex(DIM, index_type, nlist=8, nprobe=8, rank=12)
    index.add(keys, vectors, metadata=metadata)
    spec = dict(cameras=['cam1', 'cam3'], time=[100, 900], sources=['day2'])
    allowed = [
        i
        for i, m in enumerate(metadata)
        if m['camera'] in ('cam1', 'cam3')
        and m.get('time') is not None
        and 100 <= m['time'] <= 900
        and m.get('source') == 'day2'
    ]
    scores, found = index.search(queries, 10, filter=spec)
    truth = exact_keys(queries, vectors[allowed], [keys[i] for i in allowed], 10)
    assert {k for row in found for k in row} <= {keys[i] for i in allowed}
    assert recall(found, truth) >= (1.0 if index_type == 'flat' else 0.9)
    open_end = index.search(queries, 5, filter=dict(time=[1190, None]))[1]
    assert all(int(k[4:9]) >= 1190 for row in open_end for k in row)
    # min_score trims results; a filter nothing passes finds nothing.
    floor = float(scores[0, 2])
    trimmed, kept = index.search(queries[:1], 10, filter=dict(spec, min_score=floor))
    assert len(kept[0]) == 3 and np.isinf(trimmed[0, 3:]).all()
    assert index.search(queries, 3, filter=dict(cameras=['nowhere']))[1] == [[]] * 6
    assert index.item(7)['camera'] == 'cam3' and index.item(7)['time'] is None


def test_bad_input_is_named():
    index = GalleryIndex(DIM, 'flat')
    with pytest.raises(ValueError, match='unknown index type "hnsw"'):
        GalleryIndex(DIM, 'hnsw')
    with pytest.raises(ValueError, match='unknown backend "annoy"'):
        GalleryIndex(DIM, backend='annoy')
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
    with pytest.raises(ValueError, match='item "a": time must be a number'):
        index.add(['a'], unit_vectors(1), metadata=[dict(time='noon')])
    with pytest.raises(ValueError, match=r'item "a": unknown metadata field\(s\)'):
        index.add(['a'], unit_vectors(1), metadata=[dict(colour='red')])
    with pytest.raises(ValueError, match='the index is empty'):
        index.search(unit_vectors(1), 1)
    index.add(['a'], unit_vectors(1))
    with pytest.raises(ValueError, match='already in the index'):
        index.add(['a'], unit_vectors(1))
    assert len(index) == 1  # a refused add leaves nothing behind
    with pytest.raises(ValueError, match='topk must be >= 1'):
        index.search(unit_vectors(1), 0)
    with pytest.raises(
        ValueError, match=r'unknown search filter key\(s\) \[.camera.\]'
    ):
        index.search(unit_vectors(1), 1, filter=dict(camera='c1'))
    with pytest.raises(ValueError, match='"time" window starts after it ends'):
        index.search(unit_vectors(1), 1, filter=dict(time=[5, 1]))
    with pytest.raises(ValueError, match='"cameras" must be a list of strings'):
        index.search(unit_vectors(1), 1, filter=dict(cameras='c1'))


def test_index_imports_without_torch():
    script = (
        'import sys\n'
        'from tbps_mm.index import GalleryIndex, SearchFilter\n'
        'import tbps_mm.index.faiss_backend\n'
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'mmpretrain' not in sys.modules, 'mmpretrain was imported'\n"
        'print(GalleryIndex(4).describe())\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == 'flat, 0 vectors of 4 dims'


@pytest.mark.parametrize('index_type', ['flat', 'ivf-sq8', 'pca-ivf-sq8', 'two-stage'])
def test_save_load_round_trip(tmp_path, index_type):
    index = GalleryIndex(DIM, index_type, nlist=8, rank=12)
    index.add(keys_of(500), clustered(500), metadata=[dict(camera='c')] * 500)
    index.remove(keys_of(5))
    path = tmp_path / 'sub' / 'gallery.idx'
    index.save(str(path), metadata=dict(model='m1', pipeline='p1', folders=['a']))
    loaded = GalleryIndex.load(
        str(path), expected_metadata=dict(model='m1'), verify_vectors=True
    )
    assert loaded.keys == index.keys and loaded.index_type == index_type
    assert loaded.metadata['folders'] == ['a']
    assert loaded.nprobe == index.nprobe and loaded.calibration == index.calibration
    queries = clustered(4, seed=5)
    assert loaded.search(queries, 7)[1] == index.search(queries, 7)[1]
    assert (
        loaded.search(queries, 3, filter=dict(cameras=['c']))[1]
        == (index.search(queries, 3)[1])
    )
    # New ids continue after the old ones: no clash after removals.
    loaded.add(['new.jpg'], clustered(1, seed=9))
    assert len(loaded) == 496
    assert loaded.search(clustered(1, seed=9), 1)[1] == [['new.jpg']]
    header = GalleryIndex.read_header(str(path))
    assert header['index_type'] == index_type and header['metadata']['model'] == 'm1'
    assert header['count'] == 495 and 'keys' not in header
    names = sorted(p.name for p in path.parent.iterdir())
    sidecars = ['sqlite'] + (['f16'] if index_type == 'two-stage' else [])
    assert len(names) == 1 + len(sidecars) and names[0] == 'gallery.idx'
    assert sorted(n.rsplit('.', 1)[1] for n in names[1:]) == sorted(sidecars)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    # Saving again replaces the store; the append-only vector file is kept.
    loaded.save(str(path), metadata=dict(model='m1'))
    again = sorted(p.name for p in path.parent.iterdir())
    assert len(again) == len(names) and again != names
    if index_type == 'two-stage':
        assert [n for n in again if n.endswith('.f16')] == [
            n for n in names if n.endswith('.f16')
        ]
    reloaded = GalleryIndex.load(str(path), verify_vectors=True)
    assert reloaded.search(queries, 7)[1] == loaded.search(queries, 7)[1]


def test_other_model_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    index = GalleryIndex(DIM, 'ivf-sq8', nlist=4, nprobe=2)
    index.add(keys_of(300), unit_vectors(300))
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
    _, manifest_size, payload_size, _, _ = struct.unpack('<8sQQII', good[:32])
    damaged = bytearray(good)
    damaged[32 + payload_size // 2] ^= 0xFF  # one flipped byte in the payload
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptIndexError, match='block 0 does not match'):
        GalleryIndex.load(str(path))
    damaged = bytearray(good)
    damaged[-manifest_size // 2] ^= 0xFF  # in the manifest
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptIndexError, match='manifest does not match'):
        GalleryIndex.load(str(path))
    path.write_bytes(good)
    store = next(tmp_path.glob('gallery.idx.*.sqlite'))
    store_bytes = store.read_bytes()
    store.write_bytes(store_bytes[:-1] + bytes([store_bytes[-1] ^ 0xFF]))
    with pytest.raises(CorruptIndexError, match='store .* does not match'):
        GalleryIndex.load(str(path))
    store.unlink()
    with pytest.raises(CorruptIndexError, match='store .* is missing'):
        GalleryIndex.load(str(path))

    old = tmp_path / 'old.idx'  # the format of the previous release
    old.write_bytes(b'TBPSGIDX' + bytes(100))
    with pytest.raises(CorruptIndexError, match='format version 1'):
        GalleryIndex.load(str(old))
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


def test_damaged_vector_file_is_found_when_verified(tmp_path):
    index = GalleryIndex(DIM, 'two-stage', nlist=4, nprobe=4, rank=8)
    index.add(keys_of(300), clustered(300))
    path = tmp_path / 'gallery.idx'
    index.save(str(path))
    vectors = next(tmp_path.glob('gallery.idx.*.f16'))
    data = bytearray(vectors.read_bytes())
    data[100] ^= 0xFF
    vectors.write_bytes(bytes(data))
    GalleryIndex.load(str(path))  # sizes only: loads
    with pytest.raises(CorruptIndexError, match='block 0 of its vector file'):
        GalleryIndex.load(str(path), verify_vectors=True)
    vectors.write_bytes(bytes(data[:1000]))
    with pytest.raises(CorruptIndexError, match='truncated'):
        GalleryIndex.load(str(path))


def test_interrupted_save_keeps_the_old_index_and_stray_files_go(tmp_path, monkeypatch):
    index = GalleryIndex(DIM, 'flat')
    index.add(keys_of(50), unit_vectors(50))
    path = tmp_path / 'gallery.idx'
    index.save(str(path), metadata=dict(model='m1'))
    good = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    index.add(keys_of(10, start=50), unit_vectors(10, seed=4))

    def write_half_then_fail(faiss_index, writer):
        writer(b'x' * 1000)  # part of the payload reaches the file
        raise OSError('disk full')

    monkeypatch.setattr(faiss, 'write_index', write_half_then_fail)
    monkeypatch.setattr(faiss, 'PyCallbackIOWriter', lambda write: write)
    with pytest.raises(OSError, match='disk full'):
        index.save(str(path), metadata=dict(model='m1'))
    monkeypatch.undo()
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == good
    # What a killed save leaves (a temporary file, an unnamed store) is
    # deleted by the next load.
    (tmp_path / 'gallery.idx.abc123.tmp').write_bytes(b'partial')
    (tmp_path / 'gallery.idx.0123456789ab.sqlite').write_bytes(b'orphan')
    assert len(GalleryIndex.load(str(path))) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == [n for n, _ in good]
