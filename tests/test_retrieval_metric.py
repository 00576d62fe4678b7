"""Tests of TBPSRetrievalMetric (single process) and the results table."""

import os

import pytest
import torch
from mmpretrain.structures import DataSample

from tbps_mm.evaluation import (
    TBPSRetrievalMetric,
    format_retrieval_table,
    k_reciprocal_rerank,
    rank_metrics,
)
from tbps_mm.registry import METRICS


def make_problem(num_ids=6, images_per_id=3, captions_per_image=2, dim=8, parts=3):
    """Embeddings of a small val split: gallery items first, then queries."""
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(num_ids, dim, generator=gen)
    part_centers = torch.randn(num_ids, parts, dim, generator=gen)

    def norm(x):
        return torch.nn.functional.normalize(x, dim=-1)

    g_labels = torch.arange(num_ids).repeat_interleave(images_per_id)
    q_labels = g_labels.repeat_interleave(captions_per_image)
    g = dict(
        embed=norm(centers[g_labels] + torch.randn(len(g_labels), dim, generator=gen)),
        parts=norm(
            part_centers[g_labels]
            + torch.randn(len(g_labels), parts, dim, generator=gen)
        ),
        labels=g_labels,
    )
    q = dict(
        embed=norm(centers[q_labels] + torch.randn(len(q_labels), dim, generator=gen)),
        parts=norm(
            part_centers[q_labels]
            + 1.5 * torch.randn(len(q_labels), parts, dim, generator=gen)
        ),
        labels=q_labels,
    )
    return g, q


def to_samples(g, q, fusion_weight=0.5, with_parts=True):
    """DataSamples as TBPSRetriever.predict returns them, in dataset order."""
    samples = []
    for i in range(len(g['labels'])):
        s = DataSample().set_gt_label(int(g['labels'][i]))
        s.set_metainfo(
            dict(
                sample_idx=i,
                modality='image',
                img_path=f'img_{i}.jpg',
                fusion_weight=fusion_weight,
            )
        )
        s.set_field(g['embed'][i], 'img_embed')
        if with_parts:
            s.set_field(g['parts'][i], 'img_part_embeds')
        samples.append(s)
    offset = len(samples)
    for i in range(len(q['labels'])):
        s = DataSample().set_gt_label(int(q['labels'][i]))
        s.set_metainfo(
            dict(
                sample_idx=offset + i,
                modality='text',
                text=f'caption {i}',
                fusion_weight=fusion_weight,
            )
        )
        s.set_field(q['embed'][i], 'text_embed')
        if with_parts:
            s.set_field(q['parts'][i], 'text_part_embeds')
        samples.append(s)
    return samples


def fused(q, g, weight):
    return (
        q['embed'] @ g['embed'].T
        + weight
        * torch.einsum('qkd,gkd->qg', q['parts'], g['parts'])
        / q['parts'].shape[1]
    )


def run_metric(metric, samples, batch_size=5):
    for start in range(0, len(samples), batch_size):
        metric.process(None, samples[start : start + batch_size])
    return metric.evaluate(len(samples))


def test_reports_fused_coarse_parts_rows():
    g, q = make_problem()
    metric = METRICS.build(dict(type='TBPSRetrievalMetric', i2t=True))
    out = run_metric(metric, to_samples(g, q, fusion_weight=0.5))
    expected = {
        't2i': rank_metrics(fused(q, g, 0.5), q['labels'], g['labels']),
        't2i-coarse': rank_metrics(q['embed'] @ g['embed'].T, q['labels'], g['labels']),
        't2i-parts': rank_metrics(
            torch.einsum('qkd,gkd->qg', q['parts'], g['parts']) / 3,
            q['labels'],
            g['labels'],
        ),
        'i2t': rank_metrics(fused(g, q, 0.5), g['labels'], q['labels']),
    }
    for task, values in expected.items():
        for key, value in values.items():
            assert out[f'{task}/{key}'] == pytest.approx(value, abs=1e-9)
    assert set(out) == {f'{t}/{k}' for t in expected for k in expected['t2i']}
    # The metric's chunking does not change its numbers.
    chunked = run_metric(
        TBPSRetrievalMetric(i2t=True, chunk_size=4), to_samples(g, q, 0.5)
    )
    assert chunked == out


def test_fusion_weight_override_and_no_parts():
    g, q = make_problem()
    out = run_metric(
        TBPSRetrievalMetric(fusion_weight=2.0), to_samples(g, q, fusion_weight=0.5)
    )
    expected = rank_metrics(fused(q, g, 2.0), q['labels'], g['labels'])
    assert out['t2i/mAP'] == pytest.approx(expected['mAP'], abs=1e-9)
    # A global-only model (K = 0): no parts row, fused equals coarse.
    out = run_metric(TBPSRetrievalMetric(), to_samples(g, q, with_parts=False))
    assert not any(k.startswith('t2i-parts/') for k in out)
    assert out['t2i/R1'] == out['t2i-coarse/R1']


