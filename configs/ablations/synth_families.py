# The commonality-margin experiment on SynthPedes families
# (docs/benchmarks_accuracy.md, "Families"; benchmarks/families.py).
#
# SynthPedes with families=4: every identity has 3 family members that share
# all but two of its 5 body parts (docs/synthpedes.md, "Families"), and the
# FamilyBatchSampler fills every batch with whole families (8 families x 4
# people x 2 pairs), so an anchor's hardest negatives are people who share
# most of its parts: the situation the commonality margin is for.
# The metric adds the within-family numbers (t2i-family/R1: each query ranks
# only its family's 16 gallery images, chance 25 %).
#
# Small enough for about one CPU-minute per run (3 epochs, 150 steps): 520
# identities (400 / 40 / 80 in train / val / test: 100 / 10 / 20 families),
# 64x24 crops (an 8x3 token grid) and a 64-d text encoder; the part decoder
# is the quick start's: K = 4 queries on stripe priors, which on SynthPedes
# settle on the head, upper body, lower body and feet
# (docs/benchmarks_accuracy.md, "Part localisation"). The oracle commonality
# (commonality='oracle', from attributes.json) gives query k the sharing of
# that body part: oracle_parts=(0, 1, 2, 3) of the five coded parts (head,
# upper, lower, feet, carried); the carried item has no query. Every arm of
# the experiment uses this config; the arms differ in model.losses.cmr only.
_base_ = ['../tbps_synth.py']

data_root = 'data/synthpedes_families4_n520_64x24_seed0'
img_scale = (64, 24)  # (H, W)
tokenizer = data_root + '/tokenizer'
max_length = 64
family_size = 4
num_ids = 520
num_classes = 400  # training identities

pipeline = [
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
families_dataset = dict(
    type='SynthPedes',
    data_root=data_root,
    size='small',
    seed=0,
    num_ids=num_ids,
    image_size=img_scale,
    families=family_size,
    # Every arm loads the codes; only the oracle arm's loss reads them.
    with_part_codes=True,
    pipeline=pipeline,
    _delete_=True,
)
loader = dict(batch_size=64, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    loader,
    sampler=dict(
        type='FamilyBatchSampler',
        batch_size=64,
        pairs_per_id=2,
        _delete_=True,
    ),
    dataset=dict(families_dataset, split='train'),
)
val_dataloader = dict(loader, dataset=dict(families_dataset, split='val'))
test_dataloader = dict(loader, dataset=dict(families_dataset, split='test'))
val_evaluator = dict(type='TBPSRetrievalMetric', within_family=True)
test_evaluator = val_evaluator

model = dict(
    text_encoder=dict(
        config=dict(hidden_size=64, intermediate_size=256, num_attention_heads=2)
    ),
    head=dict(text_in_channels=64),
    losses=dict(
        id=dict(num_classes=num_classes),
        # Read by the oracle arm only.
        cmr=dict(log_kept_margin=True, oracle_parts=(0, 1, 2, 3)),
    ),
)
