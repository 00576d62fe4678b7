"""BaseTBPSDataset and its three published formats, SynthPedes, and the full
pipeline through an MMEngine data loader."""

import json
import logging
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_tbps import DEFAULT_SPEC, FORMATS, make_tbps_fixture, make_tiny_tokenizer
from mmengine.dataset import base_dataset as base_dataset_module
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from PIL import Image

import tbps_mm  # noqa: F401
from tbps_mm.datasets import CUHKPEDES, ICFGPEDES, RSTPReid, SynthPedes
from tbps_mm.datasets import synthpedes as synthpedes_generator
from tbps_mm.datasets import synthpedes_dataset as synthpedes_module
from tbps_mm.datasets.transforms import ImageTransformError
from tbps_mm.registry import DATASETS, MODELS

CLASSES = {'cuhk': CUHKPEDES, 'icfg': ICFGPEDES, 'rstp': RSTPReid}
LOAD = [dict(type='ImagePipeline', transforms=[dict(type='LoadImageFromFile')])]


def expected_counts(fmt):
    """(ids, images, captions) per split, from the fixture's spec."""
    cpi = FORMATS[fmt]['captions_per_image']
    return {
        split: (
            len(DEFAULT_SPEC[split]),
            sum(n for _, n in DEFAULT_SPEC[split]),
            cpi * sum(n for _, n in DEFAULT_SPEC[split]),
        )
        for split in FORMATS[fmt]['splits']
    }


@pytest.fixture(autouse=True)
def no_full_gc(monkeypatch):
    # MMEngine's BaseDataset runs gc.collect() when it serialises the data
    # list, which is slow with torch imported. It only frees memory, so the
    # tests skip it to stay fast.
    monkeypatch.setattr(base_dataset_module.gc, 'collect', lambda *args: 0)


@pytest.fixture(params=sorted(CLASSES))
def fmt_fixture(request, tmp_path):
    return request.param, make_tbps_fixture(tmp_path, request.param)


def test_counts_and_items_per_split(fmt_fixture):
    fmt, fx = fmt_fixture
    for split, (n_ids, n_images, n_caps) in expected_counts(fmt).items():
        ds = DATASETS.build(
            dict(type=fx['type'], data_root=fx['data_root'], split=split)
        )
        assert ds.metainfo['num_ids'] == n_ids
        assert ds.metainfo['num_images'] == n_images
        assert ds.metainfo['num_captions'] == n_caps
        assert len(ds.get_gallery()) == n_images
        assert len(ds.get_queries()) == n_caps
        items = [ds.get_data_info(i) for i in range(len(ds))]
        assert [it['sample_idx'] for it in items] == list(range(len(ds)))
        if split == 'train':
            assert len(ds) == n_caps
            assert {it['modality'] for it in items} == {'pair'}
            assert all(osp.isfile(it['img_path']) and it['text'] for it in items)
            assert not ds.test_mode
        else:
            # Gallery first, then the queries.
            assert len(ds) == n_images + n_caps
            modalities = [it['modality'] for it in items]
            assert modalities == ['image'] * n_images + ['text'] * n_caps
            assert all('text' not in it for it in items[:n_images])
            assert all('img_path' not in it for it in items[n_images:])
            assert ds.test_mode


def test_label_reindexing_is_sorted_by_original_id(fmt_fixture):
    _, fx = fmt_fixture
    ds = DATASETS.build(dict(type=fx['type'], data_root=fx['data_root']))
    # Train ids in file order 5, 1, 3 -> labels by sorted id: 1->0, 3->1, 5->2.
    labels = {it['person_id']: it['gt_label'] for it in ds.get_queries()}
    assert labels == {1: 0, 3: 1, 5: 2}
    assert sorted({g['gt_label'] for g in ds.get_gallery()}) == [0, 1, 2]
    assert ds.get_cat_ids(0) == [2]  # the first pair belongs to person 5
    # image_id indexes the images of the split in file order.
    assert [g['image_id'] for g in ds.get_gallery()] == list(range(6))


