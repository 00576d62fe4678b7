"""Tests of the SynthPedes generator, its tools and its tokenizer."""

import importlib.util
import json
import os
import os.path as osp
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tbps_mm.datasets.synthpedes import (
    COLOURS,
    SIZES,
    attribute_frequencies,
    build_synthpedes_tokenizer,
    generate_synthpedes,
    read_synthpedes_meta,
    sample_identity,
    split_id_counts,
    write_captions,
)
from tbps_mm.datasets.synthpedes import generator as generator_module
from tbps_mm.datasets.synthpedes.captions import caption_facts

REPO = Path(__file__).resolve().parents[1]
ANN_KEYS = {'split', 'captions', 'file_path', 'processed_tokens', 'id'}


def load_tool(relpath: str):
    """Import a tools/ script as a module (tools/ is not a package)."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree_bytes(root: str) -> dict:
    """Every file under ``root`` as {relative path: bytes}."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


@pytest.fixture(scope='module')
def datasets(tmp_path_factory):
    """tiny with seed 0 (1 and 2 workers) and with seed 1."""
    base = tmp_path_factory.mktemp('synthpedes')
    a = generate_synthpedes(str(base / 'a'), 'tiny', seed=0, workers=1, progress=False)
    b = generate_synthpedes(str(base / 'b'), 'tiny', seed=0, workers=2, progress=False)
    c = generate_synthpedes(str(base / 'c'), 'tiny', seed=1, workers=1, progress=False)
    return a, b, c


@pytest.fixture(scope='module')
def annotations(datasets):
    with open(osp.join(datasets[0], 'reid_raw.json'), encoding='utf-8') as f:
        return json.load(f)


@pytest.fixture(scope='module')
def attributes(datasets):
    with open(osp.join(datasets[0], 'attributes.json'), encoding='utf-8') as f:
        return json.load(f)


def test_same_seed_gives_identical_bytes_whatever_the_workers(datasets):
    a, b, _ = datasets
    files_a, files_b = tree_bytes(a), tree_bytes(b)
    assert sorted(files_a) == sorted(files_b)
    different = [p for p in files_a if files_a[p] != files_b[p]]
    assert different == []
    # nothing but the dataset is left beside it (no partial folders)
    assert sorted(os.listdir(osp.dirname(a))) == ['a', 'b', 'c']


def test_other_seed_gives_other_data(datasets):
    a, _, c = datasets
    files_a, files_c = tree_bytes(a), tree_bytes(c)
    assert files_a['reid_raw.json'] != files_c['reid_raw.json']
    images = [p for p in files_a if p.endswith('.jpg')]
    assert sum(files_a[p] != files_c.get(p) for p in images) == len(images)
    # the tokenizer depends on the grammar only
    for name in ('tokenizer.json', 'tokenizer_config.json'):
        path = osp.join('tokenizer', name)
        assert files_a[path] == files_c[path]


def test_layout_and_meta(datasets, annotations):
    root = datasets[0]
    assert sorted(os.listdir(root)) == [
        'attributes.json',
        'imgs',
        'masks',
        'reid_raw.json',
        'synthpedes_meta.json',
        'tokenizer',
    ]
    meta = read_synthpedes_meta(root)
    preset = SIZES['tiny']
    assert meta['size'] == 'tiny' and meta['seed'] == 0
    assert meta['num_ids'] == preset['num_ids']
    assert meta['images_per_id'] == preset['images_per_id']
    assert meta['image_size'] == [128, 48]
    assert meta['num_images'] == len(annotations) == 24 * 4
    for entry in annotations:
        assert set(entry) == ANN_KEYS
        assert not osp.isabs(entry['file_path'])
        assert entry['file_path'].startswith(entry['split'] + '/')
        assert osp.isfile(osp.join(root, 'imgs', entry['file_path']))
    n_images = sum(1 for _, _, f in os.walk(osp.join(root, 'imgs')) for _ in f)
    assert n_images == len(annotations)


def test_splits_are_disjoint_blocks_of_ids_from_one(datasets, annotations):
    meta = read_synthpedes_meta(datasets[0])
    ids = {}
    for entry in annotations:
        ids.setdefault(entry['split'], set()).add(entry['id'])
    assert set(ids) == {'train', 'val', 'test'}
    assert not ids['train'] & ids['val']
    assert not ids['train'] & ids['test']
    assert not ids['val'] & ids['test']
    assert set().union(*ids.values()) == set(range(1, 25))
    for split, split_ids in ids.items():
        assert meta['splits'][split]['ids'] == len(split_ids)
        assert meta['splits'][split]['images'] == 4 * len(split_ids)
    assert split_id_counts(24, 'tiny') == SIZES['tiny']['splits']
    assert sum(split_id_counts(7, 'small').values()) == 7
    assert min(split_id_counts(7, 'small').values()) >= 1


