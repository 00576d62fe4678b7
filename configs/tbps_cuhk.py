# Recipe: partq_vit-base-p16_clip-pre_1xb64-amp-cos-60e_cuhk-pedes-384x128
#
# The reference CLIP recipe (ours) on CUHK-PEDES: CLIP ViT-B/16 at 384x128,
# CLIP text transformer, K = 6 shared part queries, SDM + ID +
# commonality-margin ranking, IRRA's schedule (Adam 1e-5, x5 for new modules,
# 60 epochs, 5 warm-up, cosine, AMP). Needs the dataset (docs/datasets.md) and
# CLIP weights converted with tools/model_converters/clip_to_tbps.py.
# Validates on CUHK-PEDES val; the field reports (and selects on) test:
# `tools/test.py configs/tbps_cuhk.py CHECKPOINT`.
_base_ = [
    '_base_/models/partq_vit-b16_clip.py',
    '_base_/datasets/cuhk_pedes.py',
    '_base_/schedules/irra_60e.py',
    '_base_/default_runtime.py',
]

# The ID loss has one class per training identity of the dataset.
model = dict(losses=dict(id=dict(num_classes={{_base_.num_classes}})))
