# Ablation row "global-only" (issue 7): the quick-start model (configs/tbps_synth.py)
# without part queries. K = 0; no commonality-margin ranking, part diversity
# or fused SDM loss (without parts the fused embedding is the coarse one, so it
# would only double the SDM weight); the test score is the coarse similarity
# only (fusion_weight = 0): SDM + ID on the coarse embeddings, i.e. the
# IRRA-like baseline the part branch must beat.
_base_ = ['../tbps_synth.py']

model = dict(
    head=dict(num_parts=0),
    losses=dict(cmr=None, div=None, sdm_fused=None),
    fusion_weight=0.0,
)
