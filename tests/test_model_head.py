"""PartQueryDecoderHead and its attention: shapes, masks, slot competition,
one shared parameter set for both modalities, global-only mode."""

import pytest
import torch
from torch import nn

from tbps_mm.models.heads import PartCrossAttention, PartQueryDecoderHead
from tbps_mm.registry import MODELS


def _head(**kwargs) -> PartQueryDecoderHead:
    cfg = dict(
        type='PartQueryDecoderHead',
        image_in_channels=48,
        text_in_channels=32,
        embed_dims=24,
        num_parts=3,
        decoder_dims=16,
        num_layers=2,
        num_heads=2,
    )
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _text(batch=3, length=7):
    mask = (torch.arange(length)[None] < torch.tensor([[7], [4], [2]])[:batch]).long()
    return torch.randn(batch, length, 32), torch.randn(batch, 32), mask


@pytest.mark.parametrize('attention', ['cross', 'slot'])
def test_output_shapes_and_attention_maps(attention):
    torch.manual_seed(0)
    head = _head(attention=attention)
    img = head(torch.randn(2, 10, 48), torch.randn(2, 48), modality='image')
    assert img['embed'].shape == (2, 24)
    assert img['part_embeds'].shape == (2, 3, 24)
    assert img['attn'].shape == (2, 3, 10)
    torch.testing.assert_close(img['attn'].sum(-1), torch.ones(2, 3))
    tokens, pooled, mask = _text()
    txt = head(tokens, pooled, mask, modality='text')
    assert txt['part_embeds'].shape == (3, 3, 24) and txt['attn'].shape == (3, 3, 7)
    # Padding gets no attention; each query's map sums to 1 over real tokens.
    assert txt['attn'][mask[:, None, :].expand(-1, 3, -1) == 0].abs().max() == 0
    torch.testing.assert_close(txt['attn'].sum(-1), torch.ones(3, 3))
    # Padding does not change the output: drop it and the result is the same.
    short = head(tokens[2:, :2], pooled[2:], mask[2:, :2], modality='text')
    torch.testing.assert_close(short['part_embeds'], txt['part_embeds'][2:])


def _reference_attention(layer, query, tokens, mask):
    """Textbook multi-head attention: keys and values of every token formed."""
    B, K, C = query.shape
    h, dh = layer.num_heads, layer.head_dims
    q = layer.q_proj(query).view(B, K, h, dh).transpose(1, 2)
    k = layer.k_proj(tokens).view(B, -1, h, dh).transpose(1, 2)
    v = layer.v_proj(tokens).view(B, -1, h, dh).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) * dh**-0.5
    valid = mask[:, None, None, :].bool()
    if layer.mode == 'cross':
        weights = logits.masked_fill(~valid, float('-inf')).softmax(-1)
    else:
        weights = logits.softmax(-2) * valid
        weights = weights / (weights.sum(-1, keepdim=True) + layer.eps)
    out = (weights @ v).transpose(1, 2).reshape(B, K, C)
    return layer.out_proj(out), weights.mean(1)


@pytest.mark.parametrize('mode', ['cross', 'slot'])
def test_factored_attention_equals_textbook_attention(mode):
    # The layer never forms keys and values (it projects the queries into
    # token space instead); outputs, maps and gradients must not change.
    torch.manual_seed(0)
    layer = PartCrossAttention(16, 4, mode=mode).double()
    with torch.no_grad():  # nonzero biases: the slot mode keeps q . b_k
        for proj in (layer.k_proj, layer.v_proj):
            proj.bias.normal_()
    query = torch.randn(3, 5, 16, dtype=torch.double, requires_grad=True)
    tokens = torch.randn(3, 7, 16, dtype=torch.double, requires_grad=True)
    mask = (torch.arange(7)[None] < torch.tensor([[7], [4], [2]])).long()
    out, maps = layer(query, tokens, mask)
    ref_out, ref_maps = _reference_attention(layer, query, tokens, mask)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(maps, ref_maps)
    grads = torch.autograd.grad(out.square().sum(), [query, tokens])
    ref_grads = torch.autograd.grad(ref_out.square().sum(), [query, tokens])
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref)


