# ICFG-PEDES (Ding et al., 2021) as published: imgs/ + ICFG-PEDES.json.
# Folder layout and preparation: docs/datasets.md.
# Edit data_root (or override it per loader with --cfg-options); the pipeline
# is the field's standard recipe, in real_pedes_384x128.py.
_base_ = './real_pedes_384x128.py'

data_root = 'data/icfg_pedes'
dataset_type = 'ICFGPEDES'
num_classes = 3102  # training identities (the ID loss's classes)
# ICFG-PEDES has no val split (it is published with train and test only), so
# validation runs on 'test', as the field does: the checkpoint kept as "best"
# is then selected on the test split. Say so when you report numbers.

# Pipelines and loader settings come from the base; these name the data.
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, split='test')
)
test_dataloader = val_dataloader