def test_captions_two_distinct_per_image_and_several_images_per_id(
    annotations, attributes
):
    per_id = Counter(entry['id'] for entry in annotations)
    assert set(per_id.values()) == {4}
    for entry in annotations:
        caps = entry['captions']
        assert len(caps) == 2 and caps[0] != caps[1]
        assert all(c.strip() for c in caps)
        assert len(entry['processed_tokens']) == 2
        for cap, tokens in zip(caps, entry['processed_tokens']):
            assert tokens == [t for t in tokens if t == t.lower()]
            assert ' '.join(tokens) in cap.lower().replace(',', '').replace('.', '')
        mentions = attributes['images'][entry['file_path']]['mentions']
        assert mentions[0] != mentions[1]


def test_masks_align_with_images(datasets, annotations, attributes):
    root = datasets[0]
    names = list(COLOURS)
    protos = np.asarray([COLOURS[n] for n in names], dtype=np.float64)
    people = {p['id']: p for p in attributes['identities']}
    hits = []
    for entry in annotations:
        image = Image.open(osp.join(root, 'imgs', entry['file_path']))
        stem = osp.splitext(entry['file_path'])[0]
        mask = np.asarray(Image.open(osp.join(root, 'masks', stem + '.png')))
        assert image.size == (48, 128) and mask.shape == (128, 48)
        assert mask.dtype == np.uint8 and mask.max() <= 5
        for part in (1, 2, 3):  # head, upper, lower are never fully hidden
            assert (mask == part).sum() > 20, (entry['file_path'], part)
        # the upper-body pixels carry the garment's colour: the mask is on
        # the person, and the colour survives the nuisances
        pixels = np.asarray(image.convert('RGB'), np.float64)[mask == 2]
        median = np.median(pixels, axis=0)
        nearest = names[int(np.argmin(((protos - median) ** 2).sum(1)))]
        hits.append(nearest == people[entry['id']]['upper_colour'])
    assert np.mean(hits) > 0.7


def test_attribute_frequencies_are_long_tailed(attributes):
    freqs = attributes['frequencies']
    assert freqs == attribute_frequencies()
    for name in (
        'upper_colour',
        'lower_colour',
        'shoe_colour',
        'carried_colour',
        'hat_colour',
        'hair_colour',
    ):
        values = np.asarray(sorted(freqs[name].values()))
        assert values.max() >= 4 * np.median(values), name
    for name, values in freqs.items():
        assert abs(sum(values.values()) - 1) < 1e-4, name
    for name in ('hat', 'upper_type', 'pattern', 'shoe_type'):
        assert max(freqs[name].values()) >= 4 * min(freqs[name].values())
    # commonality differs across parts: black trousers far commoner than
    # any shoe colour but black
    assert freqs['lower_colour']['black'] > 0.3
    assert freqs['lower_colour']['orange'] < 0.02
    counts = attributes['counts']
    assert sum(counts['upper_colour'].values()) == 24


def test_sampler_follows_the_published_frequencies():
    freqs = attribute_frequencies()
    people = [sample_identity(np.random.default_rng([7, i])) for i in range(3000)]
    for name in ('gender', 'lower_type', 'sleeves', 'lower_colour', 'hat'):
        counts = Counter(p[name] for p in people)
        for value, prob in freqs[name].items():
            assert abs(counts[value] / len(people) - prob) < 0.035, (name, value)


def test_captions_name_a_partial_and_differing_subset():
    fractions = []
    for i in range(300):
        ident = sample_identity(np.random.default_rng([3, i]))
        caps, mentions = write_captions(
            ident, {'view': 'back', 'blur': 0.7}, np.random.default_rng([4, i])
        )
        facts = caption_facts(ident)
        assert caps[0] != caps[1] and mentions[0] != mentions[1]
        for m in mentions:
            assert set(m) < set(facts)  # a strict subset: never everything
            fractions.append(len(m) / len(facts))
    assert 0.6 <= np.mean(fractions) <= 0.85
    assert min(fractions) >= 0.5