def test_duplicates_by_sample_idx_are_dropped():
    g, q = make_problem()
    samples = to_samples(g, q)
    reference = run_metric(TBPSRetrievalMetric(), samples)
    metric = TBPSRetrievalMetric()
    metric.process(None, samples)
    metric.process(None, samples[:3] + samples[-2:])  # e.g. sampler padding
    assert metric.compute_metrics(list(metric.results)) == reference


def test_keep_ranked_lists():
    g, q = make_problem()
    metric = TBPSRetrievalMetric(keep_ranked=4)
    run_metric(metric, to_samples(g, q, 0.5))
    ranked = metric.ranked_results
    sim = fused(q, g, 0.5)
    assert ranked['indices'].shape == (len(q['labels']), 4)
    assert torch.equal(ranked['indices'], sim.topk(4, dim=1).indices)
    assert ranked['queries'][0]['text'] == 'caption 0'
    assert ranked['gallery'][ranked['indices'][0, 0]]['img_path'].startswith('img_')
    assert ranked['ap'].shape == (len(q['labels']),)
    assert ((ranked['ap'] > 0) & (ranked['ap'] <= 1)).all()


def test_rerank_row_matches_functional():
    g, q = make_problem(num_ids=8, images_per_id=4)
    cfg = dict(k1=6, k2=2, lambda_value=0.3)
    out = run_metric(
        TBPSRetrievalMetric(rerank=True, rerank_cfg=cfg, keep_ranked=3),
        to_samples(g, q, 1.0),
    )
    reranked = k_reciprocal_rerank(fused(q, g, 1.0), fused(g, g, 1.0), **cfg)
    expected = rank_metrics(reranked, q['labels'], g['labels'])
    for key, value in expected.items():
        assert out[f't2i-rerank/{key}'] == pytest.approx(value, abs=1e-9)


def test_bad_input_errors():
    g, q = make_problem()
    samples = to_samples(g, q)
    metric = TBPSRetrievalMetric()
    with pytest.raises(ValueError, match='both are needed'):
        metric.compute_metrics([metric._record(s.to_dict()) for s in samples[:5]])
    pair = samples[0].clone()
    pair.set_metainfo(dict(modality='pair'))
    with pytest.raises(ValueError, match="modality 'pair'"):
        metric.process(None, [pair])
    broken = DataSample().set_gt_label(1)
    broken.set_metainfo(dict(sample_idx=3, modality='text'))
    with pytest.raises(KeyError, match='sample 3 .*text_embed'):
        metric.process(None, [broken])
    with pytest.raises(ValueError, match='unknown keys'):
        TBPSRetrievalMetric(rerank_cfg=dict(k3=1))
    no_weight = [s.clone() for s in samples]
    for s in no_weight:
        s.set_metainfo(dict(fusion_weight=None))
    with pytest.raises(ValueError, match='no fusion_weight'):
        TBPSRetrievalMetric().compute_metrics(
            [metric._record(s.to_dict()) for s in no_weight]
        )


def test_results_table():
    table = format_retrieval_table(
        {
            't2i/R1': 50.0,
            't2i/R10': 90.0,
            't2i/R5': 75.5,
            't2i/mAP': 40.0,
            't2i/mINP': 20.0,
            'val/t2i-coarse/R1': 45.0,
        }
    )
    lines = table.splitlines()
    assert lines[0].split('|')[1:-1] == [
        ' task           ',
        ' R1    ',
        ' R5    ',
        ' R10   ',
        ' mAP   ',
        ' mINP  ',
    ]
    assert '| t2i            | 50.00 | 75.50 | 90.00 | 40.00 | 20.00 |' in lines
    assert lines[-1].startswith('| val/t2i-coarse | 45.00 | -')


TEST_CONFIG = """
default_scope = 'tbps_mm'
runner_type = 'TBPSRunner'
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
    fusion_weight=0.5)
test_pipeline = [
    dict(type='ImagePipeline', transforms=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 96))]),
    dict(type='NormalizeCaption'),
    dict(type='TokenizeCaption', tokenizer={tokenizer!r}, max_length=16),
    dict(type='PackTBPSInputs'),
]
test_dataloader = dict(
    batch_size=3, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='CUHKPEDES', data_root={data_root!r}, split='test',
                 pipeline=test_pipeline))
test_evaluator = dict(type='TBPSRetrievalMetric')
test_cfg = dict(type='TestLoop')
"""