def test_slot_attention_makes_queries_compete_for_tokens():
    attn = PartCrossAttention(2, 1, mode='cross')
    slot = PartCrossAttention(2, 1, mode='slot')
    for layer in (attn, slot):
        with torch.no_grad():
            for proj in (layer.q_proj, layer.k_proj):
                proj.weight.copy_(torch.eye(2))
                proj.bias.zero_()
    scale = 2**0.5  # undo the 1/sqrt(d) scaling: logits A = [5, 0], B = [4, 0]
    query = torch.tensor([[[5.0 * scale, 0.0], [4.0 * scale, 0.0]]])
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    _, cross_maps = attn(query, tokens)
    _, slot_maps = slot(query, tokens)
    # Ordinary attention: both queries look at token 0.
    assert cross_maps[0].argmax(-1).tolist() == [0, 0]
    # Slot attention: A wins token 0, so B moves to token 1.
    assert slot_maps[0].argmax(-1).tolist() == [0, 1]
    torch.testing.assert_close(slot_maps.sum(-1), torch.ones(1, 2))


def test_decoder_is_one_parameter_set_shared_by_both_modalities():
    torch.manual_seed(0)
    head = _head()
    names = [n for n, _ in head.named_parameters()]
    # Per-modality: only the input and coarse projections.
    per_modality = {n.split('.')[0] for n in names if n.startswith(('image_', 'text_'))}
    assert per_modality == {
        'image_token_proj',
        'text_token_proj',
        'image_coarse_proj',
        'text_coarse_proj',
    }
    shared = dict(head.decoder.named_parameters())
    assert head.part_queries.shape == (3, 16) and len(head.decoder) == 2
    # The same tensors receive gradients from an image-only and a text-only loss.
    grads = {}
    for modality, (tokens, pooled, mask) in (
        ('image', (torch.randn(2, 10, 48), torch.randn(2, 48), None)),
        ('text', _text()),
    ):
        head.zero_grad()
        head(tokens, pooled, mask, modality=modality)['part_embeds'].sum().backward()
        grads[modality] = {n: p.grad.clone() for n, p in shared.items()}
        assert head.part_queries.grad.abs().sum() > 0
        assert head.part_proj.weight.grad.abs().sum() > 0
    for name in shared:
        assert grads['image'][name].abs().sum() > 0, name
        assert grads['text'][name].abs().sum() > 0, name
    # Changing one shared weight changes both modalities' part embeddings.
    tokens_i, pooled_i = torch.randn(2, 10, 48), torch.randn(2, 48)
    tokens_t, pooled_t, mask_t = _text()
    before = (
        head(tokens_i, pooled_i, modality='image')['part_embeds'],
        head(tokens_t, pooled_t, mask_t, modality='text')['part_embeds'],
    )
    with torch.no_grad():
        head.decoder[0].cross_attn.v_proj.weight.mul_(2)
    after = (
        head(tokens_i, pooled_i, modality='image')['part_embeds'],
        head(tokens_t, pooled_t, mask_t, modality='text')['part_embeds'],
    )
    assert not torch.allclose(before[0], after[0])
    assert not torch.allclose(before[1], after[1])


def test_global_only_head():
    head = _head(num_parts=0)
    out = head(torch.randn(2, 10, 48), torch.randn(2, 48), modality='image')
    assert out['embed'].shape == (2, 24)
    assert out['part_embeds'].shape == (2, 0, 24) and out['attn'].shape == (2, 0, 10)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in head.modules())


def test_coarse_projection_bias_option():
    assert _head().image_coarse_proj.bias is None
    assert _head(coarse_bias=True).text_coarse_proj.bias is not None


def test_bad_inputs_are_clear_errors():
    head = _head()
    with pytest.raises(ValueError, match='image_in_channels=48'):
        head(torch.randn(2, 10, 40), torch.randn(2, 40), modality='image')
    with pytest.raises(ValueError, match='modality'):
        head(torch.randn(2, 10, 48), torch.randn(2, 48), modality='audio')
    with pytest.raises(ValueError, match='mask has shape'):
        head(torch.randn(2, 7, 32), torch.randn(2, 32), torch.ones(2, 5), 'text')
    with pytest.raises(ValueError, match='attention'):
        _head(attention='hard')


def test_bn_neck_centres_embeddings_over_the_batch_and_stays_per_modality():
    torch.manual_seed(0)
    head = _head(embed_norm='bn')
    # Nearly identical inputs: without the neck the embeddings are too.
    base = torch.randn(1, 10, 48)
    tokens = base + 0.01 * torch.randn(8, 10, 48)
    pooled = tokens.mean(1)
    plain = _head()(tokens, pooled, modality='image')
    out = head(tokens, pooled, modality='image')
    cos = lambda x: nn.functional.cosine_similarity(x[0], x[1], dim=-1)  # noqa: E731
    assert cos(plain['embed']) > 0.99
    assert abs(cos(out['embed'])) < 0.9
    torch.testing.assert_close(out['embed'].mean(0), torch.zeros(24), atol=1e-4, rtol=0)
    parts = out['part_embeds'].flatten(1)
    torch.testing.assert_close(parts.mean(0), torch.zeros(3 * 24), atol=1e-4, rtol=0)
    assert {
        'image_coarse_norm',
        'text_coarse_norm',
        'image_part_norm',
        'text_part_norm',
    } <= {name for name, _ in head.named_children()}
    head.eval()  # running statistics at test time: one sample works
    assert head(tokens[:1], pooled[:1], modality='image')['embed'].shape == (1, 24)
    with pytest.raises(ValueError, match='embed_norm'):
        _head(embed_norm='ln')


