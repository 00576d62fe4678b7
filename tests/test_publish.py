"""Train -> publish -> test -> search with a tiny model, and publishing errors."""

import importlib.util
import json
import os
import os.path as osp
import re

import pytest
import torch
from fixtures_tbps import CAPTION_WORDS, make_tbps_fixture, make_tiny_tokenizer
from mmengine.config import Config

from tbps_mm.apis import TBPSInferencer
from tbps_mm.models.checkpoint import publish_weights, read_weights_file

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

CONFIG = """
_base_ = [{runtime!r}]
log_level = 'WARNING'
model = dict(
    type='TBPSRetriever',
    image_encoder=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
        img_size=(96, 32), patch_size=16, out_type='raw'),
    text_encoder=dict(
        type='BertTextEncoder',
        config=dict(vocab_size={vocab}, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=16, pad_token_id=0)),
    head=dict(type='PartQueryDecoderHead', image_in_channels=32,
              text_in_channels=32, embed_dims=32, num_parts=2,
              decoder_dims=32, num_heads=4),
    losses=dict(
        sdm=dict(type='SDMLoss'),
        id=dict(type='IDLoss', in_channels=32, num_classes=3)),
    fusion_weight=0.5)
pipeline = [
    dict(type='ImagePipeline', transforms=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 96))]),
    dict(type='NormalizeCaption'),
    dict(type='TokenizeCaption', tokenizer={tokenizer!r}, max_length=16),
    dict(type='PackTBPSInputs'),
]
dataset = dict(type='ICFGPEDES', data_root={data_root!r}, pipeline=pipeline)
loader = dict(batch_size=4, num_workers=0, collate_fn=dict(type='pseudo_collate'))
train_dataloader = dict(
    loader, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(dataset, split='train'))
test_dataloader = dict(
    loader, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(dataset, split='test'))
val_dataloader = test_dataloader
val_evaluator = dict(type='TBPSRetrievalMetric')
test_evaluator = val_evaluator
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))
"""


def load_tool(path):
    spec = importlib.util.spec_from_file_location(
        'tool_' + osp.basename(path)[:-3], osp.join(ROOT, path)
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def tiny_run(tmp_path, monkeypatch):
    # The Runner formats its config with yapf (seconds each on a small CPU);
    # nothing here reads that text.
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: self.text))
    spec = {
        'train': [(5, 3), (1, 2), (3, 2)],  # 7 images: 2 iterations of 4
        'test': [(12, 2), (10, 3), (11, 1), (14, 2)],  # 8 images, 8 captions
    }
    fixture = make_tbps_fixture(tmp_path, 'icfg', spec=spec, image_size=(96, 32))
    config = tmp_path / 'tiny.py'
    config.write_text(
        CONFIG.format(
            runtime=osp.join(ROOT, 'configs', '_base_', 'default_runtime.py'),
            vocab=len(CAPTION_WORDS) + 5,
            tokenizer=make_tiny_tokenizer(tmp_path / 'tokenizer'),
            data_root=fixture['data_root'],
        )
    )
    return dict(config=str(config), fixture=fixture, root=tmp_path)


def test_train_publish_test_search(tiny_run, capsys, monkeypatch):
    config, root = tiny_run['config'], tiny_run['root']
    monkeypatch.chdir(root)
    work = root / 'work'
    torch.manual_seed(0)
    assert load_tool('tools/train.py').main([config, '--work-dir', str(work)]) == 0
    printed = capsys.readouterr().out
    best = sorted(work.glob('best_t2i_R1_epoch_1.pth'))
    assert len(best) == 1
    # train.py ends with the next three commands, for its best checkpoint.
    publish_cmd = re.search(r'publish_model\.py (\S+) (\S+)', printed)
    assert publish_cmd and osp.abspath(publish_cmd.group(1)) == str(best[0])
    assert f'tools/test.py {config} ' in printed
    assert f'tools/search.py {config} ' in printed

    code = load_tool('tools/model_converters/publish_model.py').main(
        [publish_cmd.group(1), publish_cmd.group(2)]
    )
    assert code == 0
    out = capsys.readouterr().out
    published = re.search(r'-> (\S+)', out).group(1)
    assert re.fullmatch(r'.*/tiny-[0-9a-f]{8}\.safetensors', published)
    assert 'losses.id.classifier.weight' in out  # named as left out
    weights = read_weights_file(published)
    assert weights and not any(k.startswith('losses.') for k in weights)

    test_tool = load_tool('tools/test.py')
    results = {}
    for name, checkpoint in (('training', str(best[0])), ('published', published)):
        ranked = root / f'{name}.json'
        code = test_tool.main(
            [config, checkpoint, '--work-dir', str(root / f'test_{name}')]
            + ['--out', str(ranked), '--show-topk', '8']
        )
        assert code == 0
        results[name] = json.loads(ranked.read_text())
    assert results['published']['metrics'] == results['training']['metrics']
    assert results['published']['queries'] == results['training']['queries']

    # The exact gallery index ranks every test caption as the metric did.
    gallery = osp.join(tiny_run['fixture']['data_root'], 'imgs', 'test')
    inferencer = TBPSInferencer(config, published, show_progress=False)
    inferencer.index(gallery, index_file=str(root / 'gallery.idx'))
    for query in results['published']['queries']:
        found = inferencer.search(query['caption'], topk=8)
        assert [p for p, _ in found] == [i['img_path'] for i in query['topk']]
        assert [s for _, s in found] == pytest.approx(
            [i['score'] for i in query['topk']], abs=1e-5
        )

    # tools/search.py on the published file answers a query.
    caption = results['published']['queries'][0]['caption']
    code = load_tool('tools/search.py').main(
        [config, published, '--images', gallery, '--query', caption, '--topk', '3']
    )
    out = capsys.readouterr().out
    assert code == 0 and 'index built: 8 images, flat' in out
    assert out.count('.jpg') == 3