def test_queries_and_gallery_labels_agree(fmt_fixture):
    fmt, fx = fmt_fixture
    ds = DATASETS.build(dict(type=fx['type'], data_root=fx['data_root'], split='test'))
    gallery, queries = ds.get_gallery(), ds.get_queries()
    by_image = {g['image_id']: g for g in gallery}
    for q in queries:
        img = by_image[q['image_id']]
        assert q['gt_label'] == img['gt_label']
        assert q['person_id'] == img['person_id']
    # Test ids 12, 10, 11 -> labels 2, 0, 1, the same on both sides.
    assert {g['person_id']: g['gt_label'] for g in gallery} == {12: 2, 10: 0, 11: 1}
    # Query captions are the annotation's, in order.
    test_records = [r for r in fx['records'] if r['split'] == 'test']
    assert [q['text'] for q in queries] == [
        c for r in test_records for c in r['captions']
    ]
    img_key = FORMATS[fmt]['img_key']
    assert [g['img_path'] for g in gallery] == [
        osp.join(fx['data_root'], 'imgs', r[img_key]) for r in test_records
    ]


def test_icfg_has_no_val_split(tmp_path):
    fx = make_tbps_fixture(tmp_path, 'icfg')
    with pytest.raises(ValueError, match=r"ICFG-PEDES has no val split.*split='test'"):
        ICFGPEDES(data_root=fx['data_root'], split='val')


@pytest.mark.parametrize('cls', [CUHKPEDES, RSTPReid])
def test_unknown_split(tmp_path, cls):
    with pytest.raises(
        ValueError, match=r"unknown split 'dev'.*'train', 'val', 'test'"
    ):
        cls(data_root=str(tmp_path), split='dev')


def test_summary_table_is_logged(tmp_path):
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    log_file = tmp_path / 'build.log'
    MMLogger.get_instance('test_summary_table', log_file=str(log_file))
    CUHKPEDES(data_root=fx['data_root'], split='val')
    text = log_file.read_text()
    assert 'CUHK-PEDES' in text and "split 'val' loaded: 12 items" in text
    rows = {
        line.split()[0]: line.split()[1:4]
        for line in text.splitlines()
        if line.split() and line.split()[0] in ('train', 'val', 'test')
    }
    assert rows == {
        'train': ['3', '6', '12'],
        'val': ['2', '4', '8'],
        'test': ['3', '5', '10'],
    }


def test_lazy_init_defers_reading(tmp_path):
    ds = CUHKPEDES(data_root=str(tmp_path / 'absent'), lazy_init=True)
    assert 'not loaded yet' in repr(ds)
    with pytest.raises(FileNotFoundError, match='reid_raw.json'):
        ds.full_init()


def test_custom_ann_file_and_img_prefix(tmp_path):
    fx = make_tbps_fixture(tmp_path, 'rstp')
    root = Path(fx['data_root'])
    (root / 'imgs').rename(root / 'images')
    (root / 'data_captions.json').rename(root / 'captions.json')
    ds = RSTPReid(
        data_root=str(root), ann_file='captions.json', img_prefix='images', split='test'
    )
    assert all(osp.isfile(g['img_path']) for g in ds.get_gallery())
    assert '/images/' in ds.get_gallery()[0]['img_path']


# ----------------------------------------------------------------- bad input
def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'annotation file .*reid_raw\.json'):
        CUHKPEDES(data_root=str(tmp_path))


def test_annotation_not_a_list(tmp_path):
    (tmp_path / 'reid_raw.json').write_text(json.dumps({'train': []}))
    with pytest.raises(TypeError, match=r'reid_raw\.json.*JSON list.*dict'):
        CUHKPEDES(data_root=str(tmp_path))


def test_annotation_not_json(tmp_path):
    (tmp_path / 'data_captions.json').write_text('[{"id": 1,')
    with pytest.raises(ValueError, match=r'data_captions\.json: not a valid JSON'):
        RSTPReid(data_root=str(tmp_path))