def test_lean_layers_have_no_self_attention_or_ffn_and_still_train():
    torch.manual_seed(0)
    head = _head(num_layers=1, self_attention=False, feedforward_ratio=0)
    layer = head.decoder[0]
    assert not hasattr(layer, 'self_attn') and not hasattr(layer, 'ffn')
    out = head(torch.randn(2, 10, 48), torch.randn(2, 48), modality='image')
    assert out['part_embeds'].shape == (2, 3, 24)
    out['part_embeds'].sum().backward()
    assert head.part_queries.grad is not None and head.part_queries.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='feedforward_channels must be >= 0'):
        _head(feedforward_ratio=-1)


def test_sine_grid_embedding_codes_rows_and_columns():
    from tbps_mm.models.heads.part_query_decoder_head import sine_grid_embedding

    code = sine_grid_embedding(4, 3, 8).view(4, 3, 8)
    # Row code (first half) is constant along a row, column code down a column.
    torch.testing.assert_close(code[:, :1, :4].expand(4, 3, 4), code[..., :4])
    torch.testing.assert_close(code[:1, :, 4:].expand(4, 3, 4), code[..., 4:])
    assert not torch.allclose(code[0], code[1]) and not torch.allclose(
        code[:, 0], code[:, 1]
    )
    with pytest.raises(ValueError, match='divisible by 4'):
        sine_grid_embedding(2, 2, 6)


def test_image_position_code_moves_attention_and_needs_the_grid():
    torch.manual_seed(0)
    head = _head(image_pos_embed='sine').eval()
    # Identical tokens: without positions every cell gets the same weight.
    tokens = torch.randn(1, 1, 48).expand(2, 12, 48)
    plain = _head().eval()
    flat = plain(tokens, torch.randn(2, 48), modality='image')['attn']
    torch.testing.assert_close(flat, torch.full_like(flat, 1 / 12))
    placed = head(tokens, torch.randn(2, 48), modality='image', hw=(4, 3))['attn']
    assert placed.std(-1).min() > 1e-4
    with pytest.raises(ValueError, match='needs the token grid'):
        head(tokens, torch.randn(2, 48), modality='image')
    with pytest.raises(ValueError, match='needs the token grid'):
        head(tokens, torch.randn(2, 48), modality='image', hw=(5, 3))
    # Captions have no grid: the text side is unchanged by the option.
    text = _text()
    torch.manual_seed(1)
    a = _head(image_pos_embed='sine')
    torch.manual_seed(1)
    b = _head()
    torch.testing.assert_close(
        a(*text[:2], text[2], modality='text')['attn'],
        b(*text[:2], text[2], modality='text')['attn'],
    )
    with pytest.raises(ValueError, match='image_pos_embed must be one of'):
        _head(image_pos_embed='learned')


def test_image_tokens_may_have_their_own_channels():
    head = _head(image_token_channels=20)
    out = head(torch.randn(2, 10, 20), torch.randn(2, 48), modality='image')
    assert out['attn'].shape == (2, 3, 10)
    with pytest.raises(
        ValueError, match='image_in_channels=48, image_token_channels=20'
    ):
        head(torch.randn(2, 10, 48), torch.randn(2, 48), modality='image')


