"""TBPSDataPreprocessor: pure and mixed batches, normalisation, devices."""

import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmpretrain.structures import DataSample

import tbps_mm  # noqa: F401
from tbps_mm.datasets.transforms import PackTBPSInputs
from tbps_mm.models.data_preprocessors import TBPSDataPreprocessor
from tbps_mm.registry import MODELS

L = 6


def _item(idx, image=True, text=True, colour=(10, 20, 30)):
    """A packed item like PackTBPSInputs makes (uint8 BGR image, tokens)."""
    results = dict(sample_idx=idx, gt_label=idx % 3, image_id=idx)
    if image:
        img = torch.empty(8, 4, 3, dtype=torch.uint8)
        img[...] = torch.tensor(colour, dtype=torch.uint8)  # B, G, R
        results.update(img_path=f'{idx}.jpg', img=img.numpy())
    if text:
        results.update(
            text=f'caption {idx}',
            text_ids=torch.full((L,), idx).numpy(),
            text_mask=torch.ones(L, dtype=torch.long).numpy(),
        )
    return PackTBPSInputs()(results)


def _batch(items):
    return pseudo_collate(items)


def test_registered_and_defaults_are_clip():
    pre = MODELS.build(dict(type='TBPSDataPreprocessor'))
    assert isinstance(pre, TBPSDataPreprocessor)
    assert torch.allclose(pre.mean.flatten(), torch.tensor([122.77, 116.75, 104.09]))
    assert torch.allclose(pre.std.flatten(), torch.tensor([68.50, 66.63, 70.32]))


def test_pair_batch_normalises_bgr_to_rgb():
    pre = TBPSDataPreprocessor(mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0))
    out = pre(_batch([_item(0, colour=(10, 20, 30)), _item(1, colour=(50, 60, 70))]))
    inputs = out['inputs']
    assert (
        inputs['images'].shape == (2, 3, 8, 4)
        and inputs['images'].dtype == torch.float32
    )
    # BGR (10, 20, 30) -> RGB (30, 20, 10) -> ((30-1)/2, (20-2)/4, (10-3)/8)
    assert torch.allclose(
        inputs['images'][0, :, 0, 0], torch.tensor([14.5, 4.5, 0.875])
    )
    assert torch.allclose(
        inputs['images'][1, :, 3, 2], torch.tensor([34.5, 14.5, 5.875])
    )
    assert inputs['text_ids'].shape == inputs['text_mask'].shape == (2, L)
    assert inputs['text_ids'].dtype == torch.long
    assert inputs['text_ids'][:, 0].tolist() == [0, 1]
    assert inputs['image_index'].tolist() == inputs['text_index'].tolist() == [0, 1]
    assert all(isinstance(s, DataSample) for s in out['data_samples'])


def test_to_rgb_false_keeps_channel_order():
    pre = TBPSDataPreprocessor(mean=(0, 0, 0), std=(1, 1, 1), to_rgb=False)
    out = pre(_batch([_item(0, text=False, colour=(10, 20, 30))]))
    assert out['inputs']['images'][0, :, 0, 0].tolist() == [10.0, 20.0, 30.0]


def test_mixed_batch_indices_point_at_data_samples():
    items = [
        _item(0, text=False),
        _item(1, image=False),
        _item(2),
        _item(3, text=False),
        _item(4, image=False),
    ]
    out = TBPSDataPreprocessor()(_batch(items))
    inputs = out['inputs']
    assert inputs['image_index'].tolist() == [0, 2, 3]
    assert inputs['text_index'].tolist() == [1, 2, 4]
    assert inputs['images'].shape == (3, 3, 8, 4)
    assert inputs['text_ids'][:, 0].tolist() == [1, 2, 4]
    samples = out['data_samples']
    assert [samples[i].sample_idx for i in inputs['text_index'].tolist()] == [1, 2, 4]