@pytest.mark.parametrize(
    'fmt,field',
    [
        ('cuhk', 'captions'),
        ('icfg', 'file_path'),
        ('rstp', 'img_path'),
        ('rstp', 'id'),
        ('cuhk', 'split'),
    ],
)
def test_entry_missing_a_field(tmp_path, fmt, field):
    fx = make_tbps_fixture(tmp_path, fmt)
    records = fx['records']
    del records[2][field]
    Path(fx['ann_file']).write_text(json.dumps(records))
    with pytest.raises(ValueError) as err:
        CLASSES[fmt](data_root=fx['data_root'], split='test')
    message = str(err.value)
    assert fx['ann_file'] in message
    assert 'entry 2' in message and f"missing field '{field}'" in message


@pytest.mark.parametrize(
    'field,value,expected',
    [
        ('id', '5', "'id' must be an integer"),
        ('split', 'dev', "'split' is 'dev'"),
        ('captions', 'a man', "'captions' must be a non-empty list"),
        ('captions', [], "'captions' must be a non-empty list"),
    ],
)
def test_entry_with_a_bad_value(tmp_path, field, value, expected):
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    records = fx['records']
    records[4][field] = value
    Path(fx['ann_file']).write_text(json.dumps(records))
    with pytest.raises(ValueError, match=rf'entry 4: field {expected}'):
        CUHKPEDES(data_root=fx['data_root'])


def test_empty_caption_is_an_error(tmp_path):
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    records = fx['records']
    records[1]['captions'][1] = '   '
    Path(fx['ann_file']).write_text(json.dumps(records))
    with pytest.raises(
        ValueError, match=r'entry 1 \(CUHK01/0005001\.jpg\): caption 1 is empty'
    ):
        CUHKPEDES(data_root=fx['data_root'], split='train')
    # Other splits are not affected by a bad train caption.
    assert len(CUHKPEDES(data_root=fx['data_root'], split='test')) == 15


def test_missing_and_unreadable_images_fail_when_loaded(tmp_path):
    fx = make_tbps_fixture(tmp_path, 'rstp')
    ds = RSTPReid(data_root=fx['data_root'], split='test', pipeline=LOAD)
    gallery = ds.get_gallery()
    Path(gallery[1]['img_path']).unlink()
    Path(gallery[3]['img_path']).write_bytes(b'not an image at all')
    assert ds[0]['img'].shape == (24, 12, 3)  # intact images still load
    with pytest.raises(FileNotFoundError, match=gallery[1]['img_path']):
        ds[1]
    with pytest.raises(ImageTransformError, match=gallery[3]['img_path']):
        ds[3]
    # Nothing was silently dropped.
    assert len(ds) == 5 + 10


def test_skip_bad_samples_drops_and_logs(tmp_path):
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    records = fx['records']
    train = [i for i, r in enumerate(records) if r['split'] == 'train']
    records[train[0]]['captions'][0] = ''  # one empty caption (person 5)
    records[train[2]]['captions'] = ['', ' ']  # an entry left without captions
    Path(fx['data_root'], 'imgs', records[train[5]]['file_path']).unlink()
    Path(fx['ann_file']).write_text(json.dumps(records))
    log_file = tmp_path / 'skip.log'
    MMLogger.get_instance('test_skip_bad_samples', log_file=str(log_file))
    ds = CUHKPEDES(data_root=fx['data_root'], split='train', skip_bad_samples=True)
    # 6 images x 2 captions; minus 1 empty caption, minus entry 2 (2 empty
    # captions), minus entry 5 (missing image, 2 captions) = 7 pairs.
    assert len(ds) == 12 - 1 - 2 - 2
    assert ds.metainfo['num_images'] == 4
    assert [g['image_id'] for g in ds.get_gallery()] == [0, 1, 2, 3]
    log = log_file.read_text()
    assert 'dropped 1 entries with a missing or empty image, 3 empty captions' in log
    assert '1 entries left without captions' in log
    # Without the flag, the same annotation is an error.
    with pytest.raises(ValueError, match='caption 0 is empty'):
        CUHKPEDES(data_root=fx['data_root'], split='train')