def test_tokenizer_loads_with_transformers_and_knows_every_word(
    datasets, annotations, tmp_path
):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        osp.join(datasets[0], 'tokenizer'), local_files_only=True
    )
    assert tok.pad_token_id == 0
    assert tok.convert_tokens_to_ids(['[UNK]', '[CLS]', '[SEP]', '[MASK]']) == [
        1,
        2,
        3,
        4,
    ]
    captions = [c for e in annotations for c in e['captions']]
    for i in range(400):  # many more grammar paths than tiny covers
        ident = sample_identity(np.random.default_rng([11, i]))
        view = ('front', 'back', 'left', 'right')[i % 4]
        captions += write_captions(
            ident, {'view': view, 'blur': 0.9}, np.random.default_rng([12, i])
        )[0]
    encoded = tok(captions)['input_ids']
    assert all(ids[0] == 2 and ids[-1] == 3 for ids in encoded)
    assert not any(1 in ids for ids in encoded)
    masked = tok('a man in a [MASK] coat')['input_ids']
    assert masked.count(4) == 1
    # building it without data gives the same files
    built = build_synthpedes_tokenizer(str(tmp_path / 'tok'))
    for name in ('tokenizer.json', 'tokenizer_config.json'):
        assert (
            Path(built, name).read_bytes()
            == Path(datasets[0], 'tokenizer', name).read_bytes()
        )


def test_existing_folder_same_meta_is_returned_unchanged(datasets):
    root = datasets[0]
    meta_path = osp.join(root, 'synthpedes_meta.json')
    before = os.stat(meta_path).st_mtime_ns
    assert generate_synthpedes(root, 'tiny', seed=0, progress=False) == root
    assert os.stat(meta_path).st_mtime_ns == before
    with pytest.raises(ValueError, match='different SynthPedes.*seed'):
        generate_synthpedes(root, 'tiny', seed=5, progress=False)


def test_read_meta_absent_and_malformed(tmp_path):
    assert read_synthpedes_meta(str(tmp_path / 'nothing')) is None
    (tmp_path / 'synthpedes_meta.json').write_text('[1, 2')
    with pytest.raises(ValueError, match='synthpedes_meta.json'):
        read_synthpedes_meta(str(tmp_path))


def test_crash_leaves_no_dataset(tmp_path, monkeypatch):

    def broken(out_dir):
        raise RuntimeError('disk full')

    monkeypatch.setattr(generator_module, 'build_synthpedes_tokenizer', broken)
    with pytest.raises(RuntimeError, match='disk full'):
        generate_synthpedes(
            str(tmp_path / 'out'), 'tiny', num_ids=3, images_per_id=1, progress=False
        )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(size='huge'), 'unknown SynthPedes size'),
        (dict(seed='3'), 'seed must be an integer'),
        (dict(seed=-1), 'seed must be >= 0'),
        (dict(num_ids=2), 'num_ids must be >= 3'),
        (dict(image_size=(20, 8)), 'image_size must be at least'),
    ],
)
def test_bad_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthpedes(str(tmp_path / 'out'), **kwargs)
    assert os.listdir(tmp_path) == []


def test_tool_generates_and_reports(tmp_path, capsys):
    tool = load_tool('tools/dataset_converters/make_synthpedes.py')
    out = tmp_path / 'sp'
    code = tool.main(
        [
            str(out),
            '--size',
            'tiny',
            '--seed',
            '2',
            '--num-ids',
            '5',
            '--images-per-id',
            '2',
            '--no-progress',
        ]
    )
    assert code == 0
    meta = read_synthpedes_meta(str(out))
    assert (meta['seed'], meta['num_ids'], meta['images_per_id']) == (2, 5, 2)
    assert 'train' in capsys.readouterr().out


@pytest.mark.parametrize(
    'argv, message',
    [
        (['--size', 'huge'], "invalid choice: 'huge'"),
        (['--seed', 'abc'], "invalid int value: 'abc'"),
        (['--seed', '1.5'], "invalid int value: '1.5'"),
    ],
)
def test_tool_rejects_bad_flags(tmp_path, capsys, argv, message):
    tool = load_tool('tools/dataset_converters/make_synthpedes.py')
    with pytest.raises(SystemExit) as exc:
        tool.main([str(tmp_path / 'out')] + argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_tool_refuses_a_folder_with_other_files(tmp_path, capsys):
    tool = load_tool('tools/dataset_converters/make_synthpedes.py')
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'thesis.txt').write_text('precious')
    code = tool.main([str(out), '--size', 'tiny', '--no-progress'])
    assert code == 1
    err = capsys.readouterr().err
    assert str(out) in err and 'not empty' in err
    assert os.listdir(out) == ['thesis.txt']
    assert (out / 'thesis.txt').read_text() == 'precious'
    assert os.listdir(tmp_path) == ['mine']


def test_grid_tool_draws_a_png(datasets, tmp_path):
    tool = load_tool('tools/analysis_tools/draw_synthpedes_grid.py')
    out = tmp_path / 'grid.png'
    assert tool.main([datasets[0], '--out', str(out), '--num-ids', '2']) == 0
    with Image.open(out) as grid:
        assert grid.width > 400 and grid.height > 200
    assert tool.main([str(tmp_path), '--out', str(out)]) == 1
