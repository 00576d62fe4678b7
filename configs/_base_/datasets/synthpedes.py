# SynthPedes: tbps_mm's procedural pedestrian dataset (docs/synthpedes.md), in
# the CUHK-PEDES layout. The SynthPedes dataset class generates it into
# data_root on first use (size and seed below) and refuses a folder that holds
# anything else. Edit data_root (and size / seed with it) to use another set.
# Loaders and evaluators: tbps_loaders.py.
_base_ = './tbps_loaders.py'

data_root = 'data/synthpedes_small'
synthpedes_size = 'small'
synthpedes_seed = 0
# The word-level tokenizer is written with the data.
tokenizer = data_root + '/tokenizer'

dataset_type = 'SynthPedes'
# Training identities (the ID loss's classes) of the 'small' size.
num_classes = 1000
img_scale = (128, 48)  # (H, W): the generator's crop size, CPU friendly
max_length = 64  # SynthPedes captions are at most ~56 tokens

test_pipeline = [
    dict(
        type='ImagePipeline',
        transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(img_scale[1], img_scale[0])),  # (W, H)
        ],
    ),
    dict(type='NormalizeCaption'),
    dict(type='TokenizeCaption', tokenizer=tokenizer, max_length=max_length),
    dict(type='PackTBPSInputs'),
]
# Training uses the evaluation pipeline, without augmentation: at the
# quick-start budget (9 epochs from scratch) the model underfits, and random
# crops, erasing and caption token dropout only slowed it down
# (docs/benchmarks_accuracy.md, "Choosing the quick-start model").
# No horizontal flip in any case: SynthPedes captions may say which way the
# person walks ("walking to the left"), which a flip would falsify. The real
# datasets' pipeline (real_pedes_384x128.py) keeps its augmentation.
synthpedes_dataset = dict(
    type=dataset_type,
    data_root=data_root,
    size=synthpedes_size,
    seed=synthpedes_seed,
    pipeline=test_pipeline,
)
# Every split reads the same settings; tbps_loaders.py sets the split.
train_dataloader = dict(dataset=synthpedes_dataset)
val_dataloader = train_dataloader
test_dataloader = train_dataloader