# --------------------------------------------------------------- SynthPedes
def _fake_generator(monkeypatch, calls):
    """Stand in for the SynthPedes generator: a CUHK fixture plus meta.json."""

    def generate(out_dir, size='small', seed=0, **kwargs):
        calls.append(dict(out_dir=out_dir, size=size, seed=seed, **kwargs))
        fx = make_tbps_fixture(Path(out_dir).parent, 'cuhk', name=Path(out_dir).name)
        meta = dict(
            size=size, seed=seed, num_ids=8, images_per_id=2, image_size=[24, 12]
        )
        Path(fx['data_root'], 'meta.json').write_text(json.dumps(meta))
        return out_dir

    def read_meta(out_dir):
        path = Path(out_dir, 'meta.json')
        return json.loads(path.read_text()) if path.is_file() else None

    monkeypatch.setattr(
        synthpedes_generator, 'generate_synthpedes', generate, raising=False
    )
    monkeypatch.setattr(
        synthpedes_generator, 'read_synthpedes_meta', read_meta, raising=False
    )


def test_synthpedes_generates_on_first_use_only(tmp_path, monkeypatch):
    calls = []
    _fake_generator(monkeypatch, calls)
    root = str(tmp_path / 'synth')
    lazy = SynthPedes(data_root=root, size='tiny', seed=3, lazy_init=True)
    assert calls == []  # lazy_init: nothing generated yet
    assert len(lazy) == 12 and len(calls) == 1
    assert calls[0]['size'] == 'tiny' and calls[0]['seed'] == 3
    test = SynthPedes(data_root=root, size='tiny', seed=3, split='test')
    assert len(calls) == 1  # complete and matching: reused
    assert len(test.get_gallery()) == 5
    assert test.metainfo['synthpedes']['seed'] == 3


def test_synthpedes_refuses_other_settings(tmp_path, monkeypatch):
    calls = []
    _fake_generator(monkeypatch, calls)
    root = str(tmp_path / 'synth')
    SynthPedes(data_root=root, size='tiny', seed=0)
    with pytest.raises(ValueError, match=r'other settings \(seed: asked 1, found 0\)'):
        SynthPedes(data_root=root, size='tiny', seed=1)
    with pytest.raises(ValueError, match=r"size: asked 'small', found 'tiny'"):
        SynthPedes(data_root=root, size='small', seed=0)
    with pytest.raises(TypeError, match='seed must be an integer'):
        SynthPedes(data_root=root, size='tiny', seed='0')
    assert len(calls) == 1


def test_synthpedes_other_ranks_wait_for_rank_0(tmp_path, monkeypatch):
    calls, events = [], []
    _fake_generator(monkeypatch, calls)
    root = str(tmp_path / 'synth')
    generate = synthpedes_generator.generate_synthpedes

    def barrier():
        # Stands in for rank 0, which generates while rank 1 waits here.
        events.append('barrier')
        generate(root, size='tiny', seed=0)

    monkeypatch.setattr(synthpedes_module, 'get_dist_info', lambda: (1, 2))
    monkeypatch.setattr(synthpedes_module, 'barrier', barrier)
    ds = SynthPedes(data_root=root, size='tiny', seed=0, split='val')
    assert events == ['barrier'] and len(calls) == 1  # rank 1 generated nothing
    assert len(ds.get_gallery()) == 4


def test_synthpedes_tiny_for_real(tmp_path):
    root = str(tmp_path / 'synthpedes_tiny')
    pipeline = [
        dict(type='NormalizeCaption'),
        dict(type='TokenizeCaption', tokenizer=root + '/tokenizer', max_length=48),
    ]
    train = SynthPedes(data_root=root, size='tiny', seed=0, pipeline=pipeline)
    test = SynthPedes(data_root=root, size='tiny', seed=0, split='test')
    meta = synthpedes_generator.read_synthpedes_meta(root)
    assert meta['size'] == 'tiny' and meta['seed'] == 0
    for ds, split in ((train, 'train'), (test, 'test')):
        assert ds.metainfo['num_ids'] == meta['splits'][split]['ids']
        assert len(ds.get_gallery()) == meta['splits'][split]['images']
        assert len(ds.get_queries()) == meta['splits'][split]['captions']
    train_ids = {q['person_id'] for q in train.get_queries()}
    assert train_ids.isdisjoint({g['person_id'] for g in test.get_gallery()})
    # The tokenizer written with the data reads its captions without [UNK].
    item = train[0]
    tokenizer = train.pipeline.transforms[-1].tokenizer
    ids = item['text_ids'][item['text_mask'] == 1].tolist()
    assert len(ids) > 5 and tokenizer.unk_token_id not in ids


