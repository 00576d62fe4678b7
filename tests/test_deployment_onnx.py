"""ONNX export of both encoders, onnxruntime parity, and the inferencer's
onnxruntime backend."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from model_fixtures import tiny_retriever_cfg

from tbps_mm.apis import FusedEncoder, TBPSInferencer
from tbps_mm.deployment import (
    ONNXRuntimeEncoder,
    check_onnx_parity,
    export_onnx,
    read_deploy_meta,
)
from tbps_mm.registry import MODELS

pytest.importorskip('onnxruntime')

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'deployment' / 'pytorch2onnx.py'
IMG_HW = (96, 32)
# A CLIP-style variant of the tiny model: pre-norm ViT with QuickGELU and
# the CLIP text transformer (causal mask, end-of-text pooling).
CLIP_STYLE = dict(
    image_encoder=dict(
        final_norm=True,
        layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')),
    ),
    text_encoder=dict(
        type='CLIPTextEncoder',
        config=dict(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=12,
            eos_token_id=49,
        ),
    ),
)


def load_tool():
    spec = importlib.util.spec_from_file_location('pytorch2onnx', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module', params=['bert', 'clip'])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    overrides = CLIP_STYLE if request.param == 'clip' else {}
    model = MODELS.build(tiny_retriever_cfg(**overrides)).eval()
    out = tmp_path_factory.mktemp(f'onnx_{request.param}')
    meta = export_onnx(model, str(out), IMG_HW, with_attention=True)
    return model, str(out), meta


def test_export_writes_two_graphs_and_metadata(exported):
    model, out, meta = exported
    assert sorted(p.name for p in Path(out).iterdir()) == [
        'deploy.json',
        'image_encoder.onnx',
        'text_encoder.onnx',
    ]
    assert read_deploy_meta(out) == meta
    assert meta['outputs'] == ['fused_embed', 'embed', 'part_embeds', 'attn']
    assert meta['image']['attn_hw'] == [6, 2]
    assert meta['fused_dims'] == meta['embed_dims'] * (1 + meta['num_parts'])
    assert meta['fusion_weight'] == model.fusion_weight


def test_onnxruntime_matches_pytorch(exported):
    model, out, _ = exported
    # Batches of 1 and 5; captions of 3, 7 and the longest length, each row
    # with its own padding (so trimming and masks are exercised).
    diffs = check_onnx_parity(model, out, batch_sizes=(1, 5), text_lengths=(3, 7, 32))
    assert set(diffs) == {
        f'{side}/{name}'
        for side in ('image', 'text')
        for name in ('fused_embed', 'embed', 'part_embeds', 'attn')
    }
    assert max(diffs.values()) < 1e-4, diffs


def test_onnx_graphs_follow_each_caption_length(exported):
    """One caption at several paddings: the same vector (the length is not
    frozen into the graph), equal to PyTorch's."""
    model, out, meta = exported
    encoder = ONNXRuntimeEncoder(out)
    ids = torch.tensor([[2, 7, 8, 9, 10, 3]])
    vectors = []
    for pad in (0, 2, 5):
        padded = torch.cat([ids, ids.new_zeros(1, pad)], dim=1)
        mask = (torch.arange(padded.shape[1]) < ids.shape[1]).long()[None]
        vectors.append(encoder.encode_text(padded, mask)['fused_embed'])
    with torch.no_grad():
        ref = model.fused_embed(model.encode_text(ids, torch.ones_like(ids)))
    for vector in vectors:
        assert vector.shape == (1, meta['fused_dims'])
        assert (vector - ref).abs().max() < 1e-4


def test_onnx_encoder_rejects_bad_inputs(exported):
    _, out, meta = exported
    encoder = ONNXRuntimeEncoder(out)
    with pytest.raises(ValueError, match=r'takes \(B, 3, 96, 32\) images'):
        encoder.encode_image(torch.zeros(1, 3, 64, 32))
    length = meta['text']['max_length']
    too_long = torch.ones(1, length + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=f'{length} positions'):
        encoder.encode_text(too_long, too_long)
    ids = torch.tensor([[2, meta['text']['vocab_size'], 3]])
    with pytest.raises(ValueError, match='exported vocabulary'):
        encoder.encode_text(ids, torch.ones_like(ids))
    with pytest.raises(FileNotFoundError, match='pytorch2onnx'):
        ONNXRuntimeEncoder(str(Path(out).parent))


