"""The model and schedule base configs: they load, compose with the dataset
bases, build, and say what they claim (variants, lr multipliers)."""

import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.structures import DataSample

from tbps_mm.datasets.synthpedes.tokenizer import synthpedes_vocab
from tbps_mm.registry import MODELS

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_')


def _cfg(*parts) -> Config:
    return Config.fromfile(osp.join(CONFIGS, *parts))


def test_variants_differ_only_where_they_say():
    paper = _cfg('models', 'partq_vit-b16_clip.py').model
    assert paper.head.num_parts == 6 and set(paper.losses) == {'sdm', 'id', 'cmr'}
    assert paper.image_encoder.img_size == (384, 128)
    assert paper.image_encoder.layer_cfgs.act_cfg.type == 'mmpretrain.QuickGELU'
    glob = _cfg('models', 'global_vit-b16_clip.py').model
    assert glob.head.num_parts == 0 and glob.losses.cmr is None
    fixed = _cfg('models', 'partq-fixed_vit-b16_clip.py').model
    assert fixed.losses.cmr.margin_mode == 'fixed'
    assert fixed.losses.cmr.margin_max == paper.losses.cmr.margin_max
    r50 = _cfg('models', 'partq_r50_bert.py').model
    assert (
        r50.image_encoder.type == 'mmpretrain.ResNet'
        and r50.head.image_in_channels == 2048
    )
    # The real-data models score SDM and L_CMR over the global batch when
    # trained on several processes (docs/method.md, section 3).
    for model in (paper, fixed, r50):
        assert model.losses.sdm.gather and model.losses.cmr.gather
    assert glob.losses.sdm.gather


def test_paper_config_without_weights_names_the_missing_folder(tmp_path):
    cfg = _cfg('models', 'partq_vit-b16_clip.py')
    model = cfg.model
    model.text_encoder.pretrained = str(tmp_path / 'clip' / 'text_encoder')
    with pytest.raises(FileNotFoundError, match='clip/text_encoder" does not exist'):
        MODELS.build(model)


SYNTH_LOSSES = {
    'loss_sdm',
    'loss_id',
    'loss_cmr',
    'loss_sdm_fused',
}


@pytest.mark.parametrize(
    'config', ['tbps_synth.py', osp.join('ablations', 'synth_vit.py')]
)
def test_synth_quick_start_composition_builds_and_trains(config):
    # The quick start and its ViT variant: the model base, the dataset base
    # (which alone sets num_classes), schedule and runtime compose and train.
    cfg = Config.fromfile(osp.join(osp.dirname(CONFIGS), config))
    dataset = Config.fromfile(osp.join(CONFIGS, 'datasets', 'synthpedes.py'))
    assert cfg.model.losses.id.num_classes == dataset.num_classes
    assert len(synthpedes_vocab()) <= cfg.text_vocab_size
    assert cfg.text_max_length >= cfg.max_length
    assert tuple(cfg.img_size) == tuple(cfg.img_scale)
    init_default_scope('tbps_mm')
    model = MODELS.build(cfg.model)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    B, L = 4, cfg.max_length
    ids = torch.randint(5, len(synthpedes_vocab()), (B, L))
    inputs = dict(
        images=torch.randn(B, 3, *cfg.img_size),
        image_index=torch.arange(B),
        text_ids=ids,
        text_mask=torch.ones(B, L, dtype=torch.long),
        text_index=torch.arange(B),
    )
    samples = [DataSample().set_gt_label(i) for i in range(B)]
    losses = model(inputs, samples, mode='loss')
    optim.update_params(sum(losses.values()))
    assert set(losses) == SYNTH_LOSSES
    # The CNN gives the part queries its 16x6 grid of stage-2 cells, the ViT
    # its 8x3 patches; on either, query k's stripe prior is centred on the
    # k-th of K horizontal stripes.
    with torch.no_grad():
        out = model.eval().encode_image(inputs['images'])
    grid = (16, 6) if 'vit' not in config else (8, 3)
    assert tuple(out['attn_hw']) == grid
    assert out['attn'].shape == (B, cfg.num_parts, grid[0] * grid[1])
    centres, _ = model.head.spatial_prior()
    K = cfg.num_parts
    torch.testing.assert_close(centres[:, 0], (torch.arange(K) + 0.5) / K)


