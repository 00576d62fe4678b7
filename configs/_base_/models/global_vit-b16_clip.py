# Global-only baseline: the reference CLIP model without part queries (K = 0):
# coarse CLIP embeddings trained with SDM + ID, i.e. an IRRA-like model
# without its implicit-relation (MLM) branch.
_base_ = './partq_vit-b16_clip.py'

model = dict(
    head=dict(num_parts=0),
    losses=dict(cmr=None),
    fusion_weight=0.0,
)