def test_runner_loads_a_published_file_without_missing_key_warnings(
    tiny_run, tmp_path, monkeypatch, capsys
):
    """The dropped ID classifier keeps its initialisation, said in one line."""
    from mmengine.logging import MMLogger

    from tbps_mm.engine import build_runner, load_config
    from tbps_mm.registry import MODELS

    cfg = load_config(tiny_run['config'])
    torch.manual_seed(1)
    model = MODELS.build(cfg.model)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('losses.')}
    published = tmp_path / 'model.pth'
    torch.save(state, published)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(published)
    runner = build_runner(cfg)
    messages = []
    logger = runner.logger
    assert logger is MMLogger.get_current_instance()

    def record(level, msg, *args, **kwargs):
        messages.append((level, str(msg)))

    # MMEngine reports through logger.log (print_log) and logger.info.
    monkeypatch.setattr(logger, 'log', record)
    monkeypatch.setattr(logger, 'info', lambda msg, *a, **k: record(20, msg))
    monkeypatch.setattr(logger, 'warning', lambda msg, *a, **k: record(30, msg))
    capsys.readouterr()
    runner.load_checkpoint(str(published))
    monkeypatch.undo()
    # Without a logger, MMEngine prints its missing-keys warning.
    printed = capsys.readouterr()
    assert 'missing keys' not in printed.out + printed.err
    assert not [m for level, m in messages if level >= 30], messages
    assert any('a published model' in m for _, m in messages)
    loaded = runner.model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def make_training_checkpoint(path):
    torch.save(
        dict(
            meta=dict(epoch=1),
            state_dict={
                'head.weight': torch.ones(2, 3),
                'losses.id.classifier.weight': torch.zeros(4, 3),
            },
            optimizer=dict(state={}),
        ),
        path,
    )


def test_publish_keeps_weights_drops_classifier_and_names_by_hash(tmp_path):
    src = tmp_path / 'epoch_1.pth'
    make_training_checkpoint(src)
    result = publish_weights(str(src), str(tmp_path / 'out' / 'model'))
    assert re.fullmatch(r'.*/out/model-[0-9a-f]{8}\.safetensors', result['path'])
    assert result['sha256'][:8] in result['path']
    assert result['dropped'] == ['losses.id.classifier.weight']
    assert list(read_weights_file(result['path'])) == ['head.weight']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(result['path']).st_mode & 0o777 == 0o666 & ~umask
    kept = publish_weights(str(src), str(tmp_path / 'full.pth'), drop_prefixes=())
    state = torch.load(kept['path'], weights_only=True)  # a plain state dict
    assert sorted(state) == ['head.weight', 'losses.id.classifier.weight']
    assert kept['dropped'] == [] and kept['num_tensors'] == 2


def test_publish_tool_errors(tmp_path, capsys):
    tool = load_tool('tools/model_converters/publish_model.py')
    src = tmp_path / 'epoch_1.pth'
    make_training_checkpoint(src)

    def fails(*args):
        assert tool.main([str(a) for a in args]) == 2
        return capsys.readouterr().err

    err = fails(tmp_path / 'missing.pth', tmp_path / 'out.safetensors')
    assert 'missing.pth" does not exist' in err

    weights_only = tmp_path / 'weights.pth'
    torch.save({'head.weight': torch.ones(2)}, weights_only)
    err = fails(weights_only, tmp_path / 'out.safetensors')
    assert 'is not a training checkpoint' in err and 'weights.pth' in err

    junk = tmp_path / 'notes.pth'
    junk.write_text('not a checkpoint')
    err = fails(junk, tmp_path / 'out.safetensors')
    assert 'notes.pth" is not a checkpoint torch can read' in err

    published = publish_weights(str(src), str(tmp_path / 'pub.safetensors'))['path']
    err = fails(published, tmp_path / 'again.safetensors')
    assert 'published already' in err

    (tmp_path / 'taken.safetensors').write_bytes(b'')
    err = fails(src, tmp_path / 'taken.safetensors')
    assert 'taken.safetensors" exists' in err
    err = fails(src, tmp_path / 'model.onnx')
    assert 'use a .safetensors (default) or .pth' in err
    # Publishing the same checkpoint twice under one name: the hashed name
    # exists, and nothing else is left behind.
    before = sorted(p.name for p in tmp_path.iterdir())
    err = fails(src, tmp_path / 'pub.safetensors')
    assert osp.basename(published) in err and 'exists' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before

    assert tool.main([str(src), str(tmp_path / 'ok.safetensors')]) == 0
    out = capsys.readouterr().out
    assert 'left out 1 training-only tensor(s): losses.id.classifier.weight' in out
    assert 'python tools/test.py CONFIG ' in out