def test_irra_schedule_multiplies_the_lr_of_new_modules():
    sched = _cfg('schedules', 'irra_60e.py')
    assert sched.optim_wrapper.type == 'AmpOptimWrapper'
    assert [s.type for s in sched.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    cfg = _cfg('models', 'partq_vit-b16_clip.py').model
    # A small stand-in with the paper config's module names (no weights).
    cfg.image_encoder = dict(
        type='VisionTransformer',
        arch=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
        img_size=(32, 16),
        patch_size=16,
        out_type='raw',
    )
    cfg.text_encoder = dict(
        type='CLIPTextEncoder',
        config=dict(
            vocab_size=20,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            bos_token_id=18,
            eos_token_id=19,
        ),
    )
    cfg.head.update(
        image_in_channels=32, text_in_channels=16, decoder_dims=16, num_heads=2
    )
    cfg.losses.id.num_classes = 3
    model = MODELS.build(cfg)
    # AmpOptimWrapper needs a GPU; the parameter groups are the same without.
    wrapper_cfg = dict(sched.optim_wrapper, type='OptimWrapper')
    wrapper_cfg.pop('loss_scale')
    optim = build_optim_wrapper(model, wrapper_cfg)
    lr = {}
    for group in optim.optimizer.param_groups:
        for param in group['params']:
            lr[id(param)] = group['lr']
    named = dict(model.named_parameters())
    base = 1e-5
    assert lr[id(named['head.part_queries'])] == pytest.approx(5 * base)
    assert lr[id(named['head.decoder.0.cross_attn.q_proj.weight'])] == pytest.approx(
        5 * base
    )
    assert lr[id(named['losses.id.classifier.weight'])] == pytest.approx(5 * base)
    # Pretrained CLIP parts keep the base lr (biases x2, as in IRRA).
    assert lr[id(named['head.image_coarse_proj.weight'])] == pytest.approx(base)
    assert lr[id(named['image_encoder.layers.0.attn.qkv.weight'])] == pytest.approx(
        base
    )
    assert lr[id(named['image_encoder.layers.0.attn.qkv.bias'])] == pytest.approx(
        2 * base
    )


ABLATIONS = osp.join(osp.dirname(CONFIGS), 'ablations')


@pytest.mark.parametrize(
    'name', sorted(f for f in os.listdir(ABLATIONS) if f.endswith('.py'))
)
def test_every_ablation_config_builds_its_model(name):
    cfg = Config.fromfile(osp.join(ABLATIONS, name))
    init_default_scope('tbps_mm')
    model = MODELS.build(cfg.model)
    # A loss that needs part outputs on a K = 0 head fails at build time.
    assert model.losses and 'sdm' in model.losses


@pytest.mark.parametrize(
    'top, val_split, num_classes',
    [
        ('tbps_synth.py', 'val', 1000),
        ('tbps_cuhk.py', 'val', 11003),
        ('tbps_icfg.py', 'test', 3102),  # published without a val split
        ('tbps_rstp.py', 'val', 3701),
    ],
)
def test_top_level_configs_take_splits_and_num_classes_from_the_dataset(
    top, val_split, num_classes
):
    cfg = Config.fromfile(osp.join(osp.dirname(CONFIGS), top))
    splits = [cfg[f'{s}_dataloader'].dataset.split for s in ('train', 'val', 'test')]
    assert splits == ['train', val_split, 'test']
    assert cfg.val_dataloader.dataset.pipeline == cfg.test_dataloader.dataset.pipeline
    assert cfg.test_dataloader.dataset.type == cfg.train_dataloader.dataset.type
    assert cfg.test_evaluator == cfg.val_evaluator
    assert cfg.num_classes == num_classes  # the dataset config's
    assert cfg.model.losses.id.num_classes == num_classes
