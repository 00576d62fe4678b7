"""Folder indexing that loses nothing and stops for nothing.

Dangling links and folders that cannot be listed are skipped and counted,
unreadable images are tried again on the next run, a killed build resumes
from its encoding cache without encoding finished chunks again, and
temporary files a kill left are removed. Tests run as root, where file
permissions do not stop reads, so failures are made with files that do not
decode and with ``os.scandir`` raising for one folder.
"""

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_fixtures import write_search_model

from tbps_mm.apis import (
    EncodingCache,
    GalleryIndex,
    TBPSInferencer,
    list_image_folders,
)

QUERY = 'a woman in a red coat and black pants'


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return write_search_model(tmp_path_factory.mktemp('folders'))


def png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (90, 30, 3), dtype=np.uint8)).save(
        buffer, format='PNG'
    )
    return buffer.getvalue()


def make_images(folder: Path, count: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f'img_{i:02d}.png'
        path.write_bytes(png_bytes(i))
        paths.append(str(path))
    return paths


def inferencer_of(tiny, **kwargs) -> TBPSInferencer:
    return TBPSInferencer(
        tiny['config'], tiny['checkpoint'], show_progress=False, **kwargs
    )


def count_encoded(inferencer: TBPSInferencer, fail_after: int = None) -> list:
    """Record every path the encoder is given; raise on call ``fail_after + 1``."""
    encoded, encode = [], inferencer.encoder.encode_images

    def counting(paths, skipped=None):
        if fail_after is not None and len(encoded) >= fail_after:
            raise KeyboardInterrupt('killed')
        encoded.append(list(paths))
        return encode(paths, skipped)

    inferencer.encoder.encode_images = counting
    return encoded


def test_dangling_link_and_unreadable_folder_are_skipped_and_counted(
    tiny, tmp_path, monkeypatch, capsys
):
    images = tmp_path / 'images'
    make_images(images, 3)
    (images / 'gone.png').symlink_to(tmp_path / 'nowhere.png')
    locked = images / 'locked'
    make_images(locked, 2)
    scandir = os.scandir

    def refusing(path='.'):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(locked):
            raise PermissionError(13, 'Permission denied', str(locked))
        return scandir(path)

    monkeypatch.setattr(os, 'scandir', refusing)
    listing = list_image_folders([str(images)])
    assert sorted(listing.images) == sorted(
        str(images / f'img_{i:02d}.png') for i in range(3)
    )
    assert listing.counts() == {
        'images': 3,
        'skipped-unreadable': 0,
        'skipped-dangling-link': 1,
        'skipped-unreadable-folder': 1,
    }
    summary = inferencer_of(tiny).index(str(images))
    assert summary['num_images'] == 3
    assert summary['counts'] == {
        'indexed': 3,
        'skipped-unreadable': 0,
        'skipped-dangling-link': 1,
        'skipped-unreadable-folder': 1,
    }
    reasons = dict(summary['skipped'])
    assert 'dangling-link' in reasons[str(images / 'gone.png')]
    assert 'PermissionError' in reasons[str(locked)]

    # The command line prints one summary line with the counts.
    import importlib.util

    tool = Path(__file__).resolve().parents[1] / 'tools' / 'search.py'
    spec = importlib.util.spec_from_file_location('search_tool', tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(
        [tiny['config'], tiny['checkpoint'], '--images', str(images)]
        + ['--query', QUERY]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        'indexed 3, skipped-unreadable 0, skipped-dangling-link 1, '
        'skipped-unreadable-folder 1'
    ) in out

    # Once the folder can be listed, its images join the index.
    monkeypatch.setattr(os, 'scandir', scandir)
    summary = inferencer_of(tiny).index(str(images))
    assert summary['added'] == 2 and summary['num_images'] == 5
    assert summary['counts']['skipped-unreadable-folder'] == 0


def test_unreadable_image_is_retried_after_it_is_fixed(tiny, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 3)
    good = png_bytes(7)
    bad = images / 'fixed_later.png'
    bad.write_bytes(b'\0' * len(good))  # unreadable, same size as the fix
    stamp = bad.stat().st_mtime_ns
    inferencer = inferencer_of(tiny)
    summary = inferencer.index(str(images))
    assert summary['num_images'] == 3
    assert summary['counts']['skipped-unreadable'] == 1
    assert [p for p, _ in summary['skipped']] == [str(bad)]
    # Fixed without changing its size or time (as a permission fix leaves
    # them): the next run tries it again and indexes it.
    bad.write_bytes(good)
    os.utime(bad, ns=(stamp, stamp))
    encoded = count_encoded(inferencer)
    summary = inferencer.index(str(images))
    assert encoded == [[str(bad)]]
    assert summary['added'] == 1 and summary['num_images'] == 4
    assert summary['skipped'] == []
    assert str(bad) in inferencer.paths


def test_killed_build_resumes_without_encoding_finished_chunks(tiny, tmp_path):
    images = tmp_path / 'images'
    paths = make_images(images, 7)
    index_file = str(tmp_path / 'gallery.idx')
    cache_dir = Path(index_file + '.encoding')

    killed = inferencer_of(tiny, batch_size=2)
    count_encoded(killed, fail_after=2)  # two chunks of 2 done, then killed
    with pytest.raises(KeyboardInterrupt):
        killed.index(str(images), index_file=index_file, chunk_size=2)
    assert not os.path.exists(index_file)
    assert sorted(p.name for p in cache_dir.iterdir()) == [
        'chunk_000000.npz',
        'chunk_000001.npz',
        'manifest.json',
    ]

    resumed = inferencer_of(tiny, batch_size=2)
    encoded = count_encoded(resumed)
    summary = resumed.index(str(images), index_file=index_file, chunk_size=2)
    assert [p for batch in encoded for p in batch] == paths[4:]
    assert (summary['resumed'], summary['encoded'], summary['num_images']) == (
        4,
        3,
        7,
    )
    assert not cache_dir.exists()  # the index holds the vectors now

    fresh = inferencer_of(tiny, batch_size=2)
    fresh.index(str(images), index_file=str(tmp_path / 'fresh.idx'), chunk_size=2)
    got = GalleryIndex.load(index_file)
    expected = GalleryIndex.load(str(tmp_path / 'fresh.idx'))
    assert got.keys == expected.keys
    query = resumed.encoder.encode_texts([QUERY])['fused_embed'].numpy()
    a, b = got.search(query, 7), expected.search(query, 7)
    assert list(a[1][0]) == list(b[1][0])
    np.testing.assert_array_equal(a[0], b[0])


def test_orphans_and_stale_caches_are_cleaned_on_open(tiny, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 3)
    index_file = tmp_path / 'gallery.idx'
    inferencer_of(tiny).index(str(images), index_file=str(index_file))
    # A kill during the index write leaves its temporary file; one during a
    # chunk write leaves a partial chunk and a temporary file.
    orphan = tmp_path / 'gallery.idx.k3j9x1.tmp'
    orphan.write_bytes(b'partial index')
    unrelated = tmp_path / 'notes.tmp'
    unrelated.write_text('not ours')
    cache = EncodingCache(str(index_file) + '.encoding', {'model': 'old'})
    cache.add(['x.png'], np.zeros((1, 4), np.float32), [[1, 2]])
    (tmp_path / 'gallery.idx.encoding' / 'chunk_000001.npz.tmp').write_bytes(b'x')
    (tmp_path / 'gallery.idx.encoding' / 'chunk_000001.npz').write_bytes(b'x')
    summary = inferencer_of(tiny).index(str(images), index_file=str(index_file))
    assert summary['loaded'] is True and summary['added'] == 0
    assert not orphan.exists() and unrelated.exists()
    assert not (tmp_path / 'gallery.idx.encoding').exists()

    # A cache made with another model is emptied, never reused.
    folder = str(tmp_path / 'other.encoding')
    EncodingCache(folder, {'model': 'old'}).add(
        ['x.png'], np.ones((1, 4), np.float32), [[1, 2]]
    )
    assert len(EncodingCache(folder, {'model': 'old'})) == 1
    stale = EncodingCache(folder, {'model': 'new'})
    assert len(stale) == 0 and os.listdir(folder) == []