@pytest.mark.parametrize('coarse_hw', [(4, 3), (3, 2)])
def test_feature_maps_give_the_tokens_of_their_upsampled_concatenation(coarse_hw):
    # A fine 8x6 map and a coarse one, at an even (4x3) and an uneven (3x2)
    # ratio: the head projects each at its own resolution, which must equal
    # projecting the nearest-upsampled, concatenated maps, values and grads.
    torch.manual_seed(0)
    head = _head(
        image_token_channels=20,
        image_pos_embed='sine',
        image_spatial_prior='gaussian',
        attn_logit_cap=2.0,
    )
    fine = torch.randn(2, 8, 8, 6, requires_grad=True)
    coarse = torch.randn(2, 12, *coarse_hw, requires_grad=True)
    pooled = torch.randn(2, 48)
    up = torch.nn.functional.interpolate(coarse, size=(8, 6), mode='nearest')
    tokens = torch.cat([fine, up], dim=1).flatten(2).transpose(1, 2)
    reference = head(tokens, pooled, modality='image', hw=(8, 6))
    grads_ref = torch.autograd.grad(
        reference['part_embeds'].square().sum(), [fine, coarse, head.part_queries]
    )
    out = head([fine, coarse], pooled, modality='image')
    for key in ('embed', 'part_embeds', 'attn'):
        torch.testing.assert_close(out[key], reference[key])
    grads = torch.autograd.grad(
        out['part_embeds'].square().sum(), [fine, coarse, head.part_queries]
    )
    for got, want in zip(grads, grads_ref):
        # Summed in another order: float32 rounding only.
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_bad_feature_maps_are_clear_errors():
    head = _head(image_token_channels=20)
    pooled = torch.randn(2, 48)
    fine, coarse = torch.randn(2, 8, 8, 6), torch.randn(2, 12, 4, 3)
    with pytest.raises(ValueError, match='28 channels in all.*image_token_channels=20'):
        head([fine, torch.randn(2, 20, 4, 3)], pooled, modality='image')
    with pytest.raises(ValueError, match='the text modality takes tokens'):
        head([fine, coarse], torch.randn(2, 32), modality='text')
    with pytest.raises(ValueError, match='must be \\(B, C, H, W\\) tensors'):
        head([fine, coarse.flatten(2)], pooled, modality='image')
    with pytest.raises(ValueError, match='different batch sizes'):
        head([fine, coarse[:1]], pooled, modality='image')
    with pytest.raises(ValueError, match='take no padding mask'):
        head([fine, coarse], pooled, torch.ones(2, 48), modality='image')
    with pytest.raises(ValueError, match='pooled feature must be'):
        head([fine, coarse], torch.randn(2, 20), modality='image')


def test_gaussian_prior_logits_peak_at_each_centre():
    from tbps_mm.models.heads.part_query_decoder_head import gaussian_prior_logits

    centres = torch.tensor([[0.125, 0.5], [0.875, 0.25]])
    logits = gaussian_prior_logits(centres, torch.full((2, 2), 0.1), 4, 2)
    assert logits.shape == (2, 8)
    # Cell centres: rows at 1/8, 3/8, 5/8, 7/8; columns at 1/4, 3/4.
    assert logits[0].view(4, 2)[0].max() == logits[0].max()
    assert logits[1].argmax() == 6  # row 3, column 0
    # One standard deviation away costs exactly 0.5 in log space.
    one_sd = gaussian_prior_logits(
        torch.tensor([[0.125, 0.25]]), torch.tensor([[0.25, 10.0]]), 4, 2
    ).view(4, 2)
    torch.testing.assert_close(one_sd[0, 0] - one_sd[1, 0], torch.tensor(0.5))


