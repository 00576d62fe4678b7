# Recipe: partq_vit-base-p16_clip-pre_1xb64-amp-cos-60e_icfg-pedes-384x128
#
# The reference CLIP recipe (ours) on ICFG-PEDES (see configs/tbps_cuhk.py for the model
# and schedule). ICFG-PEDES has no val split: its val loader evaluates on the
# test split, as the field does; checkpoints selected by it are selected on test.
_base_ = [
    '_base_/models/partq_vit-b16_clip.py',
    '_base_/datasets/icfg_pedes.py',
    '_base_/schedules/irra_60e.py',
    '_base_/default_runtime.py',
]

# The ID loss has one class per training identity of the dataset.
model = dict(losses=dict(id=dict(num_classes={{_base_.num_classes}})))
