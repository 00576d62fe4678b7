# The quick-start model (configs/tbps_synth.py) trained on images turned to
# grayscale with probability 0.25 (MMCV's RandomGrayscale, BGR luma weights,
# three channels kept), the captions unchanged: on a gray image only shapes and
# lightness can match a caption's words, a label-free push towards part
# embeddings that carry shape (sleeves, garment types) and not only colour.
# Evaluation is on colour images, as ever.
_base_ = ['../tbps_synth.py']

grayscale_prob = 0.25
# (H, W): the quick start's (configs/_base_/datasets/synthpedes.py)
img_scale = (128, 48)
train_pipeline = [
    dict(
        type='ImagePipeline',
        transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(img_scale[1], img_scale[0])),  # (W, H)
            dict(
                type='RandomGrayscale',
                prob=grayscale_prob,
                keep_channels=True,
                channel_weights=(0.114, 0.587, 0.299),  # B, G, R
            ),
        ],
    ),
    dict(type='NormalizeCaption'),
    dict(
        type='TokenizeCaption',
        tokenizer={{_base_.tokenizer}},
        max_length={{_base_.max_length}},
    ),
    dict(type='PackTBPSInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
