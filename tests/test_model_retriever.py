"""TBPSRetriever: loss / predict / tensor modes, gradients, encoders, the
similarity, backbone adaptation and a real data-preprocessor batch."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from model_fixtures import (
    EMBED,
    NUM_PARTS,
    captions,
    images,
    pair_batch,
    tiny_retriever_cfg,
)

from tbps_mm.datasets.transforms import PackTBPSInputs
from tbps_mm.registry import MODELS


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    return MODELS.build(tiny_retriever_cfg())


# Stages 2 and 3 of a slim ResNet at 64x32: 8x4 (32 ch) and 4x2 (64 ch).
TWO_STAGE_RESNET = dict(
    type='mmpretrain.ResNet',
    depth=18,
    base_channels=16,
    stem_channels=16,
    num_stages=3,
    strides=(1, 2, 2),
    dilations=(1, 1, 1),
    out_indices=(1, 2),
)


def test_loss_keys_and_gradients_reach_every_part(model):
    model.zero_grad()
    inputs, samples = pair_batch(6)
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss_sdm', 'loss_id', 'loss_cmr'}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in (
        'head.part_queries',
        'head.decoder.0.cross_attn.q_proj.weight',
        'head.image_token_proj.0.weight',
        'head.text_token_proj.0.weight',
        'head.image_coarse_proj.weight',
        'head.text_coarse_proj.weight',
        'head.part_proj.weight',
        'image_encoder.patch_embed.projection.weight',
        'image_encoder.layers.0.attn.qkv.weight',
        'text_encoder.model.embeddings.word_embeddings.weight',
        'text_encoder.model.encoder.layer.0.attention.self.query.weight',
        'losses.id.classifier.weight',
    ):
        grad = params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_cmr_gradient_alone_reaches_part_queries_and_both_encoders(model):
    model.zero_grad()
    inputs, samples = pair_batch(6)
    model(inputs, samples, mode='loss')['loss_cmr'].backward()
    assert model.head.part_queries.grad.abs().sum() > 0
    assert model.image_encoder.layers[1].attn.qkv.weight.grad.abs().sum() > 0
    text_layer = model.text_encoder.model.encoder.layer[0]
    assert text_layer.attention.self.query.weight.grad.abs().sum() > 0
    # Coarse projections are not used by the part loss.
    assert model.head.image_coarse_proj.weight.grad is None


def test_encoders_return_normalised_embeddings_and_maps(model):
    model.eval()
    img = model.encode_image(images(3))
    ids, mask = captions(3)
    txt = model.encode_text(ids, mask)
    assert img['embed'].shape == (3, EMBED) and txt['embed'].shape == (3, EMBED)
    assert img['part_embeds'].shape == (3, NUM_PARTS, EMBED)
    assert txt['part_embeds'].shape == (3, NUM_PARTS, EMBED)
    for out in (img, txt):
        torch.testing.assert_close(out['embed'].norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(
            out['part_embeds'].norm(dim=-1), torch.ones(3, NUM_PARTS)
        )
    # 96x32 images, patch 16: a 6x2 grid of patch tokens (CLS excluded).
    assert img['attn'].shape == (3, NUM_PARTS, 12) and img['attn_hw'] == (6, 2)
    assert txt['attn'].shape == (3, NUM_PARTS, ids.shape[1])
    # The model encodes the columns it is given (trimming is the data
    # preprocessor's): extra padding columns come back in the maps, with zero
    # attention, and change no embedding.
    padded = model.encode_text(
        torch.cat([ids, torch.zeros(3, 5, dtype=ids.dtype)], 1),
        torch.cat([mask, torch.zeros(3, 5, dtype=mask.dtype)], 1),
    )
    torch.testing.assert_close(padded['part_embeds'], txt['part_embeds'])
    torch.testing.assert_close(padded['attn'][..., : ids.shape[1]], txt['attn'])
    assert padded['attn'].shape[-1] == ids.shape[1] + 5
    assert torch.all(padded['attn'][..., ids.shape[1] :] == 0)
    # s = s_coarse + lambda * mean_k s_k
    sim = model.similarity(txt, img)
    coarse = txt['embed'] @ img['embed'].t()
    parts = torch.einsum('qkd,gkd->qgk', txt['part_embeds'], img['part_embeds'])
    torch.testing.assert_close(sim, coarse + 0.5 * parts.mean(-1))
    torch.testing.assert_close(model.similarity(txt, img, fusion_weight=0), coarse)


def test_fused_embedding_dot_product_is_the_test_time_score(model):
    model.eval()
    img = model.encode_image(images(3))
    txt = model.encode_text(*captions(4))
    for weight in (None, 0.0, 2.0):
        fused = model.fused_embed(txt, weight) @ model.fused_embed(img, weight).t()
        torch.testing.assert_close(fused, model.similarity(txt, img, weight))
    # Unnormalised head outputs give the same vector: it normalises first.
    raw = model._embed_image(images(3))
    torch.testing.assert_close(model.fused_embed(raw), model.fused_embed(img))
    assert model.fused_embed(img, 0.0).shape == (3, EMBED)
    with pytest.raises(ValueError, match='fusion_weight >= 0'):
        model.fused_embed(img, -1.0)


def test_sdm_on_the_fused_embedding_trains_coarse_and_part_branches():
    cfg = tiny_retriever_cfg(
        losses=dict(
            id=None,
            cmr=None,
            sdm=dict(type='SDMLoss', input_key='fused_embed'),
        )
    )
    model = MODELS.build(cfg)
    inputs, samples = pair_batch(6)
    model(inputs, samples, mode='loss')['loss_sdm'].backward()
    assert model.head.part_queries.grad.abs().sum() > 0
    assert model.head.image_coarse_proj.weight.grad.abs().sum() > 0
    # Without parts the fused embedding is the coarse one.
    plain = MODELS.build(
        tiny_retriever_cfg(head=dict(num_parts=0), losses=dict(id=None, cmr=None))
    )
    fused = MODELS.build(
        tiny_retriever_cfg(
            head=dict(num_parts=0),
            losses=dict(id=None, cmr=None, sdm=dict(input_key='fused_embed')),
        )
    )
    fused.load_state_dict(plain.state_dict())
    fused.eval(), plain.eval()  # the same (running) BN statistics and no dropout
    torch.testing.assert_close(
        fused(inputs, samples, mode='loss')['loss_sdm'],
        plain(inputs, samples, mode='loss')['loss_sdm'],
    )
    with pytest.raises(ValueError, match='input_key must be one of'):
        MODELS.build(dict(type='SDMLoss', input_key='attn'))


def test_predict_image_only_text_only_and_mixed_batches(model):
    model.eval()
    gallery = dict(images=images(3), image_index=torch.arange(3), text_ids=None)
    out = model(gallery, None, mode='predict')
    assert len(out) == 3
    assert out[0].img_embed.shape == (EMBED,)
    assert out[0].img_part_embeds.shape == (NUM_PARTS, EMBED)
    assert 'text_embed' not in out[0] and out[0].fusion_weight == 0.5
    ids, mask = captions(4)
    queries = dict(
        images=None, text_ids=ids, text_mask=mask, text_index=torch.arange(4)
    )
    out = model(queries, None, mode='predict')
    assert len(out) == 4 and out[3].text_part_embeds.shape == (NUM_PARTS, EMBED)
    assert 'img_embed' not in out[3]
    # Mixed: samples 0 and 2 are images, 1 and 3 captions.
    mixed = dict(
        images=images(2),
        image_index=torch.tensor([0, 2]),
        text_ids=ids[:2],
        text_mask=mask[:2],
        text_index=torch.tensor([1, 3]),
    )
    _, samples = pair_batch(4)
    out = model(mixed, samples, mode='predict')
    assert out is samples
    assert 'img_embed' in out[0] and 'text_embed' not in out[0]
    assert 'text_embed' in out[3] and 'img_embed' not in out[3]
    torch.testing.assert_close(
        out[1].text_embed, model.encode_text(ids[:1], mask[:1])['embed'][0]
    )


def test_tensor_mode(model):
    inputs, _ = pair_batch(2)
    out = model(inputs, mode='tensor')
    assert set(out) == {
        'img_embed',
        'img_part_embeds',
        'img_attn',
        'text_embed',
        'text_part_embeds',
        'text_attn',
    }


def test_global_only_model_and_disabled_losses():
    cfg = tiny_retriever_cfg(
        head=dict(num_parts=0), losses=dict(cmr=None), fusion_weight=0.0
    )
    model = MODELS.build(cfg)
    inputs, samples = pair_batch(4)
    assert set(model(inputs, samples, mode='loss')) == {'loss_sdm', 'loss_id'}
    model.eval()
    out = model(inputs, samples, mode='predict')
    assert out[0].img_part_embeds.shape == (0, EMBED)
    with pytest.raises(ValueError, match='needs part outputs .* num_parts=0'):
        MODELS.build(tiny_retriever_cfg(head=dict(num_parts=0)))


def test_cnn_backbone_map_becomes_tokens():
    cfg = tiny_retriever_cfg(head=dict(image_in_channels=512))
    cfg['image_encoder'] = dict(type='mmpretrain.ResNet', depth=18, out_indices=(3,))
    model = MODELS.build(cfg).eval()
    out = model.encode_image(torch.randn(2, 3, 64, 32))
    # ResNet stride 32: a 2x1 map -> 2 tokens, pooled = their mean.
    assert out['attn'].shape == (2, NUM_PARTS, 2)
    assert out['embed'].shape == (2, EMBED)


def test_channels_last_cnn_gives_the_same_outputs_and_keeps_its_layout():
    # 3 ResNet-18 stages from 16 base channels: a 64-channel map.
    cfg = tiny_retriever_cfg(head=dict(image_in_channels=64))
    cfg['image_encoder'] = dict(TWO_STAGE_RESNET, out_indices=(2,))
    torch.manual_seed(0)
    plain = MODELS.build(cfg).eval()
    fast = MODELS.build(dict(cfg, channels_last=True)).eval()
    fast.load_state_dict(plain.state_dict())
    conv = fast.image_encoder.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        a, b = plain.encode_image(x), fast.encode_image(x)
    for key in ('embed', 'part_embeds', 'attn'):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_bad_configs_and_batches_are_clear_errors(model):
    with pytest.raises(ValueError, match="out_type='cls_token'"):
        MODELS.build(tiny_retriever_cfg(image_encoder=dict(out_type='cls_token')))
    ids, mask = captions(2)
    text_only = dict(
        images=None, text_ids=ids, text_mask=mask, text_index=torch.arange(2)
    )
    _, samples = pair_batch(2)
    with pytest.raises(ValueError, match='lacks images'):
        model(text_only, samples, mode='loss')
    with pytest.raises(ValueError, match='mode must be'):
        model(text_only, samples, mode='train')


def _packed_item(index: int, modality: str, label: int) -> dict:
    rng = np.random.default_rng(index)
    ids, mask = captions(1, seed=index)
    item = dict(gt_label=label, sample_idx=index, image_id=index, person_id=label)
    if modality in ('pair', 'image'):
        item['img'] = rng.integers(0, 255, (96, 32, 3), dtype=np.uint8)
        item['img_path'] = f'img_{index}.jpg'
    if modality in ('pair', 'text'):
        item.update(text='a person', text_ids=ids[0].numpy(), text_mask=mask[0].numpy())
    item['modality'] = modality
    return PackTBPSInputs()(item)


def test_real_data_preprocessor_batches_run_through_train_and_val_steps():
    torch.manual_seed(0)
    model = MODELS.build(tiny_retriever_cfg())
    train = pseudo_collate([_packed_item(i, 'pair', i % 3) for i in range(4)])
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    log = model.train_step(train, optim)
    assert set(log) == {'loss', 'loss_sdm', 'loss_id', 'loss_cmr'}
    model.eval()
    mixed = pseudo_collate(
        [
            _packed_item(0, 'image', 0),
            _packed_item(1, 'text', 1),
            _packed_item(2, 'image', 1),
        ]
    )
    out = model.val_step(mixed)
    assert [('img_embed' in s, 'text_embed' in s) for s in out] == [
        (True, False),
        (False, True),
        (True, False),
    ]
    assert out[1].gt_label.item() == 1 and out[1].fusion_weight == 0.5


def test_image_pooling_mean_uses_patch_tokens_not_cls():
    from model_fixtures import tiny_retriever_cfg as cfg_fn

    torch.manual_seed(0)
    cls_model = MODELS.build(cfg_fn())
    mean_cfg = cfg_fn()
    mean_cfg['image_pooling'] = 'mean'
    mean_model = MODELS.build(mean_cfg)
    mean_model.load_state_dict(cls_model.state_dict())
    x = images(2)
    feats = cls_model.image_encoder(x)[-1]
    torch.testing.assert_close(cls_model._image_features(x)['pooled'], feats[:, 0])
    torch.testing.assert_close(
        mean_model._image_features(x)['pooled'], feats[:, 1:].mean(1)
    )
    bad = cfg_fn()
    bad['image_pooling'] = 'max'
    with pytest.raises(ValueError, match='image_pooling'):
        MODELS.build(bad)


def test_concat_maps_give_the_finest_grid_with_every_stage():
    # Stages 2 and 3 of a slim ResNet at 64x32: 8x4 (32 ch) and 4x2 (64 ch).
    cfg = tiny_retriever_cfg(
        head=dict(image_in_channels=64, image_token_channels=96),
        image_token_maps='concat',
    )
    cfg['image_encoder'] = TWO_STAGE_RESNET
    model = MODELS.build(cfg).eval()
    x = torch.randn(2, 3, 64, 32)
    out = model.encode_image(x)
    assert out['attn'].shape == (2, NUM_PARTS, 32) and out['attn_hw'] == (8, 4)
    with torch.no_grad():
        fine, coarse = model.image_encoder(x)
        feats = model._image_features(x)
    # The head gets the maps, finest first, and the finest grid.
    assert [tuple(m.shape) for m in feats['tokens']] == [(2, 32, 8, 4), (2, 64, 4, 2)]
    torch.testing.assert_close(feats['tokens'][0], fine)
    assert feats['hw'] == (8, 4)
    torch.testing.assert_close(feats['pooled'], coarse.mean(dim=(2, 3)))
    # ... and treats them as the finest grid's tokens, each fine cell with its
    # own features and its coarse parent's.
    up = F.interpolate(coarse, size=(8, 4), mode='nearest')
    tokens = torch.cat([fine, up], dim=1).flatten(2).transpose(1, 2)
    with torch.no_grad():
        from_tokens = model.head(tokens, feats['pooled'], None, 'image', hw=(8, 4))
        from_maps = model.head(feats['tokens'], feats['pooled'], None, 'image')
    for key in ('embed', 'part_embeds', 'attn'):
        torch.testing.assert_close(from_maps[key], from_tokens[key])
    with pytest.raises(ValueError, match='image_token_maps must be one of'):
        MODELS.build(dict(cfg, image_token_maps='fpn'))


def test_first_map_gives_the_finest_grid_alone_and_pools_the_last():
    # Stages 2 and 3 of a slim ResNet at 64x32: 8x4 (32 ch) and 4x2 (64 ch).
    cfg = tiny_retriever_cfg(
        head=dict(image_in_channels=64, image_token_channels=32),
        image_token_maps='first',
    )
    cfg['image_encoder'] = TWO_STAGE_RESNET
    model = MODELS.build(cfg).eval()
    x = torch.randn(2, 3, 64, 32)
    out = model.encode_image(x)
    assert out['attn'].shape == (2, NUM_PARTS, 32) and out['attn_hw'] == (8, 4)
    with torch.no_grad():
        fine, coarse = model.image_encoder(x)
        feats = model._image_features(x)
    torch.testing.assert_close(feats['tokens'], fine.flatten(2).transpose(1, 2))
    assert feats['hw'] == (8, 4)
    torch.testing.assert_close(feats['pooled'], coarse.mean(dim=(2, 3)))
    # The part embeddings are the head's over the finest map's cells alone.
    with torch.no_grad():
        fine_only = model.head(
            fine.flatten(2).transpose(1, 2), feats['pooled'], None, 'image', hw=(8, 4)
        )
    for key in ('part_embeds', 'attn'):
        torch.testing.assert_close(model._normalised(fine_only)[key], out[key])
    # A ViT returns tokens, not maps: a clear error.
    vit = tiny_retriever_cfg(image_token_maps='first')
    with pytest.raises(ValueError, match="image_token_maps='first' needs feature maps"):
        MODELS.build(vit).encode_image(images(2))