def test_synthpedes_refuses_a_foreign_folder(tmp_path):
    root = tmp_path / 'not_synthpedes'
    root.mkdir()
    (root / 'notes.txt').write_text('my files')
    with pytest.raises(ValueError, match='refusing'):
        SynthPedes(data_root=str(root), size='tiny', seed=0)
    assert sorted(p.name for p in root.iterdir()) == ['notes.txt']


# ------------------------------------------------- loader + data preprocessor
def _full_pipeline(tok_dir, train):
    img = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 96))]
    if train:
        img += [
            dict(type='RandomFlip', prob=0.5),
            dict(type='RandomCrop', crop_size=(96, 32), padding=4),
            dict(type='RandomErasing', erase_prob=0.5, fill_color=(104, 117, 123)),
        ]
    text = [dict(type='NormalizeCaption')]
    if train:
        text.append(dict(type='AugmentCaption', mask_prob=0.2, delete_prob=0.1))
    text.append(dict(type='TokenizeCaption', tokenizer=tok_dir, max_length=16))
    return [
        dict(type='ImagePipeline', transforms=img),
        *text,
        dict(type='PackTBPSInputs'),
    ]


@pytest.mark.parametrize('fmt', sorted(CLASSES))
def test_dataloader_with_preprocessor(tmp_path, fmt):
    init_default_scope('tbps_mm')
    fx = make_tbps_fixture(tmp_path, fmt)
    tok_dir = make_tiny_tokenizer(tmp_path / 'tokenizer')
    preprocessor = MODELS.build(dict(type='TBPSDataPreprocessor'))

    train_loader = Runner.build_dataloader(
        dict(
            batch_size=4,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='pseudo_collate'),
            dataset=dict(
                type=fx['type'],
                data_root=fx['data_root'],
                split='train',
                pipeline=_full_pipeline(tok_dir, train=True),
            ),
        ),
        seed=0,
    )
    batch = preprocessor(next(iter(train_loader)), training=True)
    inputs = batch['inputs']
    assert inputs['images'].shape == (4, 3, 96, 32)
    assert inputs['images'].dtype == torch.float32
    # Padded to max_length 16 by the pipeline, then cut after the batch's
    # longest caption by the preprocessor.
    length = inputs['text_mask'].shape[1]
    assert inputs['text_ids'].shape == inputs['text_mask'].shape == (4, length)
    assert length <= 16 and inputs['text_mask'][:, -1].any()
    assert (
        inputs['image_index'].tolist() == inputs['text_index'].tolist() == [0, 1, 2, 3]
    )
    assert (inputs['text_ids'][:, 0] == 2).all()  # [CLS] first
    assert len(batch['data_samples']) == 4
    assert all(s.modality == 'pair' for s in batch['data_samples'])
    assert {int(s.gt_label) for s in batch['data_samples']} <= {0, 1, 2}

    # Evaluation: gallery first, then the queries; batch 0 mixes both.
    test_loader = Runner.build_dataloader(
        dict(
            batch_size=8,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate'),
            dataset=dict(
                type=fx['type'],
                data_root=fx['data_root'],
                split='test',
                pipeline=_full_pipeline(tok_dir, train=False),
            ),
        )
    )
    batches = [preprocessor(b) for b in test_loader]
    first = batches[0]['inputs']
    assert first['images'].shape == (5, 3, 96, 32)
    assert first['image_index'].tolist() == [0, 1, 2, 3, 4]
    assert first['text_ids'].shape[0] == 3 and first['text_ids'].shape[1] <= 16
    assert first['text_index'].tolist() == [5, 6, 7]
    n_queries = 5 * FORMATS[fmt]['captions_per_image']
    assert sum(b['inputs']['text_ids'].shape[0] for b in batches) == n_queries
    last = batches[-1]['inputs']
    assert last['images'] is None and last['image_index'].numel() == 0
    samples = [s for b in batches for s in b['data_samples']]
    assert [s.sample_idx for s in samples] == list(range(5 + n_queries))
    # Gallery pixels are the solid colours of the fixture, normalised.
    g0 = batches[0]['data_samples'][0]
    colour = np.asarray(Image.open(g0.img_path).convert('RGB'), np.float32)[0, 0]
    mean = torch.tensor([122.77, 116.75, 104.09])
    std = torch.tensor([68.50, 66.63, 70.32])
    expected = (torch.from_numpy(colour) - mean) / std
    assert torch.allclose(first['images'][0, :, 40, 16], expected, atol=0.1)


