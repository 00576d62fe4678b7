# The quick start (configs/tbps_synth.py) with a small ViT image encoder in
# place of the slim ResNet: 192-d, 4 layers, 3 heads, patch 16, i.e. an 8x3
# grid of patch tokens at 128x48 for the part queries (with the same sine
# position code and stripe priors), pooled by their mean
# (not CLS), which keeps the coarse embeddings from collapsing early in
# training from scratch. Data, schedule, text encoder, head and losses are the
# quick start's. Kept to show, and to rerun, why the quick start uses the CNN:
# from scratch at this budget the ViT learns several times more slowly
# (docs/benchmarks_accuracy.md, "Choosing the quick-start model").
_base_ = ['../tbps_synth.py']

model = dict(
    image_encoder=dict(
        _delete_=True,
        type='VisionTransformer',
        arch=dict(embed_dims=192, num_layers=4, num_heads=3, feedforward_channels=768),
        img_size={{_base_.img_size}},
        patch_size=16,
        pre_norm=True,
        final_norm=True,
        out_type='raw',
        drop_path_rate=0.1,
    ),
    image_pooling='mean',
    image_token_maps='last',
    channels_last=False,
    head=dict(image_in_channels=192, image_token_channels=None),
)
