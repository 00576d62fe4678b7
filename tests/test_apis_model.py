"""init_model (the one model builder) and FusedEncoder (the one encoder)."""

import argparse

import pytest
import torch
from mmengine.config import Config
from search_fixtures import make_people, write_search_model
from test_hostile_checkpoints import write_malicious

from tbps_mm.apis import FusedEncoder, init_model
from tbps_mm.datasets.transforms.image_pipeline import ImageTransformError
from tbps_mm.models.checkpoint import CheckpointMismatchError, UnsafeCheckpointError


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('apis_model')
    setup = write_search_model(root)
    state = setup['state']
    from mmengine.logging import HistoryBuffer

    training = root / 'epoch_1.pth'
    torch.save(
        dict(state_dict=state, meta=dict(loss=HistoryBuffer())),
        training,
    )
    # A checkpoint another training script wrote: its arguments pickled as an
    # argparse.Namespace, a type outside the reader's allow-list.
    foreign = root / 'foreign.pth'
    torch.save(
        dict(state_dict=state, args=argparse.Namespace(lr=0.1)),
        foreign,
    )
    people = make_people(root / 'people', num_people=3, images_per_person=2)
    return dict(
        config=setup['config'],
        weights=setup['checkpoint'],
        training=str(training),
        foreign=str(foreign),
        state=state,
        people=people,
    )


def test_init_model_loads_weights_and_refuses_what_does_not_fit(tiny, tmp_path):
    model = init_model(tiny['config'], tiny['weights'])
    assert not model.training and model.checkpoint == tiny['weights']
    for key, value in tiny['state'].items():
        assert torch.equal(model.state_dict()[key], value), key
    # A Config object and overrides work as the file does.
    cfg = Config.fromfile(tiny['config'])
    other = init_model(cfg, None, cfg_options={'model.fusion_weight': 0.25})
    assert other.fusion_weight == 0.25 and other.checkpoint is None
    # An MMEngine training checkpoint is read without unpickling in full.
    training = init_model(tiny['config'], tiny['training'])
    assert torch.equal(
        training.state_dict()['head.part_queries'], tiny['state']['head.part_queries']
    )
    # A type outside the allow-list: refused unless trusted.
    with pytest.raises(UnsafeCheckpointError, match='--trust-checkpoint'):
        init_model(tiny['config'], tiny['foreign'])
    trusted = init_model(tiny['config'], tiny['foreign'], trust_checkpoint=True)
    assert torch.equal(
        trusted.state_dict()['head.part_queries'], tiny['state']['head.part_queries']
    )
    # A malicious pickle never runs, and trust reaches the reader.
    evil, marker = write_malicious(tmp_path, 'system', state_dict=tiny['state'])
    with pytest.raises(UnsafeCheckpointError, match='is refused'):
        init_model(tiny['config'], evil)
    with pytest.raises(UnsafeCheckpointError):
        FusedEncoder.from_config(tiny['config'], evil)
    assert not marker.exists()
    init_model(tiny['config'], evil, trust_checkpoint=True)
    assert marker.exists()
    # Keys that do not fit are named.
    broken = {k: v for k, v in tiny['state'].items() if not k.startswith('head.')}
    torch.save(broken, tmp_path / 'broken.pth')
    with pytest.raises(CheckpointMismatchError, match='missing from the checkpoint'):
        init_model(tiny['config'], str(tmp_path / 'broken.pth'))
    with pytest.raises(FileNotFoundError, match='none.pth'):
        init_model(tiny['config'], str(tmp_path / 'none.pth'))
    with pytest.raises(FileNotFoundError, match='none.py'):
        init_model(str(tmp_path / 'none.py'))


def test_fused_encoder_vectors_are_the_model_score(tiny):
    encoder = FusedEncoder.from_config(tiny['config'], tiny['weights'], batch_size=4)
    assert encoder.backend_name == 'pytorch' and encoder.fusion_weight == 1.0
    paths = [p['path'] for p in tiny['people']]
    captions = [p['captions'][0] for p in tiny['people']]
    images = encoder.encode_images(paths)
    texts = encoder.encode_texts(captions)
    assert images['paths'] == paths and images['fused_embed'].shape == (6, 128)
    assert texts['text_ids'].shape[0] == 6
    expected = encoder.model.similarity(texts, images)
    got = texts['fused_embed'] @ images['fused_embed'].T
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(
        encoder.fuse(images['embed'], images['part_embeds']),
        images['fused_embed'],
        atol=1e-6,
    )
    # Batches joined the same as one batch.
    whole = FusedEncoder(encoder.model, batch_size=16).encode_images(paths)
    assert torch.allclose(whole['fused_embed'], images['fused_embed'], atol=1e-5)
    # Unreadable files are skipped and named when asked, else raise.
    skipped = []
    out = encoder.encode_images([paths[0], __file__], skipped=skipped)
    assert out['paths'] == [paths[0]] and skipped[0][0] == __file__
    with pytest.raises(ImageTransformError, match='test_apis_model.py'):
        encoder.encode_images([__file__])
    with pytest.raises(ValueError, match='query is empty'):
        encoder.encode_texts(['  '])
    with pytest.raises(ValueError, match='backend must be one of'):
        FusedEncoder(encoder.model, backend='tensorrt')


def test_search_tool_reads_an_unlisted_type_only_when_trusted(tiny, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        'search_tool', Path(__file__).resolve().parents[1] / 'tools' / 'search.py'
    )
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    folder = str(Path(tiny['people'][0]['path']).parent)
    args = [tiny['config'], tiny['foreign'], '--images', folder]
    args += ['--index', str(tmp_path / 'g.idx'), '--query', 'a man in red']
    assert search.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and '--trust-checkpoint' in err
    assert 'argparse' in err and 'Traceback' not in err
    assert not (tmp_path / 'g.idx').exists()
    assert search.main(args + ['--trust-checkpoint']) == 0
    assert 'index built: 6 images' in capsys.readouterr().out
    # A training checkpoint needs no flag.
    args[1] = tiny['training']
    args[args.index('--index') + 1] = str(tmp_path / 'h.idx')
    assert search.main(args) == 0