def test_lazy_pipeline_logs_nothing_unexpected(tmp_path, caplog):
    # Building with a tokenizer folder that does not exist yet must work (the
    # SynthPedes tokenizer is written when the data is generated).
    fx = make_tbps_fixture(tmp_path, 'cuhk')
    pipeline = _full_pipeline(str(tmp_path / 'later' / 'tokenizer'), train=False)
    with caplog.at_level(logging.WARNING):
        ds = CUHKPEDES(data_root=fx['data_root'], split='test', pipeline=pipeline)
    assert ds[0]['inputs']['text_ids'] is None  # a gallery image needs no tokenizer
    with pytest.raises(FileNotFoundError, match='later/tokenizer'):
        ds[5]


# ------------------------------------------------------------------ configs
CONFIGS = Path(__file__).resolve().parents[1] / 'configs' / '_base_' / 'datasets'


def _point_config_at(cfg, data_root, tokenizer, **dataset_overrides):
    """Set data_root (and the tokenizer folder) in every loader of a config."""
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key]['dataset']
        dataset.update(data_root=data_root, **dataset_overrides)
        for step in dataset['pipeline']:
            if step['type'] == 'TokenizeCaption':
                step['tokenizer'] = tokenizer


@pytest.mark.parametrize(
    'name,fmt,val_split',
    [
        ('cuhk_pedes', 'cuhk', 'val'),
        ('icfg_pedes', 'icfg', 'test'),
        ('rstpreid', 'rstp', 'val'),
    ],
)
def test_real_dataset_configs_build_and_load(tmp_path, name, fmt, val_split):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / f'{name}.py'))
    assert cfg.data_root == f'data/{name}' and cfg.img_scale == (384, 128)
    assert cfg.val_dataloader.dataset.split == val_split
    assert cfg.test_dataloader.dataset.split == 'test'
    assert (
        cfg.train_dataloader.sampler.shuffle and not cfg.val_dataloader.sampler.shuffle
    )
    assert cfg.val_evaluator.type == cfg.test_evaluator.type == 'TBPSRetrievalMetric'
    fx = make_tbps_fixture(tmp_path, fmt)
    _point_config_at(cfg, fx['data_root'], make_tiny_tokenizer(tmp_path / 'tok'))
    train = DATASETS.build(cfg.train_dataloader.dataset)
    val = DATASETS.build(cfg.val_dataloader.dataset)
    pair = train[0]
    assert pair['inputs']['img'].shape == (3, 384, 128)
    assert pair['inputs']['text_ids'].shape == (77,)
    assert val[0]['inputs']['img'].shape == (3, 384, 128)
    assert val[len(val) - 1]['inputs']['img'] is None


def test_synthpedes_config_builds_and_generates(tmp_path):
    from mmengine.config import Config

    cfg = Config.fromfile(str(CONFIGS / 'synthpedes.py'))
    assert cfg.data_root == 'data/synthpedes_small'
    assert (cfg.synthpedes_size, cfg.synthpedes_seed) == ('small', 0)
    assert cfg.tokenizer == cfg.data_root + '/tokenizer'
    root = str(tmp_path / 'synthpedes_tiny')
    _point_config_at(cfg, root, root + '/tokenizer', size='tiny')
    train = DATASETS.build(cfg.train_dataloader.dataset)
    item = train[0]
    assert item['inputs']['img'].shape == (3, 128, 48)
    assert item['inputs']['text_ids'].shape == (64,)
    test = DATASETS.build(cfg.test_dataloader.dataset)
    assert test[len(test) - 1]['inputs']['text_mask'].sum() > 5
