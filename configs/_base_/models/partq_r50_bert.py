# The backbones secondary summaries of the paper name: ImageNet ResNet-50 for images
# and BERT-base for text, K = 6 shared part queries, SDM + ID + CMR.
#
# Weights (local files, nothing is downloaded):
#   resnet_weights: an MMPretrain ImageNet ResNet-50 checkpoint (keys under
#                   'backbone.'), e.g. resnet50_8xb32_in1k_*.pth;
#   bert_dir:       a transformers BERT folder (config.json + weights); the
#                   dataset config's tokenizer must be that folder's tokenizer.
# ResNet-50's last stage gives a 12x4 map at 384x128: its 48 cells are the
# image tokens and their mean the pooled feature. The ID loss's num_classes
# is the dataset's (see partq_vit-b16_clip.py).
resnet_weights = 'data/pretrained/resnet50_in1k.pth'
bert_dir = 'data/pretrained/bert-base-uncased'
num_parts = 6
embed_dims = 512

model = dict(
    type='TBPSRetriever',
    # ImageNet RGB mean / std (0-255 scale).
    data_preprocessor=dict(
        type='TBPSDataPreprocessor',
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
    ),
    image_encoder=dict(
        type='mmpretrain.ResNet',
        depth=50,
        out_indices=(3,),
        init_cfg=dict(type='Pretrained', checkpoint=resnet_weights, prefix='backbone.'),
    ),
    text_encoder=dict(type='BertTextEncoder', pretrained=bert_dir),
    head=dict(
        type='PartQueryDecoderHead',
        image_in_channels=2048,
        text_in_channels=768,
        embed_dims=embed_dims,
        num_parts=num_parts,
        decoder_dims=512,
        num_layers=2,
        num_heads=8,
        attention='cross',
        coarse_bias=True,
    ),
    # gather=True: with N processes, SDM and CMR see the global batch (docs/method.md).
    losses=dict(
        sdm=dict(type='SDMLoss', temperature=0.02, gather=True),
        id=dict(type='IDLoss', in_channels=embed_dims),
        cmr=dict(type='CommonalityMarginRankingLoss', gather=True),
    ),
    fusion_weight=1.0,
)
