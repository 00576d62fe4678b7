# The field's pipeline for the real TBPS datasets (384x128, flip, pad + crop,
# erasing; CLIP tokenizer), shared by cuhk_pedes.py, icfg_pedes.py and
# rstpreid.py, which add the dataset type and data_root to each loader.
# Loaders and evaluators: tbps_loaders.py.
_base_ = './tbps_loaders.py'

# The text encoder's tokenizer: a local folder. The default is the text-side
# folder that tools/model_converters/clip_to_tbps.py writes next to the
# weights the reference CLIP model config loads (data/pretrained/clip-vit-b16).
tokenizer_dir = 'data/pretrained/clip-vit-b16/text_encoder'

img_scale = (384, 128)  # (H, W)
max_length = 77  # CLIP's context length
# Erased patches are filled with CLIP's mean colour, in BGR order like the
# loaded images, so that they become ~0 after normalisation.
erase_fill = (104, 117, 123)

train_pipeline = [
    dict(
        type='ImagePipeline',
        transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(img_scale[1], img_scale[0])),  # (W, H)
            dict(type='RandomFlip', prob=0.5, direction='horizontal'),
            dict(type='RandomCrop', crop_size=img_scale, padding=10),
            dict(
                type='RandomErasing',
                erase_prob=0.5,
                mode='const',
                fill_color=erase_fill,
            ),
        ],
    ),
    dict(type='NormalizeCaption', unescape_html=True),  # as OpenAI CLIP cleans text
    dict(type='TokenizeCaption', tokenizer=tokenizer_dir, max_length=max_length),
    dict(type='PackTBPSInputs'),
]
test_pipeline = [
    dict(
        type='ImagePipeline',
        transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(img_scale[1], img_scale[0])),
        ],
    ),
    dict(type='NormalizeCaption', unescape_html=True),  # as OpenAI CLIP cleans text
    dict(type='TokenizeCaption', tokenizer=tokenizer_dir, max_length=max_length),
    dict(type='PackTBPSInputs'),
]

train_dataloader = dict(num_workers=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(num_workers=4, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
