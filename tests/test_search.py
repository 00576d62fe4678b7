"""tools/search.py and TBPSInferencer on generated images with a tiny model."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_tbps import CAPTION_WORDS, make_tiny_tokenizer
from PIL import Image

from tbps_mm.apis import DEFAULT_INDEX_NAME, GalleryIndex, TBPSInferencer
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


def test_search_index_reuse_update_and_rebuild(setup, capsys, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 5)
    args = ['--images', images, '--query', QUERY, '--topk', 3]
    code, out, _ = run(setup, capsys, *args, '--out', tmp_path / 'result.png')
    assert code == 0, out
    assert 'index built: 5 images, flat' in out
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

    make_images(images, 1, start=5)  # a new image: only it is encoded
    code, out3, _ = run(setup, capsys, *args, '--topk', 10)
    assert code == 0 and 'index updated (+1 -0): 6 images' in out3
    assert len(result_lines(out3)) == 6  # topk clipped to the gallery size
    assert index.stat().st_mtime_ns != stamp

    # A separate index file over two folders, and an explanation figure.
    more = tmp_path / 'more'
    make_images(more, 2, start=10)
    code, out4, _ = run(
        setup,
        capsys,
        '--images',
        images,
        more,
        '--query',
        QUERY,
        '--index',
        tmp_path / 'idx' / 'gallery.idx',
        '--out',
        tmp_path / 'r.png',
        '--explain',
    )
    assert code == 0 and 'index built: 8 images' in out4
    assert (tmp_path / 'idx' / 'gallery.idx').is_file()
    assert (tmp_path / 'r_explain.png').is_file()
    assert 'part 1: ' in out4 and 'part 3: ' in out4

    # --add: a third folder joins the folders the index holds.
    third = tmp_path / 'third'
    make_images(third, 8, start=20)
    code, out5, _ = run(
        setup,
        capsys,
        '--index',
        tmp_path / 'idx' / 'gallery.idx',
        '--add',
        third,
        '--query',
        QUERY,
        '--topk',
        20,
    )
    assert code == 0 and 'index updated (+8 -0): 16 images' in out5
    found = [line.split()[2] for line in result_lines(out5)]
    assert len(found) == 16 and sum(str(third) in path for path in found) == 8
    # --index-type: an exact index asked to be IVF is rebuilt as IVF.
    code, out6, _ = run(
        setup,
        capsys,
        '--index',
        tmp_path / 'idx' / 'gallery.idx',
        '--index-type',
        'ivf-sq8',
        '--nlist',
        2,
        '--nprobe',
        2,
        '--query',
        QUERY,
    )
    assert code == 0, out6
    assert 'index built: 16 images, ivf-sq8 (nlist 2, nprobe 2)' in out6
    code, out7, _ = run(
        setup,
        capsys,
        '--index',
        tmp_path / 'idx' / 'gallery.idx',
        '--index-type',
        'two-stage',
        '--nlist',
        2,
        '--nprobe',
        2,
        '--rank',
        8,
        '--query',
        QUERY,
        '--topk',
        16,
    )
    assert code == 0, out7
    assert (
        'index built: 16 images, two-stage (nlist 2, nprobe 2, rank 8, re-scored '
        'x10 from float16)' in out7
    )
    # Every cell visited and every image re-scored: the exact ranking's set.
    assert sorted(line.split()[2] for line in result_lines(out7)) == sorted(found)


def test_incremental_index_equals_a_rebuild(setup, tmp_path):
    first, second = tmp_path / 'first', tmp_path / 'second'
    make_images(first, 6)
    make_images(second, 4, start=10)
    inferencer = TBPSInferencer(
        setup['configs']['tiny'], setup['checkpoint'], batch_size=4, show_progress=False
    )
    encoded = []
    encode = inferencer.encoder.encode_images

    def counting(paths, skipped=None):
        encoded.extend(paths)
        return encode(paths, skipped)

    inferencer.encoder.encode_images = counting
    index_file = str(tmp_path / 'gallery.idx')
    assert inferencer.index(str(first), index_file=index_file)['added'] == 6
    summary = inferencer.index(index_file=index_file, add=str(second))
    assert summary['added'] == 4 and summary['num_images'] == 10
    assert sorted(encoded) == sorted(
        str(p) for p in list(first.rglob('*.png')) + list(second.rglob('*.png'))
    )  # each image encoded once
    # Remove one image, change another: only the changed one is encoded.
    removed = first / 'person_00.png'
    changed = second / 'cam1' / 'person_11.png'
    removed.unlink()
    Image.fromarray(np.full((90, 30, 3), 200, np.uint8)).save(changed)
    encoded.clear()
    summary = inferencer.index(index_file=index_file)
    assert (summary['added'], summary['removed'], summary['num_images']) == (1, 2, 9)
    assert encoded == [str(changed)]
    assert str(removed) not in inferencer.paths
    incremental = inferencer.search(QUERY, topk=9)

    rebuilt = inferencer.index(
        [str(first), str(second)], index_file=str(tmp_path / 'fresh.idx')
    )
    assert rebuilt['added'] == 9
    from_scratch = inferencer.search(QUERY, topk=9)
    assert [p for p, _ in incremental] == [p for p, _ in from_scratch]
    assert [s for _, s in incremental] == pytest.approx([s for _, s in from_scratch])
    # Leaving a folder out of --images drops its images.
    summary = inferencer.index(str(first), index_file=index_file)
    assert summary['removed'] == 4 and summary['num_images'] == 5


def test_exact_search_scores_are_the_model_fused_similarity(setup, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 7)
    inferencer = TBPSInferencer(
        setup['configs']['tiny'], setup['checkpoint'], show_progress=False
    )
    inferencer.index(str(images))
    results = inferencer.search(QUERY, topk=7)
    paths = [p for p, _ in results]
    text = inferencer.encoder.encode_texts([QUERY])
    gallery = inferencer.encoder.encode_images(paths)
    expected = inferencer.model.similarity(text, gallery)[0]
    assert [s for _, s in results] == pytest.approx(expected.tolist(), abs=1e-5)
    assert expected.tolist() == sorted(expected.tolist(), reverse=True)


def test_unreadable_images_skipped_and_named(setup, capsys, tmp_path):
    images = tmp_path / 'images'
    make_images(images, 3)
    (images / 'broken.jpg').write_bytes(b'not an image at all')
    (images / 'cam1' / 'empty.png').write_bytes(b'')
    code, out, _ = run(setup, capsys, '--images', images, '--query', QUERY)
    assert code == 0, out
    assert 'index built: 3 images' in out
    assert 'skipped 2 unreadable entries' in out
    assert 'indexed 3, skipped-unreadable 2' in out
    assert 'broken.jpg' in out and os.path.join('cam1', 'empty.png') in out
    assert len(result_lines(out)) == 3
    # The skipped names travel with the index; they are tried again (and
    # still fail) on every run.
    inferencer = TBPSInferencer(
        setup['configs']['tiny'], setup['safetensors'], show_progress=False
    )
    summary = inferencer.index(str(images))
    assert summary['loaded'] is False  # another checkpoint file: other model
    assert sorted(name for name, _ in summary['skipped']) == [
        str(images / 'broken.jpg'),
        str(images / 'cam1' / 'empty.png'),
    ]
    again = inferencer.index(str(images))
    assert again['loaded'] is True and again['added'] == 0
    assert len(again['skipped']) == 2


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

    code, _, err = run(setup, capsys, '--query', QUERY)
    assert code == 2 and '--images DIR' in err
    code, _, err = run(
        setup, capsys, '--index', tmp_path / 'none.idx', '--query', QUERY
    )
    assert code == 2 and 'none.idx" does not exist' in err
    code, _, err = run(
        setup, capsys, '--images', images, '--nprobe', 0, '--query', QUERY
    )
    assert code == 2 and '--nprobe must be >= 1' in err

    # A file that is not an index is never overwritten.
    foreign = tmp_path / 'notes.idx'
    foreign.write_text('my notes')
    code, _, err = run(
        setup, capsys, '--images', images, '--index', foreign, '--query', QUERY
    )
    assert code == 2 and 'is not a tbps_mm gallery index' in err
    code, _, err = run(
        setup,
        capsys,
        '--images',
        images,
        '--index',
        foreign,
        '--rebuild-index',
        '--query',
        QUERY,
    )
    assert code == 2 and 'is not a tbps_mm gallery index' in err
    assert foreign.read_text() == 'my notes'

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


def test_model_or_pipeline_change_rebuilds_and_damage_is_handled(
    setup, capsys, tmp_path
):
    images = tmp_path / 'images'
    make_images(images, 4)
    index = images / DEFAULT_INDEX_NAME
    assert run(setup, capsys, '--images', images, '--query', QUERY)[0] == 0
    model_key = GalleryIndex.read_header(str(index))['metadata']['model']

    # Another fusion weight changes the model's score: rebuilt.
    code, out, _ = run(
        setup,
        capsys,
        '--images',
        images,
        '--query',
        QUERY,
        '--cfg-options',
        'model.fusion_weight=0.5',
    )
    assert code == 0 and 'index built: 4 images' in out
    header = GalleryIndex.read_header(str(index))['metadata']
    assert header['model'] != model_key
    pipeline_key = header['pipeline']
    # Another test pipeline (image size) changes what is encoded: rebuilt.
    code, out, _ = run(
        setup,
        capsys,
        '--images',
        images,
        '--query',
        QUERY,
        '--cfg-options',
        'model.fusion_weight=0.5',
        'test_dataloader.dataset.pipeline.0.transforms.1.scale=[32,80]',
    )
    assert code == 0 and 'index built: 4 images' in out
    assert GalleryIndex.read_header(str(index))['metadata']['pipeline'] != pipeline_key

    # A damaged index (here: cut short) is rebuilt from the images at hand.
    index.write_bytes(index.read_bytes()[:-30])
    code, out, _ = run(setup, capsys, '--images', images, '--query', QUERY)
    assert code == 0 and 'index built: 4 images' in out
    assert len(GalleryIndex.load(str(index))) == 4


def test_inferencer_api_and_atomic_index(setup, tmp_path, monkeypatch):
    images = tmp_path / 'images'
    make_images(images, 5)
    inferencer = TBPSInferencer(
        setup['configs']['tiny'], setup['checkpoint'], batch_size=2, show_progress=False
    )
    with pytest.raises(RuntimeError, match='index'):
        inferencer.search(QUERY)
    assert inferencer.paths == []
    index = tmp_path / 'gallery.idx'

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
    assert list(tmp_path.glob('gallery.idx*')) == []
    monkeypatch.setattr(inferencer.model, 'encode_image', encode)

    summary = inferencer.index(str(images), index_file=str(index))
    assert summary == dict(
        num_images=5,
        added=5,
        removed=0,
        skipped=[],
        counts={
            'indexed': 5,
            'skipped-unreadable': 0,
            'skipped-dangling-link': 0,
            'skipped-unreadable-folder': 0,
        },
        encoded=5,
        resumed=0,
        loaded=False,
        index_file=str(index),
        index='flat, 5 vectors of 128 dims',
    )
    assert sorted(inferencer.paths) == sorted(str(p) for p in images.rglob('*.png'))
    results = inferencer(QUERY, topk=4)
    assert len(results) == 4 and all(os.path.isfile(p) for p, _ in results)
    with pytest.raises(ValueError, match='query is empty'):
        inferencer.search('')
    good = index.read_bytes()

    # A crash while writing keeps the old index and leaves no temporary file.
    make_images(images, 1, start=5)

    def broken_write(faiss_index, writer):
        writer(b'partial')
        raise OSError('disk full')

    import faiss

    monkeypatch.setattr(faiss, 'write_index', broken_write)
    monkeypatch.setattr(faiss, 'PyCallbackIOWriter', lambda write: write)
    with pytest.raises(OSError, match='disk full'):
        inferencer.index(str(images), index_file=str(index))
    monkeypatch.undo()
    assert index.read_bytes() == good
    # The index file and the store it names remain, and the new image's
    # vector waits in the encoding cache for the next run: nothing
    # half-written is left.
    left = {p.name for p in tmp_path.iterdir() if p.name.startswith('gallery')}
    stores = {name for name in left if name.endswith('.sqlite')}
    assert left - stores == {'gallery.idx', 'gallery.idx.encoding'}
    assert len(stores) == 1 and GalleryIndex.read_header(str(index))
    assert not list(tmp_path.rglob('*.tmp'))

    # A damaged index file is rebuilt, not trusted.
    index.write_bytes(good[: len(good) // 2])
    summary = inferencer.index(str(images), index_file=str(index))
    assert summary['loaded'] is False and summary['num_images'] == 6
    assert (summary['resumed'], summary['encoded']) == (1, 5)
    assert not (tmp_path / 'gallery.idx.encoding').exists()
    assert len(list(tmp_path.glob('gallery.idx.*.sqlite'))) == 1

    # Explanation: per part, an attention map over the patch grid and weights
    # over the query's words (special tokens left out).
    explanation = inferencer.explain(QUERY, results[0][0])
    assert explanation['attn'].shape == (3, 6, 2)
    assert explanation['words'] == QUERY.split()
    assert explanation['word_weights'].shape == (3, len(QUERY.split()))
    figure = inferencer.draw_explanation(explanation)
    assert figure.size[0] > 3 * 80

    # Embeddings computed elsewhere can be searched directly.
    gallery = inferencer.encoder.encode_images([p for p, _ in results[:2]])
    inferencer.set_gallery(
        ['first', 'second'], gallery['embed'], gallery['part_embeds']
    )
    assert inferencer.paths == ['first', 'second']
    assert sorted(p for p, _ in inferencer.search(QUERY, topk=5)) == ['first', 'second']
    assert inferencer.search(QUERY, topk=1)[0][1] == pytest.approx(
        max(score for path, score in results[:2]), abs=1e-5
    )
    with pytest.raises(ValueError, match='one of each per image'):
        inferencer.set_gallery(['only one'], gallery['embed'], gallery['part_embeds'])