def test_tools_test_end_to_end(tmp_path, monkeypatch, capsys):
    """tools/test.py: MMEngine's TestLoop encodes each gallery image once."""
    import importlib.util
    import json
    from pathlib import Path

    from fixtures_tbps import CAPTION_WORDS, make_tbps_fixture, make_tiny_tokenizer
    from mmengine.config import Config

    from tbps_mm.models.retrievers import TBPSRetriever
    from tbps_mm.registry import MODELS

    spec = {'test': [(12, 2), (10, 3), (11, 1), (14, 2)]}  # 8 images, 16 captions
    fixture = make_tbps_fixture(tmp_path, 'cuhk', spec=spec, image_size=(96, 32))
    config = tmp_path / 'tiny_test.py'
    config.write_text(
        TEST_CONFIG.format(
            vocab=len(CAPTION_WORDS) + 5,
            tokenizer=make_tiny_tokenizer(tmp_path / 'tokenizer'),
            data_root=fixture['data_root'],
        )
    )
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    checkpoint = tmp_path / 'tiny.pth'
    torch.save(model.state_dict(), checkpoint)

    encoded = {'images': 0, 'texts': 0}
    encode_image, encode_text = TBPSRetriever.encode_image, TBPSRetriever.encode_text

    def count_image(self, images):
        encoded['images'] += images.shape[0]
        return encode_image(self, images)

    def count_text(self, ids, mask):
        encoded['texts'] += ids.shape[0]
        return encode_text(self, ids, mask)

    monkeypatch.setattr(TBPSRetriever, 'encode_image', count_image)
    monkeypatch.setattr(TBPSRetriever, 'encode_text', count_text)
    # The Runner formats its config with yapf three times, which is slow on a
    # small CPU; the test does not read that text.
    monkeypatch.setattr(Config, 'pretty_text', property(lambda self: self.text))
    tool = Path(__file__).resolve().parents[1] / 'tools' / 'test.py'
    module_spec = importlib.util.spec_from_file_location('test_tool', tool)
    test_tool = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(test_tool)
    out_json = tmp_path / 'ranked.json'
    show_dir = tmp_path / 'vis'
    code = test_tool.main(
        [str(config), str(checkpoint), '--work-dir', str(tmp_path / 'work')]
        + ['--out', str(out_json), '--show-dir', str(show_dir), '--show-topk', '5']
        + ['--i2t']
    )
    assert code == 0
    assert encoded == {'images': 8, 'texts': 16}  # each item encoded once
    # The metric logs the table (console and log file); the tool adds no copy.
    printed = capsys.readouterr().out
    assert printed.count('| task') == 1
    assert '| t2i ' in printed and '| i2t ' in printed
    log_files = list((tmp_path / 'work').glob('*/*.log'))
    assert len(log_files) == 1 and '| i2t ' in log_files[0].read_text()

    result = json.loads(out_json.read_text())
    queries = result['queries']
    assert len(queries) == 16
    for entry in queries:
        assert len(entry['topk']) == 5
        assert entry['caption']
        for item in entry['topk']:
            assert os.path.isfile(item['img_path'])
            assert item['correct'] == (item['gt_label'] == entry['gt_label'])
    r1 = 100.0 * sum(e['first_correct_rank'] == 1 for e in queries) / 16
    assert result['metrics']['t2i/R1'] == pytest.approx(r1)
    mean_ap = 100.0 * sum(e['ap'] for e in queries) / 16
    assert result['metrics']['t2i/mAP'] == pytest.approx(mean_ap)
    figures = sorted(p.name for p in show_dir.iterdir())
    assert len(figures) == 16
    aps = [float(name.split('_ap')[1].split('_')[0]) for name in figures]
    assert aps == sorted(aps)  # worst first


def test_ranked_list_hook_reads_the_lists_the_metric_publishes(tmp_path):
    import json
    from types import SimpleNamespace

    from mmengine.logging import MessageHub, MMLogger

    from tbps_mm.engine import RankedListHook
    from tbps_mm.evaluation.metrics import RANKED_LISTS_INFO

    with pytest.raises(ValueError, match='out_file, show_dir or both'):
        RankedListHook()
    hub = MessageHub.get_instance('ranked_list_hook_test')
    runner = SimpleNamespace(
        message_hub=hub,
        logger=MMLogger.get_instance('ranked_list_hook_test'),
        visualizer=None,
    )
    hook = RankedListHook(out_file=str(tmp_path / 'ranked.json'), topk=2)
    with pytest.raises(RuntimeError, match='keep_ranked >= 2'):
        hook.after_test_epoch(runner, {})
    # The metric publishes in the current message hub (the runner's in a run).
    g, q = make_problem()
    metric = TBPSRetrievalMetric(keep_ranked=2)
    metrics = run_metric(metric, to_samples(g, q, 0.5))
    runner.message_hub = MessageHub.get_current_instance()
    assert runner.message_hub.get_info(RANKED_LISTS_INFO) is metric.ranked_results
    hook.after_test_epoch(runner, metrics)
    written = json.loads((tmp_path / 'ranked.json').read_text())
    assert written['metrics'] == pytest.approx(metrics)
    assert len(written['queries']) == len(q['labels'])
    assert all(len(entry['topk']) == 2 for entry in written['queries'])
