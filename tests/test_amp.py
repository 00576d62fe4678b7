"""The reference CLIP model's training step under autocast (what ``--amp`` runs).

MMEngine's ``AmpOptimWrapper`` needs a GPU, so the model itself is run under
CPU autocast in float16 and bfloat16: the layout of
``configs/_base_/models/partq_vit-b16_clip.py`` (CLIP ViT with QuickGELU and
pre-norm, CLIP text transformer, cross-attention part decoder, SDM + ID +
commonality-margin losses) at reduced depth and width, random weights.
"""

import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from model_fixtures import IMG_HW, pair_batch

from tbps_mm.registry import MODELS

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Largest relative difference of any loss term to float32. float16 keeps 11
#: significant bits, bfloat16 8; the losses themselves run in float32, so
#: what remains is the encoders' rounding.
TOLERANCE = {torch.float16: 0.002, torch.bfloat16: 0.02}


def reference_model():
    """The reference config's model, 2 layers deep and narrow, random init."""
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', '_base_', 'models', 'partq_vit-b16_clip.py')
    )
    model = copy.deepcopy(cfg.model.to_dict())
    image = model['image_encoder']
    image.pop('init_cfg')
    image.update(
        arch=dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=128),
        img_size=IMG_HW,
    )
    model['text_encoder'] = dict(
        type='CLIPTextEncoder',
        config=dict(
            vocab_size=50,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=2,
            eos_token_id=3,  # model_fixtures.captions: [CLS]=2 ... [SEP]=3
        ),
    )
    head = model['head']
    head.pop('init_cfg')
    head.update(
        image_in_channels=64,
        text_in_channels=32,
        embed_dims=32,
        num_parts=3,
        decoder_dims=32,
        num_heads=4,
    )
    model['losses']['id'].update(in_channels=32, num_classes=5)
    torch.manual_seed(0)
    return MODELS.build(model).train()


def training_step(model, dtype=None):
    """Forward loss + backward; returns the loss terms and the gradients."""
    model.zero_grad()
    inputs, samples = pair_batch(8, seed=3)
    with torch.autocast('cpu', dtype=dtype or torch.float32, enabled=dtype is not None):
        losses = model(inputs, samples, mode='loss')
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    grads = {
        n: p.grad.detach().clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    return {
        k: float(v.detach()) for k, v in losses.items() if k.startswith('loss')
    }, grads


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_reference_model_training_step_under_autocast(dtype):
    model = reference_model()
    ref_losses, ref_grads = training_step(model)
    assert {'loss_sdm', 'loss_id', 'loss_cmr'} <= set(ref_losses)
    losses, grads = training_step(model, dtype)
    assert losses.keys() == ref_losses.keys()
    for key, value in losses.items():
        assert torch.isfinite(torch.tensor(value)), (key, value)
        assert value == pytest.approx(ref_losses[key], rel=TOLERANCE[dtype], abs=1e-3)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), name
    # The step as a whole points the same way as in float32.
    flat = torch.cat([g.float().flatten() for g in grads.values()])
    ref = torch.cat([g.flatten() for g in ref_grads.values()])
    assert torch.nn.functional.cosine_similarity(flat, ref, dim=0) > 0.99


def test_sdm_loss_is_finite_for_half_inputs():
    # A batch where every text has exactly one match: most target entries are
    # 0, whose log would be -inf if the epsilon were added in float16.
    loss = MODELS.build(dict(type='SDMLoss', temperature=0.02))
    image = torch.randn(6, 16).half()
    text = torch.randn(6, 16).half()
    value = loss(image, text, torch.arange(6))
    assert torch.isfinite(value) and value.dtype == torch.float32