def test_spatial_prior_places_queries_on_stripes_and_is_learned():
    torch.manual_seed(0)
    head = _head(image_spatial_prior='gaussian', num_layers=1).eval()
    # Identical tokens: only the prior tells the cells apart, so query k's
    # attention peaks on the k-th of 3 horizontal stripes of a 6x2 grid.
    tokens = torch.randn(1, 1, 48).expand(2, 12, 48)
    attn = head(tokens, torch.randn(2, 48), modality='image', hw=(6, 2))['attn']
    rows = attn[0].view(3, 6, 2).sum(-1)  # (K, rows)
    assert all(rows[k, 2 * k : 2 * k + 2].sum() > 0.5 for k in range(3))
    centres, scales = head.spatial_prior()
    torch.testing.assert_close(centres[:, 0], torch.tensor([1 / 6, 1 / 2, 5 / 6]))
    assert (scales > 0).all()
    # The centres and widths are parameters that the loss moves; the
    # starting stripes are derived from K and not saved.
    head.train()
    out = head(torch.randn(2, 12, 48), torch.randn(2, 48), modality='image', hw=(6, 2))
    (out['attn'][:, :, :6].sum()).backward()
    assert head.prior_centre_offsets.grad.abs().sum() > 0
    assert head.prior_log_scale_offsets.grad.abs().sum() > 0
    assert not any('init' in key for key in head.state_dict())
    with pytest.raises(ValueError, match='needs the token grid'):
        head(tokens, torch.randn(2, 48), modality='image')
    # Captions have no grid: their attention ignores the prior.
    text = _text()
    torch.manual_seed(1)
    a = _head(image_spatial_prior='gaussian')
    torch.manual_seed(1)
    b = _head()
    b.load_state_dict(
        {k: v for k, v in a.state_dict().items() if 'prior' not in k}, strict=True
    )
    torch.testing.assert_close(
        a(*text[:2], text[2], modality='text')['attn'],
        b(*text[:2], text[2], modality='text')['attn'],
    )
    narrow = _head(image_spatial_prior='gaussian', image_prior_scales=(0.1, 0.15))
    torch.testing.assert_close(
        narrow.spatial_prior()[1], torch.tensor([[0.1, 0.15]]).expand(3, 2)
    )
    # One (y, x) pair per query: the middle query wide, the others narrow.
    shaped = ((0.1, 0.15), (0.1, 0.4), (0.2, 0.15))
    torch.testing.assert_close(
        _head(
            image_spatial_prior='gaussian', image_prior_scales=shaped
        ).spatial_prior()[1],
        torch.tensor(shaped),
    )
    for bad in ((0.1, 0.15, 0.2), ((0.1, 0.15), (0.1, 0.4)), ('a', 'b')):
        with pytest.raises(ValueError, match='one such pair per part query'):
            _head(image_spatial_prior='gaussian', image_prior_scales=bad)
    # Centres set per query: the last one lower than its stripe.
    placed = ((1 / 6, 0.5), (0.5, 0.5), (0.9, 0.5))
    torch.testing.assert_close(
        _head(
            image_spatial_prior='gaussian', image_prior_centres=placed
        ).spatial_prior()[0],
        torch.tensor(placed),
    )
    for bad in (
        (0.5, 0.5),
        ((0.1, 0.5), (0.5, 0.5)),
        ((0.1, 0.5),) * 2 + ((1.2, 0.5),),
    ):
        with pytest.raises(ValueError, match='image_prior_centres must be one'):
            _head(image_spatial_prior='gaussian', image_prior_centres=bad)
    pinned = _head(image_spatial_prior='gaussian', image_prior_learn_centres=False)
    assert not pinned.prior_centre_offsets.requires_grad
    assert pinned.prior_log_scale_offsets.requires_grad
    with pytest.raises(ValueError, match='image_prior_scales must be two positive'):
        _head(image_spatial_prior='gaussian', image_prior_scales=(0.1, 0.0))
    with pytest.raises(ValueError, match='image_spatial_prior must be one of'):
        _head(image_spatial_prior='stripes')
    with pytest.raises(ValueError, match='built without image_spatial_prior'):
        _head().spatial_prior()


def test_prior_attention_is_the_attention_of_equal_content():
    torch.manual_seed(0)
    head = _head(image_spatial_prior='gaussian', num_layers=1).eval()
    with torch.no_grad():
        head.prior_log_scale_offsets.normal_(0, 0.3)
    # Identical tokens give every cell the same content logit, so the
    # decoder's attention is the prior's softmax, cell for cell.
    tokens = torch.randn(1, 1, 48).expand(2, 12, 48)
    attn = head(tokens, torch.randn(2, 48), modality='image', hw=(6, 2))['attn']
    prior = head.prior_attention((6, 2))
    assert prior.shape == (3, 12)
    torch.testing.assert_close(attn[0], prior.detach())
    torch.testing.assert_close(attn[1], prior.detach())
    torch.testing.assert_close(prior.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match='built without image_spatial_prior'):
        _head().prior_attention((6, 2))


def test_logit_cap_bounds_content_so_a_bias_keeps_its_weight():
    torch.manual_seed(0)
    capped = PartCrossAttention(16, 2, logit_cap=1.0)
    plain = PartCrossAttention(16, 2)
    plain.load_state_dict(capped.state_dict())
    query, tokens = 50 * torch.randn(2, 3, 16), 50 * torch.randn(2, 8, 16)
    # Content alone: capped logits span at most 2 nats per head, so no token
    # gets more than e^2 times another's weight in any head's map.
    _, maps = capped(query, tokens)
    assert (maps.max(-1).values / maps.min(-1).values).max() <= torch.e**2 + 1e-4
    _, loose = plain(query, tokens)
    assert loose.max() > 0.9  # without the cap one token takes nearly all
    # A bias of 10 nats on token 0 then decides where every query looks.
    bias = torch.zeros(3, 8)
    bias[:, 0] = 10.0
    _, biased = capped(query, tokens, bias=bias)
    assert (biased[..., 0] > 0.99).all()
    with pytest.raises(ValueError, match='logit_cap must be positive'):
        PartCrossAttention(16, 2, logit_cap=0.0)
    head = _head(attn_logit_cap=2.0)
    assert all(layer.cross_attn.logit_cap == 2.0 for layer in head.decoder)
