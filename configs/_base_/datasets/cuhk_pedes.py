# CUHK-PEDES (Li et al., CVPR 2017) as published: imgs/ + reid_raw.json.
# Folder layout and preparation: docs/datasets.md.
# Edit data_root (or override it per loader with --cfg-options); the pipeline
# is the field's standard recipe, in real_pedes_384x128.py.
_base_ = './real_pedes_384x128.py'

data_root = 'data/cuhk_pedes'
dataset_type = 'CUHKPEDES'
num_classes = 11003  # training identities (the ID loss's classes)

# Splits, pipelines and loader settings come from the base; these name the data.
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
