# The reference CLIP recipe (ours): CLIP ViT-B/16 at 384x128 + the CLIP text transformer,
# K = 6 shared part queries decoded by one 2-layer decoder for both
# modalities, coarse + part embeddings, SDM + ID + commonality-margin ranking.
#
# Weights: convert a local OpenAI-CLIP ViT-B/16 (.pt) or transformers CLIP
# folder once with
#   python tools/model_converters/clip_to_tbps.py SRC data/pretrained/clip-vit-b16
# which writes `clip_tbps.pth` (image encoder in MMPretrain layout + CLIP's
# visual / text projections as the head's coarse projections) and a
# `text_encoder/` transformers folder with CLIP's tokenizer (docs/method.md,
# "Weights"). The 14x14 position embeddings of the 224 model are
# interpolated to the 24x8 grid of 384x128 by MMPretrain when they load.
#
# The ID loss's num_classes (training identities) is the dataset's: the
# top-level config takes it from the dataset config, with
# model = dict(losses=dict(id=dict(num_classes={{_base_.num_classes}}))).
clip_dir = 'data/pretrained/clip-vit-b16'
clip_weights = clip_dir + '/clip_tbps.pth'
num_parts = 6
img_size = (384, 128)
embed_dims = 512

model = dict(
    type='TBPSRetriever',
    # CLIP's RGB mean / std (the preprocessor's defaults).
    data_preprocessor=dict(type='TBPSDataPreprocessor'),
    image_encoder=dict(
        type='VisionTransformer',
        arch='base',  # 768-d, 12 layers, 12 heads, 3072 FFN: CLIP ViT-B
        img_size=img_size,
        patch_size=16,
        pre_norm=True,  # CLIP's ln_pre; also drops the patch conv bias
        final_norm=True,  # CLIP's ln_post, applied to every token
        out_type='raw',  # CLS + patch tokens for the part decoder
        norm_cfg=dict(type='LN', eps=1e-5),
        layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')),
        init_cfg=dict(
            type='Pretrained', checkpoint=clip_weights, prefix='image_encoder.'
        ),
    ),
    text_encoder=dict(type='CLIPTextEncoder', pretrained=clip_dir + '/text_encoder'),
    head=dict(
        type='PartQueryDecoderHead',
        image_in_channels=768,
        text_in_channels=512,
        embed_dims=embed_dims,
        num_parts=num_parts,
        decoder_dims=512,
        num_layers=2,
        num_heads=8,
        attention='cross',
        coarse_bias=False,  # CLIP's projections have no bias
        init_cfg=dict(type='Pretrained', checkpoint=clip_weights, prefix='head.'),
    ),
    # gather=True: with N processes, SDM and CMR see the global batch (docs/method.md).
    losses=dict(
        sdm=dict(type='SDMLoss', temperature=0.02, loss_weight=1.0, gather=True),
        id=dict(type='IDLoss', in_channels=embed_dims, loss_weight=1.0),
        cmr=dict(
            type='CommonalityMarginRankingLoss',
            margin_max=0.3,
            margin_min=0.05,
            margin_mode='commonality',
            commonality='pair',
            negatives='all',
            loss_weight=1.0,
            gather=True,
        ),
    ),
    # s = s_coarse + fusion_weight * mean_k s_k at test time.
    fusion_weight=1.0,
)
