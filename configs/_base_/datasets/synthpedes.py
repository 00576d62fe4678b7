# SynthPedes: tbps_mm's procedural pedestrian dataset (docs/synthpedes.md), in
# the CUHK-PEDES layout. The SynthPedes dataset class generates it into
# data_root on first use (size and seed below) and refuses a folder that holds
# anything else. Edit data_root (and size / seed with it) to use another set.
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
batch_size = 64
num_workers = 2

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
train_pipeline = test_pipeline

synthpedes_dataset = dict(
    type=dataset_type, data_root=data_root, size=synthpedes_size, seed=synthpedes_seed
)
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(synthpedes_dataset, split='train', pipeline=train_pipeline),
)
# Evaluation loaders visit the gallery images, then the caption queries.
val_dataloader = dict(
    batch_size=batch_size,
    num_workers=num_workers,
    persistent_workers=num_workers > 0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(synthpedes_dataset, split='val', pipeline=test_pipeline),
)
test_dataloader = dict(
    val_dataloader, dataset=dict(val_dataloader['dataset'], split='test')
)
val_evaluator = dict(type='TBPSRetrievalMetric')
test_evaluator = val_evaluator