def test_pure_image_and_pure_text_batches():
    pre = TBPSDataPreprocessor()
    images = pre(_batch([_item(i, text=False) for i in range(3)]))['inputs']
    assert images['images'].shape == (3, 3, 8, 4)
    assert images['text_ids'] is None and images['text_mask'] is None
    assert (
        images['text_index'].dtype == torch.long and images['text_index'].numel() == 0
    )
    texts = pre(_batch([_item(i, image=False) for i in range(3)]))['inputs']
    assert texts['images'] is None and texts['image_index'].numel() == 0
    assert texts['text_ids'].shape == (3, L) and texts['text_index'].tolist() == [
        0,
        1,
        2,
    ]


def test_stacked_inputs_are_accepted():
    # A default_collate'd pure batch arrives stacked instead of as lists.
    pre = TBPSDataPreprocessor()
    listed = pre(_batch([_item(0), _item(1)]))['inputs']
    batch = _batch([_item(0), _item(1)])
    batch['inputs'] = {k: torch.stack(v) for k, v in batch['inputs'].items()}
    stacked = pre(batch)['inputs']
    assert torch.equal(listed['images'], stacked['images'])
    assert torch.equal(listed['text_ids'], stacked['text_ids'])


def test_different_image_sizes_are_a_clear_error():
    small = _item(0, text=False)
    big = _item(1, text=False)
    big['inputs']['img'] = torch.zeros(3, 16, 4, dtype=torch.uint8)
    with pytest.raises(
        ValueError,
        match=r'images of one batch must share one shape.*sample 1: \(3, 16, 4\)',
    ):
        TBPSDataPreprocessor()(_batch([small, big]))


def test_mismatched_ids_and_mask_are_an_error():
    a, b = _item(0), _item(1)
    b['inputs']['text_mask'] = None
    with pytest.raises(ValueError, match='text_ids and text_mask'):
        TBPSDataPreprocessor()(_batch([a, b]))


def test_outputs_follow_the_preprocessor_device():
    # The meta device stands in for an accelerator: every output tensor and
    # data sample must be moved there, without touching real memory.
    pre = TBPSDataPreprocessor().to('meta')
    out = pre(_batch([_item(0), _item(1, image=False)]))
    inputs = out['inputs']
    for key in ('images', 'image_index', 'text_ids', 'text_mask', 'text_index'):
        assert inputs[key].device.type == 'meta', key
    assert out['data_samples'][0].gt_label.device.type == 'meta'


def _padded_text_item(idx, length):
    """A caption item of ``length`` real tokens padded to L + 4 with zeros."""
    ids = torch.zeros(L + 4, dtype=torch.long)
    ids[:length] = torch.arange(length) + 5
    mask = (ids != 0).long()
    results = dict(sample_idx=idx, gt_label=idx, text=f'caption {idx}')
    results.update(text_ids=ids.numpy(), text_mask=mask.numpy())
    return PackTBPSInputs()(results)


def test_trailing_padding_columns_are_trimmed_and_outputs_unchanged():
    from model_fixtures import tiny_retriever_cfg

    batch = _batch([_padded_text_item(0, 3), _padded_text_item(1, 5)])
    trimmed = TBPSDataPreprocessor()(batch)['inputs']
    full = TBPSDataPreprocessor(trim_text=False)(batch)['inputs']
    # Only the columns that are padding in every caption go.
    assert trimmed['text_ids'].shape == (2, 5)
    assert full['text_ids'].shape == (2, L + 4)
    assert torch.equal(trimmed['text_ids'], full['text_ids'][:, :5])
    assert torch.equal(trimmed['text_mask'], full['text_mask'][:, :5])
    model = MODELS.build(tiny_retriever_cfg()).eval()
    with torch.no_grad():
        a = model.encode_text(trimmed['text_ids'], trimmed['text_mask'])
        b = model.encode_text(full['text_ids'], full['text_mask'])
    torch.testing.assert_close(a['embed'], b['embed'], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a['part_embeds'], b['part_embeds'], atol=1e-5, rtol=1e-5)
    # The model returns attention over exactly the columns it was given: the
    # trimmed batch's maps match its ids, the untrimmed maps are zero beyond.
    assert a['attn'].shape[-1] == trimmed['text_ids'].shape[1]
    assert b['attn'].shape[-1] == full['text_ids'].shape[1]
    torch.testing.assert_close(a['attn'], b['attn'][..., :5], atol=1e-5, rtol=1e-5)
    assert torch.all(b['attn'][..., 5:] == 0)
