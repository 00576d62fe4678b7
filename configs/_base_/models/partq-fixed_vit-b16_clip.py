# Ablation: the reference CLIP model with a FIXED part margin (margin_max for every
# part and negative), i.e. a plain part-level ranking loss without commonality.
_base_ = './partq_vit-b16_clip.py'

model = dict(losses=dict(cmr=dict(margin_mode='fixed')))
