"""tools/search.py and TBPSInferencer on generated images with a tiny model."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_tbps import CAPTION_WORDS, make_tiny_tokenizer
from PIL import Image

from tbps_mm.apis import DEFAULT_INDEX_NAME, TBPSInferencer
from tbps_mm.registry import MODELS

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'search.py'
QUERY = 'a woman in a red coat and black pants'

CONFIG = """
tokenizer = {tokenizer!r}
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
              text_in_channels=32, embed_dims=32, num_parts={num_parts},
              decoder_dims=32, num_heads=4),
    losses=dict(id=dict(type='IDLoss', in_channels=32, num_classes={classes})),
    fusion_weight=1.0)
test_pipeline = [
    dict(type='ImagePipeline', transforms=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 96))]),
    dict(type='NormalizeCaption'),
    dict(type='TokenizeCaption', tokenizer=tokenizer, max_length=16),
    dict(type='PackTBPSInputs'),
]
test_dataloader = dict(dataset=dict(type='SynthPedes', pipeline=test_pipeline))
"""


def load_tool():
    spec = importlib.util.spec_from_file_location('search_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('search')
    tokenizer = make_tiny_tokenizer(root / 'tokenizer')
    vocab = len(CAPTION_WORDS) + 5
    configs = {}
    for name, parts, classes in (('tiny', 3, 7), ('other', 2, 7), ('ids', 3, 9)):
        path = root / f'{name}.py'
        path.write_text(
            CONFIG.format(
                tokenizer=tokenizer, vocab=vocab, num_parts=parts, classes=classes
            )
        )
        configs[name] = str(path)
    torch.manual_seed(0)
    from mmengine.config import Config

    model = MODELS.build(Config.fromfile(configs['tiny']).model)
    checkpoint = root / 'tiny.pth'
    torch.save(model.state_dict(), checkpoint)
    from safetensors.torch import save_file

    safetensors = root / 'tiny.safetensors'
    save_file(
        {
            k: v.contiguous()
            for k, v in model.state_dict().items()
            if not k.startswith('losses.')
        },
        str(safetensors),
    )
    return dict(
        root=root,
        configs=configs,
        checkpoint=str(checkpoint),
        safetensors=str(safetensors),
        tool=load_tool(),
    )


def make_images(folder: Path, count: int, start: int = 0) -> None:
    rng = np.random.default_rng(start)
    (folder / 'cam1').mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        array = rng.integers(0, 255, (80 + i, 30, 3), dtype=np.uint8)
        sub = folder / 'cam1' if i % 2 else folder
        Image.fromarray(array).save(sub / f'person_{i:02d}.png')


def run(setup, capsys, *args):
    code = setup['tool'].main(
        [setup['configs']['tiny'], setup['checkpoint'], *[str(a) for a in args]]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def result_lines(out: str):
    return [line for line in out.splitlines() if line[:3].strip().isdigit()]


def test_search_index_reuse_and_rebuild(setup, capsys, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 5)
    args = ['--images', images, '--query', QUERY, '--topk', 3]
    code, out, _ = run(setup, capsys, *args, '--out', tmp_path / 'result.png')
    assert code == 0, out
    assert 'index built: 5 images' in out
    assert len(result_lines(out)) == 3
    scores = [float(line.split()[1]) for line in result_lines(out)]
    assert scores == sorted(scores, reverse=True)
    assert (tmp_path / 'result.png').is_file()
    index = images / DEFAULT_INDEX_NAME
    stamp = index.stat().st_mtime_ns

    code, out2, _ = run(setup, capsys, *args)
    assert code == 0 and 'index loaded: 5 images' in out2
    assert index.stat().st_mtime_ns == stamp
    assert result_lines(out2) == result_lines(out)  # same index, same answer

    make_images(images, 1, start=5)  # a new image: the index is rebuilt
    code, out3, _ = run(setup, capsys, *args, '--topk', 10)
    assert code == 0 and 'index built: 6 images' in out3
    assert len(result_lines(out3)) == 6  # topk clipped to the folder size
    assert index.stat().st_mtime_ns != stamp

    # A separate index file and an explanation figure.
    code, out4, _ = run(
        setup,
        capsys,
        *args,
        '--index',
        tmp_path / 'idx' / 'gallery.npz',
        '--out',
        tmp_path / 'r.png',
        '--explain',
    )
    assert code == 0 and 'index built: 6 images' in out4
    assert (tmp_path / 'idx' / 'gallery.npz').is_file()
    assert (tmp_path / 'r_explain.png').is_file()
    assert 'part 1: ' in out4 and 'part 3: ' in out4


def test_unreadable_images_skipped_and_named(setup, capsys, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 3)
    (images / 'broken.jpg').write_bytes(b'not an image at all')
    (images / 'cam1' / 'empty.png').write_bytes(b'')
    code, out, _ = run(setup, capsys, '--images', images, '--query', QUERY)
    assert code == 0, out
    assert 'index built: 3 images' in out
    assert 'skipped 2 unreadable image(s)' in out
    assert 'broken.jpg' in out and os.path.join('cam1', 'empty.png') in out
    assert len(result_lines(out)) == 3
    # The skipped names travel with the index.
    inferencer = TBPSInferencer(
        setup['configs']['tiny'], setup['safetensors'], show_progress=False
    )
    summary = inferencer.index(str(images))
    assert summary['loaded'] is False  # another checkpoint file: other key
    assert sorted(name for name, _ in summary['skipped']) == [
        'broken.jpg',
        os.path.join('cam1', 'empty.png'),
    ]
    assert inferencer.index(str(images))['loaded'] is True


def test_bad_input_messages(setup, capsys, tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('no images here')
    code, _, err = run(setup, capsys, '--images', empty, '--query', QUERY)
    assert code == 2 and 'holds no images' in err and str(empty) in err

    code, _, err = run(
        setup, capsys, '--images', tmp_path / 'missing', '--query', QUERY
    )
    assert code == 2 and 'does not exist' in err

    images = tmp_path / 'images'
    make_images(images, 2)
    code, _, err = run(setup, capsys, '--images', images, '--query', '   ')
    assert code == 2 and 'query is empty' in err

    only_broken = tmp_path / 'broken'
    only_broken.mkdir()
    (only_broken / 'a.jpg').write_bytes(b'junk')
    code, _, err = run(setup, capsys, '--images', only_broken, '--query', QUERY)
    assert code == 2 and 'none of the 1 images' in err and 'a.jpg' in err
    assert not (only_broken / DEFAULT_INDEX_NAME).exists()

    # A checkpoint trained with another number of part queries.
    tool = setup['tool']
    code = tool.main(
        [
            setup['configs']['other'],
            setup['checkpoint'],
            '--images',
            str(images),
            '--query',
            QUERY,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and 'does not fit' in err and 'head.' in err
    # A different ID classifier does not matter for search (losses ignored).
    code = tool.main(
        [setup['configs']['ids'], setup['checkpoint'], '--images', str(images)]
        + ['--query', QUERY]
    )
    assert code == 0


def test_inferencer_api_and_atomic_index(setup, tmp_path, monkeypatch):
    images = tmp_path / 'images'
    make_images(images, 5)
    inferencer = TBPSInferencer(
        setup['configs']['tiny'], setup['checkpoint'], batch_size=2, show_progress=False
    )
    with pytest.raises(RuntimeError, match='index'):
        inferencer.search(QUERY)
    index = tmp_path / 'index.npz'

    # A crash half-way through encoding leaves no index file at all.
    calls = {'n': 0}
    encode = inferencer.model.encode_image

    def failing(images_batch):
        calls['n'] += 1
        if calls['n'] == 2:
            raise RuntimeError('simulated crash')
        return encode(images_batch)

    monkeypatch.setattr(inferencer.model, 'encode_image', failing)
    with pytest.raises(RuntimeError, match='simulated crash'):
        inferencer.index(str(images), index_file=str(index))
    assert list(tmp_path.glob('index.npz*')) == []
    monkeypatch.setattr(inferencer.model, 'encode_image', encode)

    summary = inferencer.index(str(images), index_file=str(index))
    assert summary == dict(
        num_images=5, skipped=[], loaded=False, index_file=str(index)
    )
    results = inferencer(QUERY, topk=4)
    assert len(results) == 4 and all(os.path.isfile(p) for p, _ in results)
    with pytest.raises(ValueError, match='query is empty'):
        inferencer.search('')
    good = index.read_bytes()

    # A crash while writing keeps the old index and leaves no temporary file.
    make_images(images, 1, start=5)

    def broken_savez(*args, **kwargs):
        args[0].write(b'partial')
        raise OSError('disk full')

    monkeypatch.setattr(np, 'savez', broken_savez)
    with pytest.raises(OSError, match='disk full'):
        inferencer.index(str(images), index_file=str(index))
    monkeypatch.undo()
    assert index.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('index')] == [
        'index.npz'
    ]

    # A corrupt index file is rebuilt, not trusted.
    index.write_bytes(good[: len(good) // 2])
    summary = inferencer.index(str(images), index_file=str(index))
    assert summary['loaded'] is False and summary['num_images'] == 6

    # Explanation: per part, an attention map over the patch grid and weights
    # over the query's words (special tokens left out).
    explanation = inferencer.explain(QUERY, results[0][0])
    assert explanation['attn'].shape == (3, 6, 2)
    assert explanation['words'] == QUERY.split()
    assert explanation['word_weights'].shape == (3, len(QUERY.split()))
    figure = inferencer.draw_explanation(explanation)
    assert figure.size[0] > 3 * 80

    # Embeddings computed elsewhere can be searched directly.
    gallery = TBPSInferencer.encode_images(inferencer, [p for p, _ in results[:2]])
    inferencer.set_gallery(
        ['first', 'second'], gallery['embed'], gallery['part_embeds']
    )
    assert sorted(p for p, _ in inferencer.search(QUERY, topk=5)) == ['first', 'second']
    assert inferencer.search(QUERY, topk=1)[0][1] == pytest.approx(
        max(score for path, score in results[:2])
    )
    with pytest.raises(ValueError, match='one of each per image'):
        inferencer.set_gallery(['only one'], gallery['embed'], gallery['part_embeds'])