def test_export_without_attention(tmp_path):
    model = MODELS.build(tiny_retriever_cfg()).eval()
    meta = export_onnx(model, str(tmp_path), IMG_HW)
    assert meta['outputs'] == ['fused_embed', 'embed', 'part_embeds']
    out = ONNXRuntimeEncoder(str(tmp_path)).encode_image(torch.zeros(2, 3, *IMG_HW))
    assert set(out) == {'fused_embed', 'embed', 'part_embeds', 'attn_hw'}


def test_tool_exports_checks_and_reports(search_setup, tmp_path, capsys):
    tool = load_tool()
    out = tmp_path / 'onnx'
    code = tool.main([search_setup['config'], search_setup['checkpoint'], str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert 'largest difference: ' in printed and 'text/fused_embed' in printed
    worst = float(printed.split('largest difference: ')[1].split()[0])
    assert worst < 1e-4
    meta = json.loads((out / 'deploy.json').read_text())
    assert meta['image']['image_size'] == [96, 32]  # from the test pipeline
    assert meta['text']['max_length'] == 16

    code = tool.main([search_setup['config'], str(tmp_path / 'none.pth'), str(out)])
    assert code == 2 and 'none.pth" does not exist' in capsys.readouterr().err
    # A tolerance nothing can meet fails the check.
    code = tool.main(
        [search_setup['config'], search_setup['checkpoint'], str(out)]
        + ['--tolerance', '-1']
    )
    assert code == 1 and 'differs from PyTorch' in capsys.readouterr().err


def test_inferencer_onnxruntime_backend_ranks_like_pytorch(search_setup, tmp_path):
    config, checkpoint = search_setup['config'], search_setup['checkpoint']
    onnx_dir = tmp_path / 'onnx'
    assert load_tool().main([config, checkpoint, str(onnx_dir), '--attention']) == 0
    torch_inf = TBPSInferencer(config, checkpoint, show_progress=False)
    ort_inf = TBPSInferencer(
        config,
        checkpoint,
        show_progress=False,
        backend='onnxruntime',
        onnx_dir=str(onnx_dir),
    )
    assert isinstance(ort_inf.encoder.backend, ONNXRuntimeEncoder)
    assert ort_inf.encoder.fusion_weight == torch_inf.encoder.fusion_weight == 1.0
    gallery = search_setup['gallery']
    torch_inf.index(gallery, index_file=str(tmp_path / 'torch.npz'))
    ort_inf.index(gallery, index_file=str(tmp_path / 'ort.npz'))
    assert ort_inf.paths == torch_inf.paths
    for record in search_setup['people'][::3]:
        query = record['captions'][0]
        expected = torch_inf.search(query, topk=16)
        got = ort_inf.search(query, topk=16)
        assert [p for p, _ in got] == [p for p, _ in expected]
        assert max(abs(a[1] - b[1]) for a, b in zip(got, expected)) < 1e-4
        assert f'person_{record["pid"]}_' in got[0][0]
    query = search_setup['people'][0]['captions'][0]
    a = torch_inf.explain(query, torch_inf.paths[0])
    b = ort_inf.explain(query, ort_inf.paths[0])
    assert a['words'] == b['words']
    assert abs(a['score'] - b['score']) < 1e-4
    assert abs(a['attn'] - b['attn']).max() < 1e-4
    assert abs(a['word_weights'] - b['word_weights']).max() < 1e-4


def test_inferencer_onnxruntime_backend_errors(search_setup, tmp_path):
    config, checkpoint = search_setup['config'], search_setup['checkpoint']
    onnx_dir = tmp_path / 'onnx'
    assert load_tool().main([config, checkpoint, str(onnx_dir)]) == 0
    inferencer = TBPSInferencer(
        config, checkpoint, backend='onnxruntime', onnx_dir=str(onnx_dir)
    )
    query = search_setup['people'][0]['captions'][0]
    with pytest.raises(ValueError, match='--attention'):
        inferencer.explain(query, search_setup['people'][0]['path'])
    with pytest.raises(ValueError, match='backend must be one of'):
        TBPSInferencer(config, checkpoint, backend='tensorrt')
    with pytest.raises(ValueError, match='needs onnx_dir'):
        TBPSInferencer(config, checkpoint, backend='onnxruntime')
    other = tmp_path / 'other.pth'
    state = torch.load(checkpoint, weights_only=True)
    state = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, other)
    with pytest.raises(ValueError, match='exported from another checkpoint'):
        TBPSInferencer(
            config, str(other), backend='onnxruntime', onnx_dir=str(onnx_dir)
        )
    # The graphs' fusion weight is deploy.json's: a config asking for another
    # one is refused rather than fused again or silently ignored.
    with pytest.raises(ValueError, match=r'fusion_weight 1.0 \(deploy.json\)'):
        FusedEncoder.from_config(
            config,
            checkpoint,
            cfg_options={'model.fusion_weight': 0.25},
            backend='onnxruntime',
            onnx_dir=str(onnx_dir),
        )


def test_fused_encoder_uses_the_graph_fused_output(search_setup, tmp_path):
    config, checkpoint = search_setup['config'], search_setup['checkpoint']
    onnx_dir = tmp_path / 'onnx'
    assert load_tool().main([config, checkpoint, str(onnx_dir)]) == 0
    torch_enc = FusedEncoder.from_config(config, checkpoint, batch_size=3)
    ort_enc = FusedEncoder(
        torch_enc.model, backend='onnxruntime', onnx_dir=str(onnx_dir), batch_size=3
    )
    # The graph's own output comes back: scaling it differently is seen.
    calls = []
    run = ort_enc.backend.encode_image

    def spy(images):
        out = run(images)
        calls.append(out['fused_embed'])
        return out

    ort_enc.backend.encode_image = spy
    paths = [p['path'] for p in search_setup['people'][:5]]
    got = ort_enc.encode_images(paths)
    assert len(calls) == 2  # batches of 3
    assert torch.equal(got['fused_embed'], torch.cat(calls))
    expected = torch_enc.encode_images(paths)
    assert got['paths'] == expected['paths'] == paths
    assert (got['fused_embed'] - expected['fused_embed']).abs().max() < 1e-4
    captions = [p['captions'][0] for p in search_setup['people'][:4]]
    a, b = torch_enc.encode_texts(captions), ort_enc.encode_texts(captions)
    assert (a['fused_embed'] - b['fused_embed']).abs().max() < 1e-4
    assert torch.equal(a['text_ids'], b['text_ids'])


def test_search_tool_encodes_with_onnxruntime(search_setup, tmp_path, capsys):
    config, checkpoint = search_setup['config'], search_setup['checkpoint']
    onnx_dir = tmp_path / 'onnx'
    assert load_tool().main([config, checkpoint, str(onnx_dir)]) == 0
    spec = importlib.util.spec_from_file_location(
        'search_tool', Path(__file__).resolve().parents[1] / 'tools' / 'search.py'
    )
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    record = search_setup['people'][3]
    outputs = []
    for extra in ([], ['--onnx', str(onnx_dir)]):
        capsys.readouterr()
        code = search.main(
            [config, checkpoint, '--images', search_setup['gallery']]
            + ['--index', str(tmp_path / f'{len(extra)}.idx')]
            + ['--query', record['captions'][0], '--topk', '3']
            + extra
        )
        assert code == 0
        lines = [ln.split() for ln in capsys.readouterr().out.splitlines()]
        outputs.append([ln for ln in lines if ln and ln[0].isdigit()])
    torch_rows, ort_rows = outputs
    assert [r[2] for r in ort_rows] == [r[2] for r in torch_rows]
    assert f'person_{record["pid"]}_' in ort_rows[0][2]
    for a, b in zip(torch_rows, ort_rows):
        assert abs(float(a[1]) - float(b[1])) < 1e-3
